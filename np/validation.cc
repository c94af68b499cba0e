// The API server's validation rules for Namespaces, Pods and NetworkPolicies, written from
// kubernetes/kubernetes:
//   pkg/apis/networking/validation/validation.go      ValidateNetworkPolicy{,Spec,Peer,Port},
//                                                     ValidateIPBlock
//   pkg/apis/core/validation/validation.go            ValidatePod (container ports,
//                                                     ValidatePodSpec's nodeName),
//                                                     validatePodIPs, ValidateNamespace
//   apimachinery pkg/api/validation/objectmeta.go     ValidateObjectMeta
//   apimachinery pkg/apis/meta/v1/validation          ValidateLabels, ValidateLabelSelector
//   apimachinery pkg/util/validation (+ .../content)  IsQualifiedName, IsValidLabelValue,
//                                                     IsDNS1123Label/Subdomain, IsValidPortName,
//                                                     IsValidPortNum
//   apimachinery pkg/api/validation/ip.go             IsValid{IP,CIDR}ForLegacyField,
//                                                     GetWarningsFor{IP,CIDR}
// Messages are rendered the way field.Error.ErrorBody() renders them ("Invalid value: 79:
// must be ...", "Required value", "Unsupported value: \"ICMP\": supported values: ..."), and
// field paths are spelled as field.Path spells them.
//
// Errors and warnings. A finding is an error when the API server refuses the object whatever
// it already stores. It is a warning when the API server still keeps such a value in objects
// it stored before it became strict ("ratcheting" validation), because np also reads
// snapshots of live clusters and must not refuse what a cluster can hold:
//   - IP and CIDR values in the legacy forms (KEP-4858, feature gate StrictIPCIDRValidation):
//     IPv4 octets or prefix lengths with leading zeros ("010.0.0.0/8", "10.0.0.0/08"),
//     IPv4-mapped IPv6 ("::ffff:10.0.0.0/104"), and CIDRs with bits set after the prefix
//     length ("10.0.0.1/8"). With the gate off the API server accepts them with exactly these
//     warnings; with it on it refuses them in new objects but keeps them in old ones. np
//     matches such a CIDR by its network ("10.0.0.1/8" means 10.0.0.0/8, as Go's ParseCIDR
//     reads it).
//   - Selector values that are not valid label values (checked since Kubernetes 1.28; older
//     objects keep them, see NetworkPolicyValidationOptions.AllowInvalidLabelValueInSelector).
//     Such a value can never equal a label's value, so its meaning is still exact.
// Beyond upstream, also as warnings: a policyTypes entry listed twice, a named container
// port defined in two containers of one pod, and a namespace label kubernetes.io/metadata.name
// whose value the API server would overwrite.
#include "np/validation.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "np/internal/text.h"
#include "np/types.h"
#include "re2/re2.h"

namespace np {
namespace {

using Severity = Diagnostic::Severity;
using Messages = std::vector<std::string>;

// ---------------------------------------------------------------------------------------------
// Values as Go's fmt renders them in field.Error.

// strconv.Quote (np/internal/text.h).
using internal::GoQuote;

// %#v of a []T whose elements are strings, e.g. []networking.PolicyType{"a", "b"}.
template <typename Container>
std::string GoStringSlice(absl::string_view type, const Container& values) {
  std::vector<std::string> quoted;
  for (const auto& v : values) quoted.push_back(GoQuote(v));
  return absl::StrCat("[]", type, "{", absl::StrJoin(quoted, ", "), "}");
}

// ---------------------------------------------------------------------------------------------
// Field paths, spelled as field.Path.String() spells them.

std::string Child(absl::string_view path, absl::string_view name) {
  return path.empty() ? std::string(name) : absl::StrCat(path, ".", name);
}
std::string Index(absl::string_view path, int i) { return absl::StrCat(path, "[", i, "]"); }

// ---------------------------------------------------------------------------------------------
// The findings about one object, built with upstream's field.Error constructors.

class Findings {
 public:
  Findings(absl::string_view kind, std::string object) : kind_(kind), object_(std::move(object)) {}

  // field.Invalid(path, value, detail); `value` is already rendered (GoQuote, number, ...).
  void Invalid(const std::string& field, absl::string_view value, absl::string_view detail,
               Severity severity = Severity::kError) {
    Add(severity, field,
        absl::StrCat("Invalid value: ", value, detail.empty() ? "" : ": ", detail));
  }
  // field.Required(path, detail)
  void Required(const std::string& field, absl::string_view detail = "") {
    Add(Severity::kError, field,
        absl::StrCat("Required value", detail.empty() ? "" : ": ", detail));
  }
  // field.Forbidden(path, detail)
  void Forbidden(const std::string& field, absl::string_view detail) {
    Add(Severity::kError, field, absl::StrCat("Forbidden: ", detail));
  }
  // field.NotSupported(path, value, supported): the list in the order the call site gives.
  void NotSupported(const std::string& field, absl::string_view value,
                    std::initializer_list<absl::string_view> supported) {
    std::vector<std::string> quoted;
    for (absl::string_view s : supported) quoted.push_back(GoQuote(s));
    Add(Severity::kError, field,
        absl::StrCat("Unsupported value: ", GoQuote(value),
                     ": supported values: ", absl::StrJoin(quoted, ", ")));
  }
  // field.Duplicate(path, value)
  void Duplicate(const std::string& field, absl::string_view value,
                 Severity severity = Severity::kError, absl::string_view detail = "") {
    Add(severity, field,
        absl::StrCat("Duplicate value: ", value, detail.empty() ? "" : ": ", detail));
  }
  // field.TooLong(path, "", max)
  void TooLong(const std::string& field, int max_bytes) {
    Add(Severity::kError, field,
        absl::StrCat("Too long: may not be more than ", max_bytes,
                     max_bytes == 1 ? " byte" : " bytes"));
  }
  // A warning in the API server's words (these carry no field.Error kind).
  void Warning(const std::string& field, std::string message) {
    Add(Severity::kWarning, field, std::move(message));
  }
  // A warning every command prints (Diagnostic::affects_verdicts).
  void VerdictWarning(const std::string& field, std::string message) {
    Add(Severity::kWarning, field, std::move(message));
    out_.back().affects_verdicts = true;
  }

