// Small helpers shared by the backends: running the kernel tools, reading IR fields, checking
// the IR's invariants before anything is rendered, and making user bytes safe to print.
#ifndef NP_BACKENDS_UTIL_H_
#define NP_BACKENDS_UTIL_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/backends/backend.h"
#include "proto/compiled.pb.h"

namespace np::backends {

// Runs argv (no shell), feeding `input` on stdin; returns stdout. Fails with stderr and the
// exit status in the message when the command fails. When `netns` is not empty the command
// runs inside that network namespace (`ip netns exec`).
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::string_view input = "",
                                       absl::string_view netns = "");

// One command for RunCommands: argv (no shell) and what it reads on stdin.
struct Command {
  std::vector<std::string> argv;
  std::string input;
};
// Runs `commands` side by side (one process each, started at once) and waits for all; each
// result is that command's stdout, or its error as RunCommand gives it. With `netns` (an
// `ip netns` name) each child enters /run/netns/<netns> itself with setns(2) before it execs:
// no `ip netns exec` process (nor its private mount namespace: /sys and /etc/netns are the
// caller's, which netlink tools such as iptables-restore and ipset do not read). Each
// child's pipes are close-on-exec, so no child holds another's stdin open.
std::vector<absl::StatusOr<std::string>> RunCommands(const std::vector<Command>& commands,
                                                     absl::string_view netns = "");

// Starts argv (no shell) and leaves it running, for a long-lived tool fed through its stdin:
// `in` is a pipe to its stdin, `err` (non-blocking) one from its stderr, its stdout goes to
// /dev/null; with `netns` it enters that namespace as RunCommands' children do. Like them it
// shares this process's memory until it execs (no fork: a fork of a large agent copies its
// page tables and leaves its pages copy-on-write, a fault on each one it writes next). The
// caller closes `in` and `err` and reaps `pid`.
struct RunningProcess {
  int pid = -1;
  int in = -1;
  int err = -1;
};
absl::StatusOr<RunningProcess> StartProcess(const std::vector<std::string>& argv,
                                            absl::string_view netns = "");

// 4 or 16 network-order bytes -> "10.0.0.1" / "fd00::1".
std::string AddressText(absl::string_view bytes);
// "10.0.0.1" / "fd00::1" -> 4 or 16 bytes; error if not an address.
absl::StatusOr<std::string> AddressBytes(absl::string_view text);

// A FlowQuery's two addresses as network-order bytes (4 or 16 each). Fails on text that is
// not an address, or on ends of different families (a packet has one family).
struct FlowAddresses {
  std::string source;
  std::string destination;
};
absl::StatusOr<FlowAddresses> ParseFlowAddresses(const FlowQuery& flow);

// The identity of an address per the IR's ranges (binary search); error if the IR has no
// range for that family (a malformed IR).
absl::StatusOr<uint32_t> IdentityOf(const ir::CompiledPolicy& ir, absl::string_view address_bytes);

// The invariants every backend relies on, checked before it renders or applies anything, so
// that no backend writes a program the kernel refuses (e.g. one address in two endpoints: a
// duplicate map element, "File exists") or misreads. InvalidArgument naming the IR element
// ("malformed IR: endpoints[3] (x/b): address 10.0.0.5 is also endpoints[1] (x/a)'s"):
//  - identities[i].id, peer_sets[i].id and tables[i].id equal i;
//  - the ipv4 and ipv6 ranges have the family's width, are sorted, disjoint and cover the
//    whole family, and name existing identities;
//  - peer sets name existing identities, sorted and without repeats;
//  - port rules: protocol TCP, UDP or SCTP; 0 <= first_port <= last_port <= 65535; an
//    existing peer set; per protocol sorted by first_port and disjoint;
//  - tier rules (admin, baseline): an action; protocol TCP, UDP or SCTP with
//    0 <= first_port <= last_port <= 65535, or PROTOCOL_UNSPECIFIED with 0-65535; an
//    existing peer set;
//  - endpoints: unique namespace/name; a selected endpoint's table exists; every address
//    parses and belongs to one endpoint only (once).
absl::Status CheckIr(const ir::CompiledPolicy& ir);
// CheckIr's rules for one item at `position` of its list, in a program with `identities`
// identities or `peer_sets` peer sets (for a delta's items: np::backends::ApplyDelta).
absl::Status CheckPeerSet(const ir::PeerSet& set, uint32_t position, uint32_t identities);
absl::Status CheckTable(const ir::Table& table, uint32_t position, uint32_t peer_sets);

