// Flag parsing for `netpol`: absl flags, but with our exit codes (absl's own parser exits
// with 1 on a bad flag, which would read as "denied"), short -f/-o aliases, and -f repeatable.
#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "np/cli/cli.h"

ABSL_FLAG(std::string, output, "text", "Output format: text or json (-o).");
ABSL_FLAG(std::string, engine, "indexed",
          "Evaluator: 'indexed' (the indexed engine; 'engine' is accepted too) or 'reference' "
          "(the literal oracle).");
ABSL_FLAG(int64_t, memory_budget, 0,
          "MiB of heap the command may use before it stops with an error (exit 2); 0: 100 "
          "bytes per byte of the -f inputs, at least 1 GiB, at most three quarters of "
          "physical memory or of `ulimit -v`.");
ABSL_FLAG(bool, allow_self, false, "Always allow a pod's traffic to itself.");
ABSL_FLAG(std::string, ipblock_scope, "all",
          "Which addresses ipBlocks match: 'all' (pod IPs too, as upstream's conformance "
          "suite expects) or 'external' (only addresses outside the cluster).");

namespace np::cli {

absl::StatusOr<Args> ParseArgs(int argc, char** argv, int first) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) args.positional.push_back(argv[i]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      args.positional.push_back(arg);
      continue;
    }
    std::string name, value;
    bool has_value = false;
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    } else {
      name = body;
    }
    if (name == "f") name = "file";
    if (name == "o") name = "output";
    for (char& c : name) {
      if (c == '-') c = '_';
    }
    auto take_value = [&]() -> absl::Status {
      if (has_value) return absl::OkStatus();
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      value = argv[++i];
      has_value = true;
      return absl::OkStatus();
    };
    args.given_flags.push_back(name);
    // Repeatable flags, collected in order.
    std::vector<std::string>* list = name == "file"                    ? &args.files
                                     : name == "before"                ? &args.before
                                     : name == "after"                 ? &args.after
                                     : name == "namespace_labels"      ? &args.namespace_labels
                                     : name == "namespace_labels_file" ? &args.namespace_labels_files
                                     : name == "cluster_pod"           ? &args.cluster_pods
                                                                       : nullptr;
    if (list != nullptr) {
      if (absl::Status s = take_value(); !s.ok()) return s;
      list->push_back(value);
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr && flag->IsOfType<bool>();
      if (!negated) flag = nullptr;
    }
    if (flag == nullptr || flag->Filename().find("np/cli/") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
    if (flag->IsOfType<bool>() && !has_value) {
      value = negated ? "false" : "true";
    } else if (absl::Status s = take_value(); !s.ok()) {
      return s;
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("bad value for ", arg, ": ", error));
    }
  }
  return args;
}

absl::StatusOr<EvaluationOptions> OptionsFromFlags() {
  EvaluationOptions options;
  options.always_allow_self = absl::GetFlag(FLAGS_allow_self);
  std::string scope = absl::GetFlag(FLAGS_ipblock_scope);
  if (scope == "all") {
    options.ip_block_scope = EvaluationOptions::IpBlockScope::kAllAddresses;
  } else if (scope == "external") {
    options.ip_block_scope = EvaluationOptions::IpBlockScope::kExternalOnly;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--ipblock-scope must be 'all' or 'external', not '", scope, "'"));
  }
  return options;
}

}  // namespace np::cli
