// np/backends/iptables/iptables.h — the iptables + ipset backend (`--backend iptables`):
// the compiled IR (proto/compiled.proto) as `ipset restore` input plus `iptables-restore`
// and `ip6tables-restore` input for the filter table, in the kube-router / Calico style.
//
//   std::unique_ptr<np::backends::Backend> b = np::backends::MakeIptablesBackend();
//   absl::StatusOr<std::string> text = b->Render(ir);   // all three inputs, with separators
//   np::backends::Attachment where;
//   where.netns = "node-1";                               // `ip netns` name of the node
//   absl::Status s = b->Apply(ir, where);                 // atomic replace, fails closed
//   s = b->Update(ir, next_ir, where);                    // in place: what differs by id
//
// What the kernel runs, per family (IPv4 in iptables, IPv6 in ip6tables):
//
//   FORWARD ── rule 1: -j NP-FORWARD
//   NP-FORWARD
//     -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT     replies, established flows
//     -j NP-D<k>                 per dispatch chain: tables k*32 .. k*32+31 (with a rule)
//     (falls off the end: RETURN to FORWARD)
//   NP-D<k>
//     -m set --match-set np-g<G>-v4-t<t> src -j NP-T<t>-EG    per table restricting egress
//     -m set --match-set np-g<G>-v4-t<t> dst -j NP-T<t>-IN    per table restricting ingress
//   np-g<G>-v4-t<t> (hash:ip; -v6- in ip6tables): the dispatch set, the addresses of table
//   t's endpoints on this node, for both directions (a table without one in a family has no
//   chain, set or rule there). In each dispatch chain every egress rule comes before every
//   ingress rule; among tables the order does not matter (CheckIr: an address belongs to one
//   endpoint, and np's chains only RETURN or DROP: a packet's verdict is the AND of the
//   chains it is sent through). A new flow walks one rule per table chain, not one per pod
//   address. Why the dispatch chains (kDispatchChainTables): an in-place update inserts or
//   deletes a table's dispatch rules by position, and iptables-restore (nf_tables variant)
//   fetches every rule of a chain it edits by position — with the rules in NP-FORWARD, 2,000
//   rules at 1,000 tables (~0.5 MB of netlink dump per restore) for one rule's edit; now at
//   most 64. The per-packet walk is still one rule per table chain (the jumps to the dispatch
//   chains are unconditional).
//   NP-T<t>-IN / NP-T<t>-EG               one chain per (table, restricted direction: isolated
//                                         by NetworkPolicy or with tier rules, util.h Restricted)
//     [<match> -m comment --comment "admin[i] <origin>" -j RETURN|-j DROP|-g NP-T<t>-IN-NP]
//                                         the admin rules in order: Allow, Deny, Pass
//     [-g NP-T<t>-IN-NP]                  the NetworkPolicy stage, when an admin rule can Pass
//   (the NetworkPolicy stage, here or in NP-T<t>-IN-NP / NP-T<t>-EG-NP:)
//     isolated:
//     -p <proto> -m <proto> --dport a:b [-m set --match-set np-g<G>-v4-p<S> src|dst] -j RETURN
//     -p <proto> -m <proto> --dport a:b -s|-d <prefix> -j RETURN   (peers written inline)
//     ...                                 rules per IR PortRule, in IR order
//     -m comment --comment "policies: ..." -j DROP   the default deny of an isolated direction
//     not isolated: the baseline rules in order (Allow and Pass -j RETURN, Deny -j DROP), then
//     the chain's end (RETURN: allowed).
//   A tier rule without protocol (PROTOCOL_UNSPECIFIED) has no -p: it matches ICMP too.
//
// A new flow from a node endpoint passes its egress chain first (RETURN = allowed), then the
// destination's ingress chain; any DROP ends it. A `-g` chain's end returns to the dispatch
// chain, as the main chain's would. Peers are matched by address, so there is no identity lookup
// that could miss (a generation's sets are complete before any rule names them). np only ever drops: what the policy allows
// returns to FORWARD, whose other rules and policy (the CNI's, the node's) still apply.
// Dispatch is by endpoint address, not interface: it works on routed veths and on a bridge
// with bridge-nf-call-iptables alike (with a bridge, `-i`/`-o` name the bridge, not the
// pod's port). Anti-spoofing (a pod sending with another pod's address) is the CNI's job
// (rp_filter), as for every address-based policy.
//
// Peers: the addresses of a peer set's identities (their ranges, neighbours merged) as the
// fewest prefixes, per family. At most kMaxInlinePrefixes of them are written into the rules
// (`-s`/`-d`, one rule per prefix); more go to one `hash:net` set per (peer set, family).
// Why not always a set: the kernel finds an ipset by name with a linear scan of all sets
// (ip_set_core.c find_set_and_id, ip_set_get_byname), so each set makes creating every
// other set, adding each entry and loading each rule that names a set slower, and load time
// grows with the square of the number of sets (2k/4k/8k sets: bench/RESULTS.md); a peer set
// of one ipBlock is one prefix, one rule. The number of iptables rules is then the IR's
// rule count (times at most kMaxInlinePrefixes) plus one dispatch rule per table and
// direction: it grows with policies, never with pods x pods; pods only add set entries
// (hash lookups). A peer set with `all` needs no match at all. A peer set with no address
// of a family and no set (below) gets nothing in that family, and its rules are left out
// of that family's chains (they could never allow anything). hash:net refuses a /0 entry, so the whole space
// is stored as its two /1 halves. The dispatch sets (above: one per table and family with a
// local endpoint) come on top; Capacity counts them.
//
// A peer set that names a pod (an identity with pods) gets a set, however few its prefixes
// (even none): pods come and go, and in a set that is a member change, not a rule change —
// as long as that makes at most kMaxPodSets sets in the family (the cost of many sets,
// above); past that, a family's sets are only the peer sets with many prefixes. Update(previous, next) then edits set members in place (adds first, then deletes,
// over ipset's netlink interface, no process spawned) when the rules of both families are
// identical and each packet can meet at most one changed lookup, or only changed lookups of
// rules that RETURN (iptables.cc, IptablesBackend::Update, has the argument); a pod of another
// node joining, leaving or being relabelled between label classes is the common element-only
// case. Otherwise — rules differ: a policy,
// namespace, tier or node event, a node pod selected into or out of a table, a peer set
// gaining its first or losing its last pod — it changes in place what differs, comparing
// tables and peer sets BY ID with what it installed (np::AlignNumbering keeps the ids of
// what carries over; any pair is right, the ids only decide how much changes): every peer
// set or dispatch set whose contents change gets a NEW set (fresh name, filled over
// netlink) before ONE `iptables-restore --noflush` per family whose rules differ rewrites
// only the chains that differ (a dispatch chain only when dispatch changes), then the sets no
// rule names are destroyed. That restore deletes nothing on the event's path (a restore that
// deletes costs ~14 ms more): a changed chain's new rules are made as `<chain>-NEW` and the
// chain gets a first rule `-g <chain>-NEW` (a chain an old dispatch rule going away jumps to
// is made inert, `-j RETURN`, instead), the dispatch chains' new rules are inserted beside
// the old;
// the old rules and chains are deleted, the chains refilled or renamed and the unused sets
// destroyed by a cleanup on a thread of the backend's, which the next call waits for
// (RulesPlan::switch_restore / cleanup; IptablesSettle). Each family's table switches in one transaction, and no set a
// live rule names is ever edited there, so every packet — also one between two endpoints
// of this node — meets the whole old program or the whole new one (IptablesBackend::
// UpdateRules has the argument). Apply only when that fails (fail closed) or on a first
// install.
// UpdateDelta plans the same edits from a CompiledPolicyDelta alone (no model of the next
// program, no comparison of whole rulesets), in time proportional to the delta and what it
// touches; what it cannot plan it hands to Update (copy + ApplyDelta; a delta with tables
// straight to the in-place rules path). Three kinds:
//  - a delta without tables (pod events; a node pod added or removed whose table's chains
//    stay; a relabel, whose new or reused identity comes appended or re-filled with the peer
//    sets that admit it rewritten by id): set edits only over netlink, no process — the node
//    pod's addresses added to (deleted from) its table's dispatch sets before its addresses
//    join the peer sets (after they leave), an RCU grace period between (iptables.cc,
//    EditMembers, has the argument). Rules name peer sets by id and match addresses, never
//    identities, so a relabel of a pod of another node — its address leaving the sets of
//    the peer sets that held its old identity and joining those that hold its new one — keeps
//    every rule when each rewritten peer set keeps its form (a set, `all` or not, naming pods
//    or not; refused otherwise). Why each packet then meets the old or the new verdict: the
//    address is not a dispatched one (so only the chain of the packet's other end looks it
//    up), every add goes in before any delete, and in that one chain either a single rule
//    looks up a changed membership or every rule that does RETURNs: midway the lookups hit
//    where the old program's do plus some of the new program's (then the new program's plus
//    some of the old's), and a chain whose only changing rules RETURN answers as the program
//    whose hit its first matching rule has (IptablesBackend::Update spells it out);
//  - a delta with tables (a policy, namespace or tier event; a pod of this node that brings
//    its table or takes the last one away): the in-place rules path planned from the delta,
//    the installed chains and sets and an index of them (iptables.cc, PlanRulesFromDelta):
//    only the tables the delta replaces or adds, whose endpoints change or that name a peer
//    set it remakes are rendered, the dispatch chains of those whose dispatch rules change are
//    edited by position (-I/-D: never flushed and refilled; NP-FORWARD when a dispatch chain
//    comes or goes), new sets for what changed, one restore per
//    family — the same edit the whole-model path makes. A pod delta adds the element edits
//    of the sets that keep their names, around the restore in the order above (the restore
//    is its dispatch going in or out);
//  - a pod delta neither way above can order (a node pod relabelled — its table replaced
//    in place, its identity appended or a retired id reused —, moved into another pod's
//    class or between tables, a policy that splits an identity, a lookup conflict at a node
//    address): the same rules path as one switch — every peer set whose members change is
//    a new set too (as is each dispatch set whose entries change), so the restores switch
//    rules, members and dispatch at once and no live set is edited: the whole-model path's
//    plan and argument, every packet (also one between two endpoints of this node) meets
//    the old program or the new one whole, with no RCU grace period (iptables.cc,
//    PlanRulesFromDeltaAs). Appended identities are named only by the peer sets the delta
//    rewrites and by its ranges;
//  - what none of these plans (past kMaxPodSets sets, set generations used up): Update.
//
// Capacity (Capacity(), `netpol compile --stats`): the kernel allows 65,472 ipsets per network
// namespace (ip_set_core.c: 16-bit set ids, the list grows from 256 in steps of 64), shared
// with every other set there — Apply checks that the new generation fits beside everything
// installed. Rules and set entries have no hard limit (memory aside), but load time grows —
// with the square of the number of sets — so np keeps budgets: 100,000 rules per family,
// 4,096 ipsets, 1,000,000 set entries (bench/RESULTS.md). Render and Apply refuse a
// program past a limit or budget (ResourceExhausted, with the numbers);
// BackendOptions::budgets raises a budget. RenderRuleset below renders without checking.
//
// Processes: every tool (ipset, iptables-restore, ...) enters the node's network namespace
// itself (np::backends::RunCommands: setns in the child, no `ip netns exec` process); the
// in-place rules path runs the two families' restores side by side (Apply one after the
// other: an IPv4 failure there leaves IPv6 untouched too), each fed to a running
// `iptables-restore --noflush` (nf_tables variant) that Apply starts and warms with a block
// that changes nothing, and Remove stops; none is forked (np::backends::StartProcess). The
// two families' commits still run one after the other (nf_tables has one commit mutex per
// network namespace), and each validates its whole table once a rule is added (~3 ms at
// 1,000 tables, 7.6k rules per family: bench/RESULTS.md, h96) — the floor of an event that
// rewrites a chain in both families.
//
// Thread safety: Render and Explain are pure functions; Apply, Update and Remove change the
// kernel state of one network namespace and must not run concurrently on the same one (nor
// on one instance: it remembers what it installed).
#ifndef NP_BACKENDS_IPTABLES_IPTABLES_H_
#define NP_BACKENDS_IPTABLES_IPTABLES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/backends/backend.h"
#include "proto/compiled.pb.h"