// The program `delta` (proto/compiled.proto CompiledPolicyDelta) makes of `*ir`, in place, in
// time proportional to the delta (plus moving the lists' element pointers). Checks the delta
// against the program first — appended identities numbered from the program's count on in
// order, not external, pods sorted; slices in bounds, sorted and disjoint, replaced ranges
// covering exactly the same addresses in order, identities (counted after the appended ones)
// and tables that exist, identity pod edits as CheckIdentityPodsEdits says, peer sets and
// tables by id in order and each
// valid as CheckIr requires against the program after the delta — and on error
// (InvalidArgument naming the field path, e.g. "identities[1]: id 5 is not the next id 4")
// leaves `*ir` untouched. It does not
// re-check what only the whole program can show (an address listed by two endpoints): a
// delta from DiffPrograms or np/lower_delta.h never makes one.
absl::Status ApplyDelta(const ir::CompiledPolicyDelta& delta, ir::CompiledPolicy* ir);

// The checks of a delta's identity pod edits (proto/compiled.proto IdentityPodsEdit) against
// `program`, the program the delta applies to: edits sorted by identity, each at most once, of
// an identity of the program or one the delta appends; `added` and `removed` each sorted
// without repeats, every removed name one of the identity's pods, no added name one, at least
// one name. InvalidArgument naming the field path ("identity_pods[1].removed[0]: \"x/a\" is
// not a pod of identity 4"). O(names in the edits x log pods). ApplyDelta runs it; a backend
// that reads an edit's counts (PodsAfterEdit) runs it first.
absl::Status CheckIdentityPodsEdits(const ir::CompiledPolicy& program,
                                    const ir::CompiledPolicyDelta& delta);
// How many pods identity `edit.identity()` has once `delta` (checked) is applied to `program`.
int PodsAfterEdit(const ir::CompiledPolicy& program, const ir::CompiledPolicyDelta& delta,
                  const ir::IdentityPodsEdit& edit);
// Applies a checked `edit` to the identity's sorted `pods`, in place: O(names of the edit x
// log pods) comparisons and one pass of pointer moves; no kept name is copied.
void ApplyPodsEdit(const ir::IdentityPodsEdit& edit,
                   google::protobuf::RepeatedPtrField<std::string>* pods);

// The delta from `previous` to `next` when they differ only in address ranges, endpoints,
// identities' pod lists (as the names added and removed), identities appended (not external), peer sets and tables (ids kept,
// none removed): one slice per list, from the first difference to the last, every identity
// past previous's count whole, and every peer set and table that differs or is new, whole.
// nullopt when anything else differs (node, fewer identities, an existing identity's
// `external`, an appended one external or with unsorted pods, fewer peer sets or tables). O(size of both): for tests, and for callers that hold two
// programs (Backend::UpdateDelta's default goes the other way).
std::optional<ir::CompiledPolicyDelta> DiffPrograms(const ir::CompiledPolicy& previous,
                                                    const ir::CompiledPolicy& next);

// Appends a tier rule to `rules`; PROTOCOL_UNSPECIFIED (every protocol) gets ports 0-65535
// whatever `first_port`/`last_port` say, as CheckIr requires. For code that builds IRs (tests).
ir::TierRule* AddTierRule(google::protobuf::RepeatedPtrField<ir::TierRule>* rules,
                          ir::TierAction action, ir::Protocol protocol, uint32_t first_port,
                          uint32_t last_port, uint32_t peer_set);
// Appends a NetworkPolicy port rule (protocol, ports first..last, peer set) to `direction`;
// leaves `isolated` as it is. For code that builds IRs (tests).
ir::PortRule* AddPortRule(ir::DirectionPolicy* direction, ir::Protocol protocol,
                          uint32_t first_port, uint32_t last_port, uint32_t peer_set);

// ---- What the IR means (proto/compiled.proto), read literally ----------------------------
// Backends use Restricted() to decide which directions need a program; tests of every layer
// (lowering, each backend's renderer, real packets) compare against SideAllows/IrAllows.