  std::vector<Diagnostic> Take() { return std::move(out_); }

 private:
  void Add(Severity severity, const std::string& field, std::string message) {
    Diagnostic d;
    d.severity = severity;
    d.kind = kind_;
    d.object = object_;
    d.field = field;
    d.message = std::move(message);
    AppendDiagnostic(&out_, std::move(d));  // kind and object shared, the list bounded
  }

  SharedString kind_;
  SharedString object_;
  std::vector<Diagnostic> out_;
};

// ---------------------------------------------------------------------------------------------
// Syntax checks of pkg/util/validation; each returns upstream's messages (empty when valid).

constexpr absl::string_view kDns1035LabelFmt = "[a-z]([-a-z0-9]*[a-z0-9])?";
constexpr absl::string_view kDns1123LabelFmt = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
constexpr absl::string_view kDns1123SubdomainFmt =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
constexpr absl::string_view kLabelKeyFmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
constexpr absl::string_view kLabelValueFmt = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

constexpr int kDns1123LabelMaxLength = 63;
constexpr int kDns1123SubdomainMaxLength = 253;
constexpr int kLabelKeyMaxLength = 63;
constexpr int kLabelValueMaxLength = 63;
constexpr int kPortNameMaxLength = 15;
constexpr int kTotalAnnotationSizeLimitBytes = 256 * (1 << 10);

// Compiled once, never destroyed (RE2 objects are thread-safe for matching).
const RE2& Dns1123LabelRe() {
  static const RE2* re = new RE2(std::string(kDns1123LabelFmt));
  return *re;
}
const RE2& Dns1035LabelRe() {
  static const RE2* re = new RE2(std::string(kDns1035LabelFmt));
  return *re;
}
const RE2& Dns1123SubdomainRe() {
  static const RE2* re = new RE2(std::string(kDns1123SubdomainFmt));
  return *re;
}
const RE2& LabelKeyRe() {
  static const RE2* re = new RE2(std::string(kLabelKeyFmt));
  return *re;
}
const RE2& LabelValueRe() {
  static const RE2* re = new RE2(std::string(kLabelValueFmt));
  return *re;
}
const RE2& PortNameCharsetRe() {
  static const RE2* re = new RE2("[-a-z0-9]+");
  return *re;
}

// RE2 here takes re2::StringPiece, which Debian's Abseil does not convert from.
bool FullMatch(absl::string_view text, const RE2& re) {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

std::string MaxLenError(int length) {
  return absl::StrCat("must be no more than ", length, " characters");
}

// validation.RegexError: "msg (e.g. 'x',  or 'y', regex used for validation is 'fmt')".
std::string RegexError(absl::string_view msg, absl::string_view fmt,
                       std::initializer_list<absl::string_view> examples) {
  std::string out(msg);
  if (examples.size() == 0) {
    absl::StrAppend(&out, " (regex used for validation is '", fmt, "')");
    return out;
  }
  out += " (e.g. ";
  bool first = true;
  for (absl::string_view e : examples) {
    if (!first) out += " or ";
    first = false;
    absl::StrAppend(&out, "'", e, "', ");
  }
  absl::StrAppend(&out, "regex used for validation is '", fmt, "')");
  return out;
}

Messages IsDns1123Subdomain(absl::string_view value) {
  Messages errs;
  if (value.size() > kDns1123SubdomainMaxLength) {
    errs.push_back(MaxLenError(kDns1123SubdomainMaxLength));
  }
  if (!FullMatch(value, Dns1123SubdomainRe())) {
    errs.push_back(RegexError(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character",
        kDns1123SubdomainFmt, {"example.com"}));
  }
  return errs;
}

Messages IsDns1123Label(absl::string_view value) {
  Messages errs;
  if (value.size() > kDns1123LabelMaxLength) errs.push_back(MaxLenError(kDns1123LabelMaxLength));
  if (!FullMatch(value, Dns1123LabelRe())) {
    if (FullMatch(value, Dns1123SubdomainRe())) {
      errs.push_back("must not contain dots");
    } else {
      errs.push_back(RegexError(
          "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
          "'-', and must start and end with an alphanumeric character",
          kDns1123LabelFmt, {"my-name", "123-abc"}));
    }
  }
  return errs;
}

// IsDNS1035Label: Service names.
Messages IsDns1035Label(absl::string_view value) {
  Messages errs;
  if (value.size() > kDns1123LabelMaxLength) errs.push_back(MaxLenError(kDns1123LabelMaxLength));
  if (!FullMatch(value, Dns1035LabelRe())) {
    errs.push_back(RegexError(
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
        "with an alphabetic character, and end with an alphanumeric character",
        kDns1035LabelFmt, {"my-name", "abc-123"}));
  }
  return errs;
}

constexpr absl::string_view kLabelKeyErrMsg =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character";

// IsQualifiedName (content.IsLabelKey): [prefix/]name.
Messages IsQualifiedName(absl::string_view value) {
  Messages errs;
  std::vector<absl::string_view> parts = absl::StrSplit(value, '/');
  absl::string_view name;
  if (parts.size() == 1) {
    name = parts[0];
  } else if (parts.size() == 2) {
    absl::string_view prefix = parts[0];
    name = parts[1];
    if (prefix.empty()) {
      errs.push_back("prefix part must be non-empty");
    } else {
      for (const std::string& msg : IsDns1123Subdomain(prefix)) {
        errs.push_back(absl::StrCat("prefix part ", msg));
      }
    }
  } else {
    errs.push_back(
        absl::StrCat("a valid label key ",
                     RegexError(kLabelKeyErrMsg, kLabelKeyFmt, {"MyName", "my.name", "123-abc"}),
                     " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
    return errs;
  }
  if (name.empty()) {
    errs.push_back("name part must be non-empty");
  } else if (name.size() > kLabelKeyMaxLength) {
    errs.push_back(absl::StrCat("name part ", MaxLenError(kLabelKeyMaxLength)));
  }
  if (!FullMatch(name, LabelKeyRe())) {
    errs.push_back(absl::StrCat(
        "name part ", RegexError(kLabelKeyErrMsg, kLabelKeyFmt, {"MyName", "my.name", "123-abc"})));
  }
  return errs;
}

Messages IsValidLabelValue(absl::string_view value) {
  Messages errs;
  if (value.size() > kLabelValueMaxLength) errs.push_back(MaxLenError(kLabelValueMaxLength));
  if (!FullMatch(value, LabelValueRe())) {
    errs.push_back(RegexError(
        "a valid label must be an empty string or consist of alphanumeric characters, '-', "
        "'_' or '.', and must start and end with an alphanumeric character",
        kLabelValueFmt, {"MyValue", "my_value", "12345"}));
  }
  return errs;
}

// IANA_SVC_NAME (RFC 6335), lower case only.
Messages IsValidPortName(absl::string_view port) {
  Messages errs;
  if (port.size() > kPortNameMaxLength) errs.push_back(MaxLenError(kPortNameMaxLength));
  if (!FullMatch(port, PortNameCharsetRe())) {
    errs.push_back("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
  }
  if (!std::any_of(port.begin(), port.end(), [](char c) { return c >= 'a' && c <= 'z'; })) {
    errs.push_back("must contain at least one letter (a-z)");
  }
  if (absl::StrContains(port, "--")) errs.push_back("must not contain consecutive hyphens");
  if (!port.empty() && (port.front() == '-' || port.back() == '-')) {
    errs.push_back("must not begin or end with a hyphen");
  }
  return errs;
}

Messages IsValidPortNum(int64_t port) {
  if (port >= 1 && port <= 65535) return {};
  return {"must be between 1 and 65535, inclusive"};
}

// ---------------------------------------------------------------------------------------------
// Object metadata: apimachinery ValidateObjectMeta.

enum class NameRule { kDns1123Subdomain, kDns1123Label, kDns1035Label };

// maskTrailingDash, including its upstream quirk (drops two characters, appends one), so that
// a generateName that ends in '-' validates as the name it will become.
std::string MaskTrailingDash(absl::string_view name) {
  if (name.size() > 1 && absl::EndsWith(name, "-")) {
    return absl::StrCat(name.substr(0, name.size() - 2), "a");
  }
  return std::string(name);
}

Messages CheckName(NameRule rule, absl::string_view name, bool prefix) {
  std::string n = prefix ? MaskTrailingDash(name) : std::string(name);
  switch (rule) {
    case NameRule::kDns1123Label:
      return IsDns1123Label(n);
    case NameRule::kDns1035Label:
      return IsDns1035Label(n);
    case NameRule::kDns1123Subdomain:
      break;
  }
  return IsDns1123Subdomain(n);
}

template <typename Map>
std::vector<std::string> SortedKeys(const Map& map) {
  std::vector<std::string> keys;
  keys.reserve(map.size());
  for (const auto& kv : map) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  return keys;
}

// ValidateLabels: every error is reported on the map's path, with the key or value as value.
template <typename Map>
void ValidateLabels(const Map& labels, const std::string& path, Findings& f) {
  for (const std::string& key : SortedKeys(labels)) {
    for (const std::string& msg : IsQualifiedName(key)) f.Invalid(path, GoQuote(key), msg);
    const std::string& value = labels.at(key);
    for (const std::string& msg : IsValidLabelValue(value)) f.Invalid(path, GoQuote(value), msg);
  }
}

template <typename Map>
void ValidateAnnotations(const Map& annotations, const std::string& path, Findings& f) {
  int64_t total = 0;
  for (const std::string& key : SortedKeys(annotations)) {
    // A qualified name, except that case does not matter.
    for (const std::string& msg : IsQualifiedName(absl::AsciiStrToLower(key))) {
      f.Invalid(path, GoQuote(key), msg);
    }
    total += static_cast<int64_t>(key.size() + annotations.at(key).size());
  }
  if (total > kTotalAnnotationSizeLimitBytes) f.TooLong(path, kTotalAnnotationSizeLimitBytes);
}

void ValidateObjectMeta(const k8s::ObjectMeta& meta, bool namespaced, NameRule rule, Findings& f) {
  if (!meta.generatename().empty()) {
    for (const std::string& msg : CheckName(rule, meta.generatename(), /*prefix=*/true)) {
      f.Invalid("metadata.generateName", GoQuote(meta.generatename()), msg);
    }
  }
  // np never generates names: an object without a name cannot be referenced or evaluated.
  if (meta.name().empty()) {
    f.Required("metadata.name", "name or generateName is required");
  } else {
    for (const std::string& msg : CheckName(rule, meta.name(), /*prefix=*/false)) {
      f.Invalid("metadata.name", GoQuote(meta.name()), msg);
    }
  }
  if (namespaced) {
    if (meta.namespace_().empty()) {
      f.Required("metadata.namespace");
    } else {
      for (const std::string& msg : IsDns1123Label(meta.namespace_())) {
        f.Invalid("metadata.namespace", GoQuote(meta.namespace_()), msg);
      }
    }
  } else if (!meta.namespace_().empty()) {
    f.Forbidden("metadata.namespace", "not allowed on this type");
  }
  if (meta.generation() < 0) {
    f.Invalid("metadata.generation", absl::StrCat(meta.generation()),
              "must be greater than or equal to 0");
  }
  ValidateLabels(meta.labels(), "metadata.labels", f);
  ValidateAnnotations(meta.annotations(), "metadata.annotations", f);
}

// ---------------------------------------------------------------------------------------------
// Label selectors: meta/v1 ValidateLabelSelector.

constexpr absl::string_view kInvalidSelectorValueNote =
    " (the API server refuses this in new objects since Kubernetes 1.28 and keeps it in "
    "older ones; it matches no label)";

void ValidateLabelSelector(const k8s::LabelSelector& selector, const std::string& path,
                           Findings& f) {
  ValidateLabels(selector.matchlabels(), Child(path, "matchLabels"), f);
  for (int i = 0; i < selector.matchexpressions_size(); ++i) {
    const k8s::LabelSelectorRequirement& req = selector.matchexpressions(i);
    const std::string req_path = Index(Child(path, "matchExpressions"), i);
    const std::string& op = req.operator_();
    if (op == "In" || op == "NotIn") {
      if (req.values_size() == 0) {
        f.Required(Child(req_path, "values"),
                   "must be specified when `operator` is 'In' or 'NotIn'");
      }
    } else if (op == "Exists" || op == "DoesNotExist") {
      if (req.values_size() > 0) {
        f.Forbidden(Child(req_path, "values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
      }
    } else {
      f.Invalid(Child(req_path, "operator"), GoQuote(op), "not a valid selector operator");
    }
    for (const std::string& msg : IsQualifiedName(req.key())) {
      f.Invalid(Child(req_path, "key"), GoQuote(req.key()), msg);
    }
    for (int j = 0; j < req.values_size(); ++j) {
      for (const std::string& msg : IsValidLabelValue(req.values(j))) {
        f.Invalid(Index(Child(req_path, "values"), j), GoQuote(req.values(j)),
                  absl::StrCat(msg, kInvalidSelectorValueNote), Severity::kWarning);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses and CIDRs in "legacy" fields (ipBlock, pod IPs).

// A CIDR as Go's net.ParseCIDR (the sloppy variant the API server uses) reads it. np's
// IpPrefix::Parse reads IPv4-mapped text the way Go's IPNet matches it ("::ffff:10.0.0.0/104"
// is 10.0.0.0/8), so the prefix is what the CIDR matches everywhere in np; Go compares the
// mask length as written (out of 128 for any IPv6 text) in the except check, so keep that too.
struct GoCidr {
  IpPrefix prefix;         // what it matches
  int written_length = 0;  // the length as the text wrote it
  bool v4_mapped = false;  // IPv6 text for an IPv4 prefix
};

// The network text Go's IPNet.String() prints, e.g. "10.0.0.0/8".
std::string GoNetString(const GoCidr& c) {
  return absl::StrCat(c.prefix.network().ToString(), "/", c.prefix.length());
}

// IsValidCIDRForLegacyField with its warnings (GetWarningsForCIDR). Returns the parse when the
// value is valid at all (with or without warnings).
std::optional<GoCidr> CheckLegacyCidr(const std::string& path, const std::string& value,
                                      Findings& f) {
  GoCidr c;
  absl::StatusOr<IpPrefix> sloppy =
      IpPrefix::Parse(value, /*allow_leading_zeros=*/true, &c.written_length);
  if (!sloppy.ok()) {
    f.Invalid(path, GoQuote(value),
              "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    return std::nullopt;
  }
  c.prefix = *sloppy;
  // IPv6 text whose prefix np reads as IPv4 (length >= 96), or whose written address is
  // IPv4-mapped (a shorter length: the prefix stays IPv6, its address keeps the mapped form).
  c.v4_mapped = (value.find(':') != std::string::npos && sloppy->family() == AddressFamily::kIPv4) ||
                sloppy->address().is_v4_mapped();
  bool warned = false;
  if (sloppy->has_host_bits()) {
    IpAddress ip = sloppy->address();
    if (ip.is_v4_mapped()) ip = IpAddress::V4(static_cast<uint32_t>(ip.lo()));
    // Go prints the single-address form with the mask's full width (/128 for IPv6 text).
    int width = value.find(':') != std::string::npos ? 128 : 32;
    std::string single = absl::StrCat(ip.ToString(), "/", width);
    f.Warning(path, absl::StrCat("CIDR value ", GoQuote(value),
                                 " is ambiguous in this context (should be ",
                                 GoQuote(GoNetString(c)), " or ", GoQuote(single), "?)"));
    warned = true;
  }
  bool strict = IpPrefix::Parse(value, /*allow_leading_zeros=*/false).ok();
  if (!strict || c.v4_mapped) {
    (f.*(c.v4_mapped ? &Findings::VerdictWarning : &Findings::Warning))(path, absl::StrCat("non-standard CIDR value ", GoQuote(value),
                                 " will be considered invalid in a future Kubernetes release: "
                                 "use ",
                                 GoQuote(GoNetString(c)),
                                 c.v4_mapped ? absl::StrCat(" (np reads it as ", GoNetString(c),
                                                            ", as Go's net package does)")
                                             : std::string()));
    warned = true;
  }
  if (!warned && sloppy->family() == AddressFamily::kIPv6) {
    std::string canonical = absl::StrCat(sloppy->address().ToString(), "/", sloppy->length());
    if (canonical != value) {
      f.Warning(path,
                absl::StrCat("IPv6 CIDR value ", GoQuote(value),
                             " should be in RFC 5952 canonical format (", GoQuote(canonical), ")"));
    }
  }
  return c;
}

// IsValidIPForLegacyField with its warnings (GetWarningsForIP). IPv4-mapped text is returned
// as the IPv4 address it denotes (IpAddress::Parse), which is also the family Go's
// netutils.IsIPv6 sees.
std::optional<IpAddress> CheckLegacyIp(const std::string& path, const std::string& value,
                                       Findings& f) {
  bool mapped = false;
  absl::StatusOr<IpAddress> sloppy =
      IpAddress::Parse(value, /*allow_leading_zeros=*/true, &mapped);
  if (!sloppy.ok()) {
    f.Invalid(path, GoQuote(value),
              "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
    return std::nullopt;
  }
  bool strict = IpAddress::Parse(value, /*allow_leading_zeros=*/false).ok();
  if (!strict || mapped) {
    (f.*(mapped ? &Findings::VerdictWarning : &Findings::Warning))(path, absl::StrCat("non-standard IP address ", GoQuote(value),
                                 " will be considered invalid in a future Kubernetes release: "
                                 "use ",
                                 GoQuote(sloppy->ToString()),
                                 mapped ? absl::StrCat(" (np reads it as ", sloppy->ToString(),
                                                       ", as Go's net package does)")
                                        : std::string()));
  } else if (sloppy->is_v6() && sloppy->ToString() != value) {
    f.Warning(path, absl::StrCat("IPv6 address ", GoQuote(value),
                                 " should be in RFC 5952 canonical format (",
                                 GoQuote(sloppy->ToString()), ")"));
  }
  return *sloppy;
}

// ---------------------------------------------------------------------------------------------
// NetworkPolicy.

void ValidateIpBlock(const k8s::IPBlock& block, const std::string& path, Findings& f) {
  const std::string cidr_path = Child(path, "cidr");
  if (block.cidr().empty()) {
    f.Required(cidr_path);
    return;
  }
  std::optional<GoCidr> cidr = CheckLegacyCidr(cidr_path, block.cidr(), f);
  if (!cidr) return;  // the except entries are not looked at, as upstream
  for (int i = 0; i < block.except_size(); ++i) {
    const std::string except_path = Index(Child(path, "except"), i);
    std::optional<GoCidr> except = CheckLegacyCidr(except_path, block.except(i), f);
    if (!except) continue;
    // Upstream: !cidr.Contains(except.IP) || cidrMaskLen >= exceptMaskLen, where Contains
    // compares IPv4-mapped networks as IPv4 and the mask lengths are the written ones.
    bool contained = cidr->prefix.Contains(except->prefix.network());
    if (!contained || cidr->written_length >= except->written_length) {
      f.Invalid(except_path, GoQuote(block.except(i)), "must be a strict subset of `cidr`");
    }
  }
}

void ValidatePeer(const k8s::NetworkPolicyPeer& peer, const std::string& path, Findings& f) {
  int peers = 0;
  if (peer.has_podselector()) {
    ++peers;
    ValidateLabelSelector(peer.podselector(), Child(path, "podSelector"), f);
  }
  if (peer.has_namespaceselector()) {
    ++peers;
    ValidateLabelSelector(peer.namespaceselector(), Child(path, "namespaceSelector"), f);
  }
  if (peer.has_ipblock()) {
    ++peers;
    ValidateIpBlock(peer.ipblock(), Child(path, "ipBlock"), f);
  }
  if (peers == 0) {
    f.Required(path, "must specify a peer");
  } else if (peers > 1 && peer.has_ipblock()) {
    f.Forbidden(path, "may not specify both ipBlock and another peer");
  }
}

void ValidatePort(const k8s::NetworkPolicyPort& port, const std::string& path, Findings& f) {
  // An absent protocol is defaulted to TCP; a present one must be spelled exactly.
  if (port.has_protocol() && port.protocol() != "TCP" && port.protocol() != "UDP" &&
      port.protocol() != "SCTP") {
    f.NotSupported(Child(path, "protocol"), port.protocol(), {"TCP", "UDP", "SCTP"});
  }
  const std::string port_path = Child(path, "port");
  const std::string end_path = Child(path, "endPort");
  if (port.has_port()) {
    const k8s::IntOrString& p = port.port();
    if (p.type() == 0) {  // intstr.Int
      for (const std::string& msg : IsValidPortNum(p.intval())) {
        f.Invalid(port_path, absl::StrCat(p.intval()), msg);
      }
      if (port.has_endport()) {
        if (port.endport() < p.intval()) {
          f.Invalid(end_path, absl::StrCat(port.endport()),
                    "must be greater than or equal to `port`");
        }
        for (const std::string& msg : IsValidPortNum(port.endport())) {
          f.Invalid(end_path, absl::StrCat(port.endport()), msg);
        }
      }
    } else {  // intstr.String (upstream treats every type other than Int this way)
      if (port.has_endport()) {
        f.Invalid(end_path, absl::StrCat(port.endport()),
                  "may not be specified when `port` is non-numeric");
      }
      for (const std::string& msg : IsValidPortName(p.strval())) {
        f.Invalid(port_path, GoQuote(p.strval()), msg);
      }
    }
  } else if (port.has_endport()) {
    f.Invalid(end_path, absl::StrCat(port.endport()),
              "may not be specified when `port` is not specified");
  }
}

void ValidateNetworkPolicySpec(const k8s::NetworkPolicySpec& spec, Findings& f) {
  ValidateLabelSelector(spec.podselector(), "spec.podSelector", f);
  for (int i = 0; i < spec.ingress_size(); ++i) {
    const std::string rule_path = Index("spec.ingress", i);
    const k8s::NetworkPolicyIngressRule& rule = spec.ingress(i);
    for (int j = 0; j < rule.ports_size(); ++j) {
      ValidatePort(rule.ports(j), Index(Child(rule_path, "ports"), j), f);
    }
    for (int j = 0; j < rule.from_size(); ++j) {
      ValidatePeer(rule.from(j), Index(Child(rule_path, "from"), j), f);
    }
  }
  for (int i = 0; i < spec.egress_size(); ++i) {
    const std::string rule_path = Index("spec.egress", i);
    const k8s::NetworkPolicyEgressRule& rule = spec.egress(i);
    for (int j = 0; j < rule.ports_size(); ++j) {
      ValidatePort(rule.ports(j), Index(Child(rule_path, "ports"), j), f);
    }
    for (int j = 0; j < rule.to_size(); ++j) {
      ValidatePeer(rule.to(j), Index(Child(rule_path, "to"), j), f);
    }
  }
  if (spec.policytypes_size() > 2) {
    f.Invalid("spec.policyTypes", GoStringSlice("networking.PolicyType", spec.policytypes()),
              "may not specify more than two policyTypes");
    return;
  }
  for (int i = 0; i < spec.policytypes_size(); ++i) {
    const std::string& type = spec.policytypes(i);
    const std::string type_path = Index("spec.policyTypes", i);
    if (type != "Ingress" && type != "Egress") {
      f.NotSupported(type_path, type, {"Ingress", "Egress"});
    } else if (i == 1 && type == spec.policytypes(0)) {
      // Upstream accepts ["Ingress", "Ingress"]; it means ["Ingress"], which is seldom meant.
      f.Duplicate(type_path, GoQuote(type), Severity::kWarning,
                  "listed twice; the API server accepts this and reads it as listed once");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pod.

void ValidateContainerPorts(const k8s::Pod& pod, Findings& f) {
  // Port names are unique within a container (upstream validateContainerPorts); across the
  // containers of a pod the API server allows repeats, which makes a named port resolve to
  // several numbers: worth a warning.
  absl::flat_hash_map<std::string, int> name_owner;  // port name -> first container index
  for (int c = 0; c < pod.spec().containers_size(); ++c) {
    const k8s::Container& container = pod.spec().containers(c);
    const std::string ports_path = Child(Index("spec.containers", c), "ports");
    absl::flat_hash_set<std::string> names;
    for (int i = 0; i < container.ports_size(); ++i) {
      const k8s::ContainerPort& port = container.ports(i);
      const std::string path = Index(ports_path, i);
      if (!port.name().empty()) {
        Messages msgs = IsValidPortName(port.name());
        if (!msgs.empty()) {
          for (const std::string& msg : msgs) {
            f.Invalid(Child(path, "name"), GoQuote(port.name()), msg);
          }
        } else if (names.contains(port.name())) {
          f.Duplicate(Child(path, "name"), GoQuote(port.name()));
        } else {
          names.insert(port.name());
          auto [it, inserted] = name_owner.emplace(port.name(), c);
          if (!inserted && it->second != c) {
            f.Duplicate(Child(path, "name"), GoQuote(port.name()), Severity::kWarning,
                        absl::StrCat("also defined in spec.containers[", it->second,
                                     "]; a policy naming this port matches both numbers"));
          }
        }
      }
      if (port.containerport() == 0) {
        f.Required(Child(path, "containerPort"));
      } else {
        for (const std::string& msg : IsValidPortNum(port.containerport())) {
          f.Invalid(Child(path, "containerPort"), absl::StrCat(port.containerport()), msg);
        }
      }
      if (port.hostport() != 0) {
        for (const std::string& msg : IsValidPortNum(port.hostport())) {
          f.Invalid(Child(path, "hostPort"), absl::StrCat(port.hostport()), msg);
        }
      }
      // An empty protocol is defaulted to TCP (SetDefaults_ContainerPort).
      const std::string& protocol = port.protocol();
      if (!protocol.empty() && protocol != "TCP" && protocol != "UDP" && protocol != "SCTP") {
        f.NotSupported(Child(path, "protocol"), protocol, {"SCTP", "TCP", "UDP"});
      }
    }
  }
}

// validatePodIPs, plus the v1 -> internal conversion rule that status.podIP, when set together
// with status.podIPs, equals podIPs[0]. When only podIP is set it stands for podIPs[0] (as the
// conversion makes it); findings about it are reported on status.podIP, the field in the input.
void ValidatePodIps(const k8s::PodStatus& status, Findings& f) {
  struct Entry {
    std::string path;
    std::string text;
  };
  std::vector<Entry> ips;
  if (status.podips_size() > 0) {
    for (int i = 0; i < status.podips_size(); ++i) {
      ips.push_back({Index("status.podIPs", i), status.podips(i).ip()});
    }
    if (!status.podip().empty() && status.podip() != status.podips(0).ip()) {
      f.Invalid("status.podIP", GoQuote(status.podip()),
                absl::StrCat("must be equal to status.podIPs[0] (", GoQuote(status.podips(0).ip()),
                             ") when both are set"));
    }
  } else if (!status.podip().empty()) {
    ips.push_back({"status.podIP", status.podip()});
  }
  std::vector<IpAddress> parsed;
  for (const Entry& e : ips) {
    std::optional<IpAddress> a = CheckLegacyIp(e.path, e.text, f);
    if (a) parsed.push_back(*a);
  }
  if (ips.size() <= 1) return;
  // Upstream also runs the family check when an address is unparsable (and then adds an
  // internal error); np reports only the unparsable address.
  if (parsed.size() == ips.size()) {
    bool v4 = false, v6 = false;
    for (const IpAddress& a : parsed) (a.is_v6() ? v6 : v4) = true;
    if (!(v4 && v6) || ips.size() > 2) {
      std::vector<std::string> items;
      for (const Entry& e : ips)
        items.push_back(absl::StrCat("core.PodIP{IP:", GoQuote(e.text), "}"));
      f.Invalid("status.podIPs", absl::StrCat("[]core.PodIP{", absl::StrJoin(items, ", "), "}"),
                "may specify no more than one IP for each IP family");
    }
  }
  absl::flat_hash_set<std::string> seen;
  for (const Entry& e : ips) {
    if (!seen.insert(e.text).second) {
      f.Duplicate(e.path, absl::StrCat("core.PodIP{IP:", GoQuote(e.text), "}"));
    }
  }
}

// validateServicePort, on the v1 object before defaulting: an absent protocol is TCP and an
// absent (or zero, or empty) targetPort is the port, as SetDefaults_ServicePort makes them.
void ValidateServicePort(const k8s::ServicePort& port, bool require_name,
                         absl::flat_hash_set<std::string>* names, const std::string& path,
                         Findings& f) {
  const std::string name_path = Child(path, "name");
  if (require_name && port.name().empty()) {
    f.Required(name_path);
  } else if (!port.name().empty()) {
    for (const std::string& msg : IsDns1123Label(port.name())) {
      f.Invalid(name_path, GoQuote(port.name()), msg);
    }
    if (!names->insert(port.name()).second) f.Duplicate(name_path, GoQuote(port.name()));
  }
  for (const std::string& msg : IsValidPortNum(port.port())) {
    f.Invalid(Child(path, "port"), absl::StrCat(port.port()), msg);
  }
  const std::string& protocol = port.protocol();
  if (!protocol.empty() && protocol != "TCP" && protocol != "UDP" && protocol != "SCTP") {
    f.NotSupported(Child(path, "protocol"), protocol, {"SCTP", "TCP", "UDP"});
  }
  if (!port.has_targetport()) return;
  const k8s::IntOrString& target = port.targetport();
  const std::string target_path = Child(path, "targetPort");
  if (target.type() == 0) {  // intstr.Int; 0 is defaulted to the port
    if (target.intval() == 0) return;
    for (const std::string& msg : IsValidPortNum(target.intval())) {
      f.Invalid(target_path, absl::StrCat(target.intval()), msg);
    }
  } else if (!target.strval().empty()) {
    for (const std::string& msg : IsValidPortName(target.strval())) {
      f.Invalid(target_path, GoQuote(target.strval()), msg);
    }
  }
}

}  // namespace

std::vector<Diagnostic> ValidateService(const k8s::Service& service) {
  Findings f("Service",
             absl::StrCat(service.metadata().namespace_(), "/", service.metadata().name()));
  ValidateObjectMeta(service.metadata(), /*namespaced=*/true, NameRule::kDns1035Label, f);
  const k8s::ServiceSpec& spec = service.spec();
  const std::string& type = spec.type();
  if (!type.empty() && type != "ClusterIP" && type != "NodePort" && type != "LoadBalancer" &&
      type != "ExternalName") {
    f.NotSupported("spec.type", type, {"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"});
  }
  ValidateLabels(spec.selector(), "spec.selector", f);
  // clusterIP is "None" (headless), empty (to be allocated) or an address; clusterIPs, when
  // both are given, starts with it.
  bool headless = spec.clusterip() == "None";
  if (!spec.clusterip().empty() && !headless) {
    if (!IpAddress::Parse(spec.clusterip()).ok()) {
      f.Invalid("spec.clusterIP", GoQuote(spec.clusterip()),
                "must be empty, 'None', or a valid IP address");
    }
  }
  for (int i = 0; i < spec.clusterips_size(); ++i) {
    const std::string& ip = spec.clusterips(i);
    if (i == 0 && ip == "None") {
      headless = true;
    } else if (!IpAddress::Parse(ip).ok()) {
      f.Invalid(Index("spec.clusterIPs", i), GoQuote(ip),
                i == 0 ? "must be empty, 'None', or a valid IP address"
                       : "must be a valid IP address");
    }
  }
  if (!spec.clusterip().empty() && spec.clusterips_size() > 0 &&
      spec.clusterips(0) != spec.clusterip()) {
    f.Invalid("spec.clusterIPs", GoQuote(spec.clusterips(0)),
              "first value must match `spec.clusterIP`");
  }
  if (spec.ports_size() == 0 && !headless && type != "ExternalName") f.Required("spec.ports");
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < spec.ports_size(); ++i) {
    ValidateServicePort(spec.ports(i), /*require_name=*/spec.ports_size() > 1, &names,
                        Index("spec.ports", i), f);
  }
  return f.Take();
}

std::vector<Diagnostic> ValidateNetworkPolicy(const k8s::NetworkPolicy& policy) {
  Findings f("NetworkPolicy",
             absl::StrCat(policy.metadata().namespace_(), "/", policy.metadata().name()));
  ValidateObjectMeta(policy.metadata(), /*namespaced=*/true, NameRule::kDns1123Subdomain, f);
  ValidateNetworkPolicySpec(policy.spec(), f);
  return f.Take();
}

std::vector<Diagnostic> ValidatePod(const k8s::Pod& pod) {
  Findings f("Pod", absl::StrCat(pod.metadata().namespace_(), "/", pod.metadata().name()));
  ValidateObjectMeta(pod.metadata(), /*namespaced=*/true, NameRule::kDns1123Subdomain, f);
  ValidateContainerPorts(pod, f);
  // ValidatePodSpec: ValidateNodeName is NameIsDNSSubdomain.
  const std::string& node = pod.spec().nodename();
  if (!node.empty()) {
    for (const std::string& msg : IsDns1123Subdomain(node)) {
      f.Invalid("spec.nodeName", GoQuote(node), msg);
    }
  }
  ValidatePodIps(pod.status(), f);
  return f.Take();
}

std::vector<Diagnostic> ValidateNamespace(const k8s::Namespace& ns) {
  Findings f("Namespace", ns.metadata().name());
  ValidateObjectMeta(ns.metadata(), /*namespaced=*/false, NameRule::kDns1123Label, f);
  auto it = ns.metadata().labels().find(std::string(kNamespaceNameLabel));
  if (it != ns.metadata().labels().end() && it->second != ns.metadata().name()) {
    f.Warning("metadata.labels",
              absl::StrCat("label ", kNamespaceNameLabel, "=", GoQuote(it->second),
                           " is replaced by the API server with the namespace's name (",
                           GoQuote(ns.metadata().name()), ")"));
  }
  return f.Take();
}

}  // namespace np

namespace np {

std::vector<Diagnostic> ValidateClusterScopedMetadata(absl::string_view kind,
                                                      const k8s::ObjectMeta& meta) {
  Findings f(kind, meta.name());
  ValidateObjectMeta(meta, /*namespaced=*/false, NameRule::kDns1123Subdomain, f);
  return f.Take();
}

std::vector<Diagnostic> ValidateSelector(absl::string_view kind, std::string object,
                                         const k8s::LabelSelector& selector,
                                         const std::string& path) {
  Findings f(kind, std::move(object));
  ValidateLabelSelector(selector, path, f);
  return f.Take();
}

}  // namespace np