namespace np::backends {

std::unique_ptr<Backend> MakeIptablesBackend(const BackendOptions& options = {});

// How the last Update or UpdateDelta of `backend` (made by MakeIptablesBackend) went, for
// tests and benchmarks: "in place: ..." (Update, set members edited), "in place, rules:
// ..." (Update, changed chains and new sets: the in-place rules path; UpdateDelta's with
// tables says "(element-only refused: by delta: ...)"), "in place by delta: ..."
// (UpdateDelta, set edits planned from the delta alone), "in place by delta, rules: ..."
// (UpdateDelta, the rules path planned from the delta: chains written and deleted, sets
// made and destroyed, a pod delta's set edits — or "the pod edits as new sets (one switch;
// not ordered: <why>)" —, and where the time went), "full: <why>" (a
// new generation), or "by Update (<why the delta was not planned>): <how Update went>";
// empty before any.
std::string IptablesLastUpdate(const Backend& backend);

// Waits until `backend` (made by MakeIptablesBackend) has finished the cleanup its last in-place
// rules update deferred (RulesPlan::cleanup: old rules and chains deleted, pending chains
// renamed, unused sets destroyed), for tests that read the kernel's listing; every call of the
// backend does so first anyway. The verdicts are the new program's before it too.
void IptablesSettle(Backend& backend);

// How many processes (iptables-restore, ipset, ...) iptables backends of this process have
// started so far, for tests: the in-place paths start none. Thread-safe.
int64_t IptablesProcessesSpawned();

namespace iptables {

// The names this backend owns in the kernel. Everything it creates starts with these.
inline constexpr absl::string_view kTopChain = "NP-FORWARD";
inline constexpr absl::string_view kChainPrefix = "NP-";
inline constexpr absl::string_view kSetPrefix = "np-g";

// Peers with at most this many prefixes in a family are matched in the rules, not by a set
// (unless they name a pod and the family has at most kMaxPodSets sets with those).
inline constexpr int kMaxInlinePrefixes = 4;
inline constexpr int kMaxPodSets = 1024;

// NP-FORWARD jumps to one dispatch chain NP-D<k> per this many table ids (t / 32 = k), which
// holds their dispatch rules: a table coming or going is a positional edit of a chain of at
// most 64 rules, which is all iptables-restore fetches for it (not one rule per table chain).
inline constexpr uint32_t kDispatchChainTables = 32;

// The three restore inputs for one IR, plus their sizes (for tests and benchmarks).
struct Ruleset {
  // `ipset restore` input: creates and fills the sets of generation `generation`.
  std::string ipset;
  // `iptables-restore --noflush` / `ip6tables-restore --noflush` input for table filter:
  // declares (creates or flushes) every NP chain, fills them, and hooks NP-FORWARD into
  // FORWARD. Only np's own chains are touched; FORWARD's policy and other rules are not.
  std::string ip4;
  std::string ip6;