// Whether a direction restricts anything: NetworkPolicy isolates it or some tier rule applies.
// False: every flow of the direction is allowed.
bool Restricted(const ir::DirectionPolicy& direction);
// Whether one side (a direction of a selected endpoint) allows a flow with `protocol` (an
// IANA number: 6, 17, 132, or any other) to destination `port`, the other end having
// identity `peer`: the Admin-tier rules in order, NetworkPolicy when isolated, the
// Baseline-tier rules in order, then allowed. Assumes CheckIr passed.
bool SideAllows(const ir::CompiledPolicy& ir, const ir::DirectionPolicy& direction,
                int protocol, uint32_t port, uint32_t peer);
// The whole verdict of a packet between two addresses (4 or 16 network-order bytes each, one
// family): egress at the source's endpoint, ingress at the destination's, each when it is a
// selected endpoint of the IR; traffic from an endpoint to itself is allowed when
// `always_allow_self`. A literal scan: for tests, not for a datapath. Assumes CheckIr passed.
bool IrAllows(const ir::CompiledPolicy& ir, absl::string_view source_bytes,
              absl::string_view destination_bytes, int protocol, uint32_t port);

// The test oracle for renumbered programs (np/lower_align.h): `ir` with its unused items
// dropped (identities no range carries, peer sets no rule names, tables no endpoint names)
// and the rest numbered in a fixed order: identities by first range (ipv4, then ipv6),
// tables by first endpoint, peer sets by first use (tables in that order; ingress then
// egress; rules, admin, baseline). Two programs with the same canonical form mean the same
// for every flow and differ only in numbering. Assumes CheckIr passed.
ir::CompiledPolicy CanonicalProgram(const ir::CompiledPolicy& ir);
// Whether a and b have the same canonical form; when not, `why` (optional) says where.
bool EquivalentPrograms(const ir::CompiledPolicy& a, const ir::CompiledPolicy& b,
                        std::string* why = nullptr);

// "endpoints[3] (x/b)", for error messages (the name escaped with EscapeText).
std::string EndpointLabel(const ir::CompiledPolicy& ir, int index);

// User bytes (object and node names) made safe for a rule comment or any line np prints:
// valid UTF-8 without control, format (invisible, e.g. U+202E), separator (other than the
// ASCII space), private-use or non-characters, so that no name can end a comment, forge a
// line or reorder what a terminal shows. Escapes follow Go's %q: \a \b \f \n \r \t \v, \xNN
// for other ASCII controls and for each byte that is not part of valid UTF-8, \uNNNN /
// \UNNNNNNNN for the characters above, \\ for a backslash — except that `"` is written \x22,
// so that the result can stand between double quotes in nft (whose strings have no escapes).
std::string EscapeText(absl::string_view bytes);
// EscapeText cut to at most `max_bytes` (>= 3) without splitting a character or an escape;
// a cut text ends in "...". For comments: nft accepts 128 bytes, iptables' comment match 255.
std::string CommentText(absl::string_view bytes, size_t max_bytes);
inline constexpr size_t kNftCommentMax = 128;       // NFTNL_UDATA_COMMENT_MAXLEN (libnftnl)
inline constexpr size_t kIptablesCommentMax = 255;  // XT_MAX_COMMENT_LEN 256, with the NUL

// ---- Capacity ---------------------------------------------------------------------------
// Appends an item to a capacity report (limit/budget 0: none).
void AddCapacityItem(ir::BackendCapacity& report, absl::string_view name, uint64_t used,
                     uint64_t limit, absl::string_view limit_source, uint64_t budget = 0,
                     absl::string_view budget_source = "");
// Applies the budget overrides of `options` to `report` and sets `fits`. Fails on a name no
// item of the report has, or whose item has no budget (a hard limit cannot be raised).
absl::Status FinishCapacity(ir::BackendCapacity& report, const BackendOptions& options);
// OK when the report fits; else ResourceExhausted naming every item over its limit or
// budget with its numbers and where the limit comes from, e.g. "nft: the program is past
// what the kernel or np's budgets allow: identities 70,001 > limit 65,534 (...)".
absl::Status CheckCapacity(const ir::BackendCapacity& report);
// A report as text for people (netpol compile --stats).
std::string CapacityText(const ir::BackendCapacity& report);

// "TCP", "UDP", "SCTP" and the nft/iptables spelling "tcp", "udp", "sctp".
std::string ProtocolUpper(ir::Protocol protocol);
std::string ProtocolLower(ir::Protocol protocol);

}  // namespace np::backends

#endif  // NP_BACKENDS_UTIL_H_