  // Sizes, per family (0 = IPv4, 1 = IPv6).
  int chains[2] = {0, 0};        // NP chains, NP-FORWARD included
  int rules[2] = {0, 0};         // rules in NP chains (dispatch + port rules + DROPs)
  int port_rules[2] = {0, 0};    // rules that come from IR PortRules
  int tier_rules[2] = {0, 0};    // rules that come from IR TierRules (admin, baseline)
  int sets[2] = {0, 0};          // ipset sets
  int64_t set_entries[2] = {0, 0};
};

struct RenderOptions {
  // Set names carry a generation (np-g<generation>-v4-p<peer set>) so that Apply can build
  // a new generation's sets next to the old one's. Render uses 0.
  uint32_t generation = 0;
  // Emit "-I FORWARD 1 -j NP-FORWARD" (Apply leaves it out when the hook is there already).
  bool hook = true;
  // Chains that exist in the kernel but are not part of the new ruleset, per family: the
  // restore flushes and deletes them in the same transaction.
  std::vector<std::string> stale_chains[2];
};

// The ruleset of a well-formed IR (CheckIr), whatever its size: the backend's Render and
// Apply check capacity; this is for tests and benchmarks.
absl::StatusOr<Ruleset> RenderRuleset(const ir::CompiledPolicy& ir,
                                      const RenderOptions& options = {});

// How Backend::Update goes from `previous` to `next` (both rendered with `generation`):
// element-only — the `ipset -exist restore` input that adds every new set member, then
// deletes every old one — when that is safe (iptables.cc, IptablesBackend::Update, says
// when and why), else `fallback` says why a full Apply is needed. For tests and benchmarks.
struct UpdatePlan {
  std::string fallback;  // empty: element-only (`ipset` empty: nothing to change)
  std::string ipset;
  int adds = 0;
  int dels = 0;
  // PlanUpdateDelta only, for a delta that adds or removes one endpoint of this node whose
  // table's chains exist before and after: its dispatch set edits ("add|del SET PREFIX"
  // lines, as `ipset` reads them; "": none), made before the set edit above
  // (`dispatch_first`: an add) or after it (a removal), with an RCU grace period between.
  std::string dispatch;
  bool dispatch_first = false;
};
absl::StatusOr<UpdatePlan> PlanUpdate(const ir::CompiledPolicy& previous,
                                      const ir::CompiledPolicy& next, uint32_t generation = 0);

// How Backend::Update goes from `previous` to `next` in place when the element-only plan
// refuses (rules differ: a policy, namespace or tier event, a node endpoint moving, a table's
// first or last endpoint), for programs whose ids carry over (np::AlignNumbering; any pair
// is right, the ids only decide how much changes). `previous` is rendered with
// `generation`, `next` with its sets' names carried over by id where their entries are the
// same, and every other set named with generation + 1. For tests and benchmarks.
struct RulesPlan {
  std::string fallback;  // non-empty: Apply (why)
  // 1. The new sets (fresh names: contents that changed, new peer sets or dispatch sets),
  //    as `ipset restore` reads them ("create ..." then "add ..." lines; Update sends the
  //    same over netlink).
  std::string ipset;
  std::vector<std::string> created;
  // 2. Per family (0 = IPv4, 1 = IPv6): the `iptables-restore --noflush` input that
  //    declares (so flushes) and refills only the chains whose rules differ, adds new
  //    chains and deletes gone ones, and edits the dispatch chains' (NP-FORWARD, NP-D<k>)
  //    changed rules by position (-I/-D/-R N), in one transaction; "" when the family's
  //    rules stay.
  std::string restore[2];
  // 2'. What the backend runs instead of `restore`, per family: `switch_restore` makes the
  //    same change in one transaction that deletes nothing (a changed chain's new rules
  //    made as `<chain>-NEW` and the chain given a first rule `-g <chain>-NEW`, or `-j
  //    RETURN` when an old dispatch rule to it goes away; the dispatch chains' new rules
  //    inserted beside the old ones; gone chains made inert: the new program's verdicts at once,
  //    iptables.cc ChainRewrite has the argument); `cleanup`, deferred off the event's path
  //    (the next call waits for it), deletes the old rules and chains, renames or refills,
  //    leaving exactly what `restore` leaves. A deleting restore costs ~14 ms more than one
  //    that only adds (bench/RESULTS.md).
  std::string switch_restore[2];
  std::string cleanup[2];
  int chains_written[2] = {0, 0};
  int chains_deleted[2] = {0, 0};
  // 3. The sets no rule names any more, destroyed last.
  std::vector<std::string> destroyed;
};
absl::StatusOr<RulesPlan> PlanRulesUpdate(const ir::CompiledPolicy& previous,
                                          const ir::CompiledPolicy& next,
                                          uint32_t generation = 0);

// The same from a delta of `previous` (UpdateDelta's plan, made from the delta alone):
// element-only with the same conditions, or `fallback` says why UpdateDelta hands the next
// program to Update (which may still edit in place: this plan is the stricter one).
// InvalidArgument for a malformed delta. For tests: it builds the model of `previous`.
absl::StatusOr<UpdatePlan> PlanUpdateDelta(const ir::CompiledPolicy& previous,
                                           const ir::CompiledPolicyDelta& delta,
                                           uint32_t generation = 0);

// UpdateDelta's rules path for a delta that edits tables (a policy event; a pod of this node
// that brings its table or takes the last one away), whose endpoint's table chains come or
// go, or a pod delta whose element-only edit is refused (then `whole`: one switch, no
// `members`), planned from the delta and what `previous` installs with `generation` alone: the
// chains it can change rendered, the rest compared by nothing. `rules` is what
// PlanRulesUpdate(previous, next) plans (the same chains, the same new sets under the same
// names, the same sets destroyed); a pod delta (`pod`: range, identity pod or endpoint count
// edits) adds `members`, the element edits of the sets that keep their names (as
// PlanUpdateDelta shows them), made after the restores on the way in (its dispatch_first:
// its endpoint's dispatch goes in with the restore, then an RCU grace period) and before them
// on the way out; its `dispatch` edits go with the restores. `fallback`: why UpdateDelta
// hands the delta to the whole-model path instead. InvalidArgument for a malformed delta.
// For tests: it builds the model of `previous`.
struct DeltaRulesPlan {
  std::string fallback;
  RulesPlan rules;
  bool pod = false;
  UpdatePlan members;
  // A pod delta planned as one switch (`members` empty): every set whose members change is
  // a new set, so `rules` is PlanRulesUpdate(previous, next)'s plan.
  bool whole = false;
};
absl::StatusOr<DeltaRulesPlan> PlanRulesUpdateDelta(const ir::CompiledPolicy& previous,
                                                    const ir::CompiledPolicyDelta& delta,
                                                    uint32_t generation = 0);

// The set name of a peer set in a family (0 = IPv4, 1 = IPv6) and generation.
std::string SetName(uint32_t generation, int family, uint32_t peer_set);
// The dispatch set of table `table` (its local addresses in the family): "np-g<G>-v4-t<T>"
// (at most 29 characters: ipset allows 31).
std::string DispatchSetName(uint32_t generation, int family, uint32_t table);
// `-m comment --comment "..."` for user text: CommentText (escaped, cut to the comment
// match's 255 bytes), then backslashes doubled (iptables-restore reads a backslash inside
// quotes as an escape).
std::string CommentMatch(absl::string_view text);

}  // namespace iptables
}  // namespace np::backends

#endif  // NP_BACKENDS_IPTABLES_IPTABLES_H_
