// np/backends/nft/nft.h — the nftables backend: the compiled IR as one `table inet np`
// ruleset for `nft -f`, applied atomically in the node's network namespace.
//
//   std::unique_ptr<np::backends::Backend> nft = np::backends::MakeNftBackend();
//   absl::StatusOr<std::string> text = nft->Render(ir);   // what `nft -f` reads, or an error
//                                                         // if it is past a limit or budget
//   absl::Status s = nft->Apply(ir, {{}, "node-netns"});  // one transaction
//
// The program (rule count grows with policies; address elements with pods, once):
//   map identity4/identity6   address interval -> `jump id_<n>`: every address of the family,
//                             adjacent ranges of one identity merged; identities no rule
//                             names share `id_other`.
//   chain id_<n>              writes identity n into the high half of the packet mark
//                             (meta mark & 0x0000ffff | n << 16); id_other writes 0xfffe.
//   set peers_<n>             a peer set of the IR as mark intervals (n << 16 .. n << 16 |
//                             0xffff; consecutive identities merged), when it has more than
//                             kMaxInlineMarkRuns of them; a peer set of fewer intervals
//                             (one ipBlock, one selector's pods) is written into the rules
//                             instead, one rule per interval. Why: the kernel finds a set
//                             by name with a linear walk of the table's sets
//                             (nf_tables_api.c nft_set_lookup), so creating N named sets
//                             and the N rules that name them costs N^2 (8,000 peer sets:
//                             4 s, most of it in that walk; bench/RESULTS.md).
//   map egress4/6, ingress4/6 endpoint address -> `jump t<n>_egress` / `jump t<n>_ingress`,
//                             only for endpoints restricted in that direction (isolated by
//                             NetworkPolicy, or with policy-tier rules: util.h Restricted).
//   chain t<n>_<direction>    in the order of proto/compiled.proto's "Policy tiers": the
//                             peer's identity is in the mark (the forward chain looked it
//                             up); with tier rules and rules naming peers, drop a miss
//                             (0xffff), which no peer set holds and which would otherwise
//                             slip past a Deny to a later Allow or the default;
//                             the admin rules in order (Allow `return`, Deny `drop`, Pass
//                             `goto t<n>_<direction>_np`, commented "admin[i] <origin>");
//                             then the NetworkPolicy stage — when isolated, per (protocol,
//                             port range, peer set) the rules that `return` (allowed; go on
//                             to the other side), then `drop`; else the baseline rules
//                             (Allow and Pass `return`, Deny `drop`), then the chain's end
//                             (allowed). A tier rule without protocol has no l4proto match.
//   chain t<n>_<direction>_np the NetworkPolicy stage, on its own when an admin rule can Pass
//                             (the main chain ends with `goto` to it).
//   chain forward             hook forward: `ct state established,related accept` first;
//                             then the mark's identity set to 0xffff ("miss"), the
//                             destination looked up in identity4/6, egress dispatch by
//                             source address; then "miss" again, the source looked up,
//                             ingress dispatch by destination address; policy accept (what
//                             no endpoint owns is not ours to judge). The lookups are here,
//                             not in each table chain, because a commit adding a `jump`
//                             element makes the kernel walk every vmap element each time
//                             a chain applying the vmap is reached (loop detection): per
//                             table chain, that made every pod event cost (tables x
//                             identity elements), 0.3 s at 1,000 endpoints.
// Endpoints are recognised by address (no interface names needed, so Render is a pure
// function of the IR): a pod that forges another pod's source address is judged as that pod,
// so a CNI pairs this with its usual source check (rp_filter, or a per-veth anti-spoof rule).
// The mark's high 16 bits are scratch for this program (identities < 65535); the low 16
// bits (kube-proxy's 0x4000/0x8000, ...) are kept. The forward hook sees pod-to-pod traffic
// when pods are routed (or bridged with bridge-nf-call-iptables); traffic from the node's
// own stack to its pods is not judged, as Kubernetes specifies.
// Render's text is a whole replace: it starts with `table inet np {}` + `delete table inet
// np` and then declares the table, all in one `nft -f` transaction. That is right for a
// first install and for recovery, but not for a live update: nf_tables registers the new
// base chain's hook (empty until the commit) before the old one and each base chain reads
// the generation on its own, and deleting a map deactivates its elements in the next
// generation. A packet that meets the new chain just before the commit (empty: accept) and
// the old chain just after it (its maps now empty: no endpoint matches, accept) passes
// neither program — the update test caught UDP probes of flows both programs deny getting
// through (2026-11-30).
// Apply therefore switches generations instead (SwitchText, RetireText): the new program's
// sets and regular chains are added under fresh names (suffix `_g<N>`) in one commit, and
// the base chain, which is never deleted, has its rules replaced to point at them in the
// next; a packet sees the old rules with the old, untouched sets or the new rules with the
// new ones. A third commit then deletes the old generation, which no rule reaches any more.
// A base chain whose hook differs from what np writes (another np version) gets the whole
// replace. Conntrack entries survive both ways, so established connections keep flowing.
// Why the sets go one commit ahead of the rules that look them up: nf_tables makes a
// commit's rules live when it flips the generation, but installs a NEW interval set's lookup
// structure only after that flip, at the end of the same commit; a packet in between finds
// nothing in the new set (the identity lookup misses: fail closed, an allowed flow dropped).
// The update test saw it as one UDP probe of a both-allowed flow unanswered (CI, 2026-12-01);
// blasting UDP through a base chain switched to a map created in the same commit dropped a
// packet in 19–23 of 300 switches on this VM's kernel (6.18), and none when the map came one
// commit earlier; a regular chain rewritten to look up an interval set declared in its commit
// dropped 6 in 300; editing the elements of a live interval map (retargets, splits, merges)
// dropped none in 1,000 commits (np/backends/nft/set_commit_window.sh repeats the check on
// any kernel). So every commit np makes follows one rule: a set it declares
// is looked up only by rules of a later commit (the switch here; PlanInPlaceUpdate's
// `sets_first`), and a live set whose elements change is edited, not declared again.
//
// Why pod events still validate the whole table (issue 13, checked on 6.18 and nft 1.0.6):
// a commit that adds an element whose data is a jump or goto, or adds a rule, makes the
// kernel walk the whole table at commit (netlink.h MarksTableForValidation); deleting
// elements, flushing or deleting chains and sets, declaring sets, and adding data or
// accept/drop elements do not. Every pod event adds a jump element: its address's identity
// element (`jump id_<n>`, or `jump id_other` for an address that goes — the merged piece
// around it is added back), plus a dispatch element for an endpoint of this node; only
// dispatch deletions and deferred deletions commit without (DeltaStats validating_commits;
// nft_test PodEventCommitsThatMarkTheTableForValidation). A shape without verdict elements
// per pod needs the address's identity written into a register or the mark by a data map:
// nft's text cannot say either (1.0.6 refuses `ip daddr map @m vmap @v` and `meta mark set
// meta mark & M | ip daddr map @m`: a binop's right side must be constant), and the netlink
// forms the kernel accepts for
// them (a lookup into a 32-bit register feeding a vmap lookup; a bitwise OR of two
// registers, 6.13+) make `nft list` of the table abort on an assertion in 1.0.6 — which would
// abort np itself (the full path lists through libnftables) and every operator's listing.
// Writing the data map's value into the mark (`meta mark set ip daddr map @m`) would clobber
// the low 16 bits that other software owns. So the dispatch stays a verdict map per address
// until the nft np runs with can list register forms. What the identity map costs besides
// the validation: an interval map's commit is O(elements) by itself (10k addresses: ~0.5-1 ms
// for a data element, against ~0.05 ms for a hash map: validation_cost.py, bench/RESULTS.md).
// Two tables: the safety argument, written before the code (issue 13; not shipped yet — what
// np installs is still the one table above). nf_tables validates per table (nf_tables_validate
// walks the tables a transaction marked), so with the identity maps and identity chains in a
// table of their own ("I") and the dispatch maps, table chains and peer sets in another ("P"),
// an identity element's commit — every other-node pod event's — walks I alone: 0.4-0.6 ms
// against 1.5-10 ms for the bench's 1000/10k program (validation_cost.py --listing,
// bench/RESULTS.md, h75 and h80). Base chains by priority: I.dst (the mark's identity set to
// "miss", the destination looked up), P.egress (`ct state established,related accept`, the
// egress dispatch by source), I.src ("miss", the source looked up), P.ingress (established
// accept, the ingress dispatch by destination). An accept ends one base chain only (the next
// priority still runs), so each P chain accepts established flows itself; a drop anywhere is
// final. The mark carries an identity from an I chain to the P chain after it, as it does
// within `forward` now. A node-0 pod's dispatch entry is not helped: its jump names a table
// chain, which must be in the dispatch map's own table, so that commit still walks P (2.2 ms
// p50 split against 1.3 one-table at load 10: the dispatch walk is most of the validation).
// The facts the argument rests on (nf_tables on 6.18):
//  F1 a packet reads the generation bit when it enters a base chain (nft_do_chain), and every
//     rule it reaches from there (jumps, gotos, vmap targets) comes from that bit's blobs;
//  F2 each set or map lookup reads the generation when it runs (as argued above);
//  F3 a hook's base chains run in priority order in one RCU read section (nf_hook_slow):
//     across a commit C a packet reads the state before C in a prefix of its four base chains
//     and the state after C in the rest ("monotone"), and an RCU grace period between two
//     commits leaves no packet spanning both (membarrier, as PlanElementUpdate's plans wait).
//  F1 and case (4) below are checked by np/backends/nft/split_commit_window.sh: two OUTPUT
//  base chains switched 200 times between two programs that both deny a UDP flow, in one
//  commit, let 5 of 765,000 packets through (old first chain, new second); two one-sided
//  commits, 48,594 of 376,000 (the state between admits); the conjunction with a grace
//  period, one base chain holding both sides, and case (5)'s pairs of tables (the new pair
//  beside the old, a grace period, the old deleted), none (2026-12-02, 6.18, load 9-22).
// A packet's verdict is (egress side) AND (ingress side); each side reads one P chain and
// the mark its I chain wrote. With one table F1 gave one rule bit per packet; with two, each
// commit must give every monotone split (and every per-lookup mix of elements, as above) the
// old or the new verdict of each flow. By kind of commit:
//  (1) elements only, of one table (every pod-event commit: identity elements in I, dispatch
//      elements in P — PlanElementUpdate's and PlanDeltaUpdate's one- and two-commit plans,
//      PodTable's and Identity's pod parts): no rule differs between the bits, so the split
//      is invisible and the one-table argument (per-lookup answers) holds word for word. This
//      is what the split is for, and it needs nothing new.
//  (2) rules of I only: identity chains created (empty to an old reader: "miss", read as
//      id_other by the rules of the same P, as above) or retired (reached by no element of
//      the bit that lacks them): each identity answer is an old or a new one — covered.
//  (3) rules of P reachable from one side only (table chains of one direction, a peer set
//      only that direction's rules read): the other side is the same from either bit, the
//      changed side comes from one bit (F1) — old or new.
//  (4) rules of both sides (a policy with ingress and egress rules, a peer set both read, an
//      identity split): a packet can meet P.egress before the commit and P.ingress after it,
//      egress_old AND ingress_new, which admits a flow both programs deny (old denies on
//      ingress only, new on egress only); two one-sided commits in either order leave that mix
//      as the state between. Safe form: two commits with a grace period between, through the
//      conjunction — first each changed side chain runs its old rules, then its new ones (the
//      old rules kept in a chain of another name, jumped to first: the side allows what both
//      allow), then the new ones alone. Every monotone mix of the first commit lies between
//      old AND new and old, of the second between old AND new and new; old AND new is, per
//      flow, the old or the new verdict (they differ only where one denies), so every packet
//      gets one of the two. A commit that also touches I (PlanSplitDelta: id_N and its
//      elements with P's rules) goes in two: I's part first — P's rules name no N yet and read
//      it as id_other, the old verdict, as (2) — then P's after a grace period (one commit,
//      I.dst old with P.egress new, would read "miss" where the new rules expect N: a flow both
//      allow, dropped). Cost: a second commit and a grace period (membarrier: 16 ms p50 on
//      this VM at load 6.6) on such events.
//      So the in-place policy plans (PlanInPlaceUpdate, PlanPolicyDelta, PlanSplitDelta,
//      PodTable's table parts, PlanIdentityDelta's gains) must classify each commit by side
//      and take that form for both-sided ones; until they do, the split must send those to the
//      switch.
//  (5) the generation switch (Apply) renumbers identities, so one generation's marks mean
//      nothing to another's P: I.dst old with P.egress new reads an old identity as a new one
//      (any verdict). So a generation is a pair of tables named with it (np_g<N>, np_id_g<N>)
//      in one of two priority bands by N's parity, each pair's four chains consecutive, every
//      P reading only marks its own I wrote just before. The switch: C1 the new pair's I (maps,
//      identity chains, base chains; its lookups may miss in C1, as sets declared with their
//      lookups do, which nothing reads yet); a grace period (a P that ran after a new I chain
//      that was still empty would read the old pair's mark); C2 the new P's sets and maps
//      (one commit ahead, as above); C3 the new P's chains and base chains (empty to a packet
//      that entered them before C3: they allow, leaving the old verdict). From C3 every packet
//      runs both pairs, each on its own marks: old AND new, per flow the old or the new
//      verdict. After a grace period C4 deletes the old pair, its P before its I (its chains
//      still running for walkers inside, their maps' elements gone: they allow, leaving the
//      new pair's verdict).
//  Install: C1-C3 with no old pair (nothing of np judges before C3, as before a first
//  install today). Remove: a pair's P before its I, so no P outlives the I that writes its
//  marks. Fail closed: a commit is all or nothing; an I without its P judges nothing; a P
//  without its I (a hand deletion) would read marks no one wrote — so identities would go in
//  the mark as n + 1 (0 never written by I) and P.egress would start with `meta mark &
//  0xffff0000 == 0 drop` (capacity 65,533). Listing-based recovery and adoption list every
//  `inet np*` table: one whole pair is adopted; anything else (half a pair, an old single
//  table, more pairs) is replaced whole, as a foreign base chain is today. Explain reads the
//  program (pure): it names the pair and the four chains in order. Per packet: three more
//  base chains entered and two more established checks (validation_cost.py --packets on the
//  1000/10k program: within the noise of a load of 19, -1.7 to +2.5 us paired; to measure on
//  a quiet machine before shipping). What it would leave: a node-0 pod's
//  dispatch add still validates P (above); PlanMoveDelta (below) would put its E_d in P and
//  its identity chain in I — not argued for two tables.
// Capacity (Capacity(), `netpol compile --stats`): at most 65,534 identities (the mark
// layout: 0xfffe and 0xffff are "other" and "miss"); tier rules count as rules. nf_tables has no hard limit on rules, sets or elements (memory aside), but load
// time grows — with the square of the number of sets — so np keeps budgets: rules 150,000,
// sets 4,096, set elements 250,000, each about 10 s of `nft -f` on the reference VM
// (bench/RESULTS.md). Render and Apply refuse a program past a limit or budget
// (ResourceExhausted, with the numbers); BackendOptions::budgets raises a budget.
//
// Running nft: in-process through libnftables (dlopen("libnftables.so.1")), one context per
// network namespace on a thread of the backend's own that entered the namespace (setns moves
// only that thread); the `nft` binary when the library is missing. The backend remembers the
// program it installed in each namespace (keyed by the namespace's inode), so Apply and
// Update do not list the kernel; after any error it lists again.
// In-place element edits (the two lines below) skip libnftables: each transaction goes to
// the kernel as one raw nf_tables netlink batch (netlink.h) on a NETLINK_NETFILTER socket
// opened in the namespace, naming the ruleset generation np expects (NFNL_BATCH_GENID). Why:
// libnftables dumps its whole cache (every chain, set and interval element, ~500 KB at
// 1,000 pods) before every command; the batch is the commit alone. A batch refused for its
// generation (another writer committed) is sent again at the kernel's; one the kernel
// refuses otherwise goes to libnftables, then to the full path. NP_NFT_NO_NETLINK=1 turns
// the netlink path off (comparisons, tests of the fallback).
// The whole path (Apply's two commits: the switch and the retirement) goes the same way:
// SwitchBatch / RetireBatch carry exactly what SwitchText / RetireText say, as one batch
// each (netlink.h WholeBatch; the listing the kernel gives back is the one `nft -f` of the
// text gives, tested). A program the encoder does not cover, or a batch the kernel refuses,
// takes the text through libnftables; NP_NFT_TEXT_WHOLE=1 forces the text for the whole
// path only. `compile --backend nft` (Render) prints the text: it is still what np installs.
//   std::unique_ptr<Backend> nft = MakeNftBackend();
//   nft->Apply(ir, where);                   // generation switch
//   nft->Update(ir, next_ir, where);         // element edits when safe (PlanElementUpdate),
//                                            // else a policy event in place (PlanInPlaceUpdate)
//   nft->UpdateDelta(ir, delta, where);      // the same edits from the delta (PlanDeltaUpdate;
//                                            // a policy event's: PlanPolicyDelta, one
//                                            // splitting an identity: PlanSplitDelta; a pod
//                                            // event's with tables: PlanPodTableDelta; a
//                                            // node-0 pod into another class: PlanMoveDelta)
//
// Thread safety: Render and Explain are pure; Apply, Update and Remove may be called from one
// thread at a time per backend instance (libnftables calls are serialised process-wide).
#ifndef NP_BACKENDS_NFT_NFT_H_
#define NP_BACKENDS_NFT_NFT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "np/backends/backend.h"
#include "np/backends/nft/netlink.h"
#include "proto/compiled.pb.h"

namespace np::backends {

std::unique_ptr<Backend> MakeNftBackend(const BackendOptions& options = {});

namespace nft {

inline constexpr char kTableName[] = "np";

// Peer sets of at most this many mark intervals are matched in the rules, not by a set.
inline constexpr size_t kMaxInlineMarkRuns = 4;

// The program as data, for tests and benchmarks (Render prints it).
struct Set {
  std::string name;
  std::string type;   // "ipv4_addr : verdict", "mark", ...
  bool map = false;
  bool interval = false;
  std::string comment;
  std::vector<std::string> elements;
};
struct Chain {
  std::string name;
  std::string hook;   // "type filter hook forward priority filter; policy accept;" or empty
  std::string comment;
  std::vector<std::string> rules;
};
struct Program {
  std::vector<Set> sets;
  std::vector<Chain> chains;
  size_t rule_count() const;
  size_t element_count() const;
};

// The program for `ir`; InvalidArgument when the IR is malformed (indexes out of range,
// address ranges that do not partition the space, 65535 identities or more).
absl::StatusOr<Program> Build(const ir::CompiledPolicy& ir);
// `nft -f` input: the atomic-replace preamble and the table.
std::string Text(const Program& program);

// What a terse listing (`nft -t list table inet np`) says the kernel holds.
struct Installed {
  struct Object {
    std::string kind;  // "set", "map" or "chain"
    std::string name;
    std::string hook;  // a base chain's "type ... policy ...;" line; empty otherwise
  };
  std::vector<Object> objects;
  uint64_t last_generation = 0;  // the largest N of a `_g<N>` name; 0 when none
};
Installed ParseInstalled(const std::string& terse_listing);
// `program` with every set and regular chain renamed NAME_g<generation>, and every
// reference to them (`@set`, `jump`/`goto` in rules and map elements) with it. Base
// chains keep their names.
Program WithGeneration(const Program& program, uint64_t generation);
// Whether the installed base chains can take `next`'s rules in place: each base chain of
// `next` is absent or a base chain with the same hook line.
bool CanSwitch(const Installed& installed, const Program& next);
// The switch's two commits: kObjects, `next`'s sets and regular chains beside what is
// installed (no rule that runs names them yet); kBaseChains, each base chain declared,
// flushed and filled with `next`'s rules (which now reach the sets of the commit before).
enum class SwitchPart { kObjects, kBaseChains };
std::string SwitchText(const Program& next, SwitchPart part);
// The second commit: every set and chain installed that `next` does not have — chains
// flushed first (their jumps hold references), then sets and maps, then the chains. Empty
// when there is nothing to retire.
std::string RetireText(const Installed& installed, const Program& next);

// ---- Incremental updates (Backend::Update) -----------------------------------------------
// An in-place edit of the installed generation's maps, for an update that changes only map
// elements (pod events). Set elements are read per lookup, not per packet: while the kernel
// commits, one packet can get the old answer from one lookup and the new answer from another.
// A packet's verdict reads, per side, the dispatch entry of its own endpoint's address
// (egress4/6 by source, ingress4/6 by destination), the identity of the other end's address
// (identity4/6) and that identity's peer-set membership (rules, peers_<n>). The edit is safe
// when no packet can see two changed answers — then each packet's verdict is the old
// program's or the new one's:
//  - chains (names, hooks, rules), set declarations and peer sets are unchanged, so an
//    identity chain means the same thing in both programs and only address lookups change;
//  - at most one address per family changes its answer in any map (a packet has one family
//    and two different addresses, so no packet has a changed address at both ends), and in
//    the identity maps each change is of one address (a pod's /32 or /128) — the neighbouring
//    pieces of a merged interval are deleted and re-added with the same answer, in the same
//    transaction (the commit flips every element at once; other addresses read the same
//    target before and after);
//  - when only identity entries, or only dispatch entries, change: one transaction. A packet
//    from the changed address A reads one A-keyed lookup on each of its paths (its egress
//    dispatch, or the identity lookup of the other end's ingress chain), never both changed;
//  - when both change (a local pod added or deleted, or becoming selected): two transactions,
//    dispatch additions before the identity edits, or the identity edits before dispatch
//    deletions. In between, a packet from A meets the new egress side and the old ingress
//    side (packets to A: the old egress side, the new ingress side); A has no dispatch entry
//    in the program it is missing from, so that side allows everything there, and a flow both
//    programs allow (deny) is allowed (denied) in between. Between the two commits np waits
//    for an RCU grace period (membarrier(MEMBARRIER_CMD_GLOBAL), which is synchronize_rcu in
//    kernel/sched/membarrier.c) so that no packet whose hook walk began before the first
//    commit is still walking after the second (its lookups would mix old and new);
//  - everything else — rules or peer sets changed, identities renumbered, two or more
//    addresses of a family changed, a dispatch entry changed for an address whose identity
//    changes too, dispatch additions and deletions together with identity edits — needs the
//    generation switch (Apply).
// Identity chains' comments name some of their pods; they are not compared (an element edit
// cannot change a chain's comment), so after in-place edits they may name the pods of an
// earlier program until the next generation switch. Every other comment must be equal.
struct ElementPlan {
  // `nft -f` inputs to run in order, each one transaction; none when nothing changed.
  std::vector<std::string> transactions;
  // Wait for an RCU grace period between the two transactions.
  bool grace_period = false;
  // Why the edit is not safe (then `transactions` is empty and Apply must switch generations);
  // empty when the plan applies.
  std::string fallback;
};
// The plan from `installed` to `next`, both named for the installed generation
// (WithGeneration with the same N).
ElementPlan PlanElementUpdate(const Program& installed, const Program& next);
// ---- Policy events in place (Backend::Update, when PlanElementUpdate refuses) ------------
// A program whose identities, peer sets and tables keep their ids across an update
// (np::AlignNumbering, np/lower_align.h) names its objects alike in both programs:
// id_<n>, peers_<n>, t<n>_<dir>. Then a policy event changes few of them, and one
// transaction in the live generation can make exactly those changes (the generation switch
// rewrites every chain and set: 28-30 ms at 110 pods). The transaction, in this order:
// changed chains flushed, identity elements deleted, peer sets and chains that go (or are
// declared again) deleted; new chains declared; peer sets declared with their elements; the
// rules of new and flushed chains; identity and dispatch elements added. What it may change:
//  - the rules of regular chains (table chains, stage chains), chains that come or go;
//  - peers_<n> sets that come or go, or whose elements change (deleted and declared again
//    under the name: the rules that look it up are flushed and written again with it);
//  - identity4/6 elements, for an address whose target goes from id_other to an identity
//    chain the installed program lacks (a newly named identity), and id_<n> chains added;
//  - identity chains next drops (an identity no rule names any more, e.g. a policy deleted):
//    their addresses go to id_other and the chains are deleted in a second transaction
//    ("cleanup"), after an RCU grace period (membarrier, as PlanElementUpdate's two-commit
//    plans; Update and UpdateDelta leave it to the start of the next call, SettleCleanups).
//    Until then the new rules read such an identity's mark as they read id_other's
//    (no peer set or inline run of theirs holds it), so the first commit's state is the new
//    program's verdicts; in the second, every packet runs the new rules (the grace period saw
//    the old walkers out) and gets one of two answers they tell not apart;
//  - dispatch elements added (an endpoint newly restricted) that jump to a chain this
//    transaction creates;
//  - dispatch elements deleted (an endpoint no longer restricted, or gone), when the
//    transaction only deletes: no rule written, no set declared, no element added.
// Why one transaction is safe: nf_tables commits a batch all or nothing, flipping one
// generation bit (net->nft.gencursor). A packet's rules all come from the bit it read when
// its hook walk began (nft_do_chain picks chain->blob_gen_<bit> at every chain it enters);
// each set lookup reads the bit again, so a walk that began before the flip may find new
// elements after it. Such a packet ("old") runs the old program's rules, with old set objects
// (a deleted plain set keeps its elements for the readers still holding it; only maps are
// emptied, and np deletes none), old chains' old rules (a flushed or deleted chain keeps its
// old rule blob until the readers are done), and chains created in this commit empty (the
// kernel gives a new chain one empty blob for both bits, nf_tables_addchain; the commit
// fills the new bit only). Each new answer such a packet can get is one the old rules cannot
// tell from the old answer:
//  - an identity element id_other -> id_<b> (new chain, empty to it): the mark stays "miss",
//    and old rules treat "miss" and "other" alike — neither is in any peer set or inline run
//    — except the tier chains' miss drop, so an update with identity edits refuses when the
//    installed program has one (`meta mark 0xffff0000-0xffffffff drop`);
//  - a dispatch element to a new chain (empty to it): the chain returns at once, i.e. this
//    side allows, as the old program (no entry) did;
//  - no dispatch element where one was deleted: this side allows, as the new program does;
//    every other answer the packet reads is unchanged (the transaction changed nothing else
//    it can reach: deleted chains and sets are reached only through deleted elements), so a
//    flow both programs deny is denied by a side that did not change, and a flow both allow
//    has every side allowing.
// A packet that began after the flip reads the new bit and the new elements only: the new
// program. So each packet gets the old verdict or the new one. (As for every path here, a
// packet whose walk spans two commits is assumed away; PlanElementUpdate's two-commit plans
// wait a grace period for that.)
// Refused (the generation switch instead): a base chain or a map's declaration changes;
// any other identity element change (an address moved between two named identities: the old
// rules, or the new, tell those apart); a dispatch element pointing at a chain that exists
// (an old packet would run that chain's old rules for the endpoint), or deleted in a
// transaction that also writes (an old packet would meet "no entry" beside an old answer
// elsewhere that the new program changed);
// a chain dropped while an element or a kept rule still jumps to it; and an edit that writes
// at least as many rules and elements as the whole program has (the switch then costs no
// more). Chain comments are not rewritten (the kernel ignores a comment on a chain that
// exists, checked on 6.18): a table chain changed in place keeps the comment ("policies:
// ...") of the generation that created it, like identity chains after element edits.
struct InPlacePlan {
  // Peer sets the transaction's rules look up that are new: declared, with their elements,
  // in a commit of their own before it (nft.h: a set is looked up only by rules of a later
  // commit). Empty: none.
  WholeBatch sets_first;
  std::string sets_first_text;
  WholeBatch batch;  // the transaction (netlink.h; add_table false)
  std::string text;  // the same for libnftables (`nft -f`), when netlink cannot
  // A second transaction, after an RCU grace period, when an identity chain goes: its
  // addresses' elements retargeted to id_other and the chain deleted (empty: none).
  WholeBatch cleanup;
  std::string cleanup_text;
  size_t writes = 0;  // rules and elements written or deleted
  std::string fallback;  // why not (then `batch` and `text` are empty)
};
// The plan from `installed` to `next`, both named for the installed generation.
// NP_NFT_NO_IN_PLACE=1 makes Update skip it (comparisons with the generation switch).
// `whole`: the size (rules and elements) of the whole next program, when `next` is only the
// part of it the update touches (UpdateDelta's PlanPolicyDelta); 0: next's own.
InPlacePlan PlanInPlaceUpdate(const Program& installed, const Program& next, size_t whole = 0);

// The same commits as raw netlink batches (netlink.h WholeBatch), for Apply: SwitchText's
// objects and guard, its base chains and their flush, and RetireText's deletions.
// Unimplemented when the program has something the encoder does not know (then Apply runs
// the text).
absl::StatusOr<WholeBatch> SwitchBatch(const Program& next, SwitchPart part);
WholeBatch RetireBatch(const Installed& installed, const Program& next);
// What a listing of the table would report for `program` installed (sets, maps, chains and
// base chains' hook lines, no elements): lets Apply retire a generation it installed itself
// without listing the kernel.
Installed InstalledOf(const Program& program);

// ---- Updates from a delta (Backend::UpdateDelta) -----------------------------------------
// What the backend remembers of the installed program to edit its maps from a
// CompiledPolicyDelta alone, in time proportional to the delta: the identity maps' merged
// intervals and the dispatch maps' entries, indexed by address, and what decides whether the
// chains would change (which identities rules name, which table chains exist, how many
// selected endpoints each table has). Built once per full install (O(program)); kept in step
// by ApplyIndexEdit after each in-place edit.
struct DeltaIndex {
  struct Piece {
    std::string last;    // bytes
    std::string target;  // identity chain without generation suffix: "id_5", "id_other"
  };
  uint64_t generation = 0;                                // the installed `_g<N>`
  std::set<uint32_t> referenced;                          // identities some rule names
  std::set<std::pair<uint32_t, int>> chains;              // (table, 0 ingress / 1 egress)
  std::vector<int64_t> selected;                          // per table: selected endpoints
  std::map<std::string, Piece> identity[2];               // identity4/6: first -> piece
  std::map<std::string, uint32_t> dispatch[2][2];         // [direction][family]: addr -> table
  uint64_t elements = 0;                                  // set elements of the program
  uint64_t element_budget = 0;                            // 0: none
  // For policy deltas (PlanPolicyDelta): the chains (table, direction) whose rules render each
  // peer set (usable or not: a rule of an empty set is left out, so its chain changes when
  // the set does); per identity, how many rendered non-empty peer sets (not `all`) hold it
  // (`referenced` is those above zero); how many chains drop a lookup miss; the rule count.
  std::map<uint32_t, std::set<std::pair<uint32_t, int>>> users;
  std::map<uint32_t, uint32_t> identity_refs;
  uint64_t miss_drops = 0;
  uint64_t rules = 0;
};
// The index of `ir`'s program installed as generation `generation` (budget: the default).
absl::StatusOr<DeltaIndex> MakeDeltaIndex(const ir::CompiledPolicy& ir, uint64_t generation);
// How an in-place edit changes the index, applied once the kernel took the edit.
struct DeltaIndexEdit {
  std::vector<std::string> identity_erase[2];
  std::vector<std::pair<std::string, DeltaIndex::Piece>> identity_insert[2];
  std::vector<std::string> dispatch_erase[2][2];
  std::vector<std::pair<std::string, uint32_t>> dispatch_insert[2][2];
  std::vector<std::pair<uint32_t, int64_t>> selected;  // table, change
  int64_t elements = 0;
  // PlanPolicyDelta's: the tables' count now (0: unchanged), then per touched key its value
  // now — a peer set's users, an identity's count, whether a (table, direction) has chains.
  uint32_t tables = 0;
  std::vector<std::pair<uint32_t, std::set<std::pair<uint32_t, int>>>> users;
  std::vector<std::pair<uint32_t, uint32_t>> identity_refs;
  std::vector<std::pair<std::pair<uint32_t, int>, bool>> chains;
  int64_t miss_drops = 0;
  int64_t rules = 0;
};
// PlanElementUpdate's plan (same conditions, same transactions up to element order) for the
// program of ApplyDelta(delta, previous), read from `index` (what is installed, which must be
// `previous`'s program) and the slices of `previous` the delta replaces: never the whole
// program. A fallback also when the delta is invalid or does not fit the index (the full path
// refuses or recovers). `edit` gets the index's change when the plan applies.
ElementPlan PlanDeltaUpdate(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                            const ir::CompiledPolicyDelta& delta, DeltaIndexEdit* edit);
// PlanInPlaceUpdate's transaction (and cleanup) for a policy event's delta — tables and peer
// sets replaced or appended, endpoints' `table`/`selected` changed — planned from `index` and
// the items of `previous` the delta replaces, not from whole programs: the touched objects
// (the chains of the tables the delta names or whose endpoints change, and of the tables
// whose rules name a replaced peer set; those peer sets' named sets; the identity chains of
// identities named anew or no longer; the identity map pieces around such identities' ranges;
// the moved endpoints' dispatch entries) are rendered as BuildProgram renders them, before
// and after, and handed to PlanInPlaceUpdate as two partial programs, so that the same
// rules decide what is safe (nft.h above). What the partial programs cannot show is checked
// here from the index: a table chain that goes (its endpoints' dispatch entries would go with
// it), an identity named anew while some chain drops a lookup miss. A chain that comes for a
// table whose endpoints stay (a policy gains a direction) gets their dispatch entries, found
// by one pass over the endpoints. A fallback also for a delta with pod
// parts (ranges, identities' pods, endpoints added, removed or readdressed). Cost: the
// touched objects, plus one pass over the address ranges when an identity is named anew or
// no longer (to find its ranges), and one over the endpoints when a table gains a direction. `edit` gets the index's change when the plan applies.
InPlacePlan PlanPolicyDelta(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                            const ir::CompiledPolicyDelta& delta, DeltaIndexEdit* edit);
// A pod delta that brings or retires a table (np/lower_delta.h: the first pod of a target
// class on the node, or a table's last endpoint leaving): address ranges and identities' pods
// (the pod part, PlanDeltaUpdate's element edits) with tables, peer sets and endpoints coming
// or going (the table part, PlanPolicyDelta's transaction, where an endpoint may also come
// with the chains it jumps to or go with them). One address A (per family) changes: its
// dispatch entries (A's own side: its egress by source, its ingress by destination) and its
// identity element (the other side's view of A). The two must not be seen in the mix the
// forward chain's order makes dangerous: it reads A's egress dispatch BEFORE A's identity
// (a packet from A), and A's identity (as destination) BEFORE A's ingress dispatch (a packet
// to A). For an endpoint coming, the bad mix is A's old side (no entry: allow) with A's new
// identity N under rules that know N: a flow that A's new egress denies and B's ingress
// allows for N but not for A's old identity is denied by both programs and passed by the mix.
// For an endpoint going, it is A's old identity with A's new side (no entry).
// The one-commit form (the default; NP_NFT_POD_TABLE_TWO_COMMITS=1 turns it off):
//  - an endpoint comes: one transaction holds the table part (its chains, created in it, and
//    A's dispatch entries to them; its new peer sets a commit ahead, as always) and the pod
//    part, with A's identity element pointed not at id_N but at an alias chain idp_N created
//    in the same transaction (same rule: mark N). A packet that began before the commit
//    ("old") runs old rules, and the kernel gives a chain created in a commit one empty rule
//    blob for both generation bits, filling only the new one (nf_tables_addchain,
//    nf_tables_commit_chain): so an old packet that reads the new elements meets A's table
//    chains empty (this side allows, as A's old "no entry" did) and idp_N empty (the mark
//    stays "miss"). Old rules treat "miss" as they treat id_other — neither is in any peer
//    set or inline run — so the form is taken only when A's old identity element is id_other
//    and no tier chain drops a miss (`meta mark 0xffff0000-0xffffffff drop`); then an old
//    packet gets exactly the old verdict whatever it reads, and a packet that began after
//    the commit reads only new elements and new rules: the new verdict. The aliases are
//    retired past a grace period, with the cleanups (the next call: A's element retargeted
//    idp_N -> id_N, both marking N, and idp_N deleted);
//  - an endpoint goes: one transaction holds the pod part (A's identity elements) and a
//    flush of every chain the table part deletes (A's table chains, their stage chains, an
//    identity chain only A's old element reached). A's dispatch entries stay. An old packet
//    runs those chains' old rules (a flushed chain keeps its old blob for the old bit) with
//    every other chain unchanged (the table part of a leaving endpoint only deletes:
//    PlanInPlaceUpdate), so A's side is the old one whatever A's identity reads: a packet
//    to A gets C's egress for A's old or new identity with A's old ingress, one from A A's
//    old egress with B's ingress for either identity — both programs' common verdicts (a
//    flow both deny is denied by A's old side or by the other side for the new identity,
//    which the new program's "no entry" for A leaves alone). A packet that began after the
//    commit meets A's chains empty: "no entry", the new program's answer. The table part
//    (dispatch entries, the emptied chains, their peer sets) and its cleanup are deferred
//    past a grace period, as cleanups are: they change no verdict.
// Refused into the two-commit form: a table part that also edits identity elements (an
// identity named anew) or retires one on the way in, an old identity element other than
// id_other, a miss drop; on the way out, a table part that writes anything (rules, sets,
// elements: deferred, it may only delete).
// The two-commit form (the order PlanDeltaUpdate's two-commit plans follow), an RCU grace
// period between:
//  - an endpoint comes: the table part first — its table's chains, peer sets and the identity
//    chains they name anew, created unreachable, and the endpoint's dispatch entries to them
//    (new chains: an old packet meets them empty and allows, as the old program did: nft.h
//    above) — then the pod part, its addresses' identity edits;
//  - an endpoint goes: the pod part first, then the table part, which only deletes (the
//    endpoint's dispatch entries, the chains no entry or rule names any more, their peer
//    sets: PlanInPlaceUpdate takes dispatch deletions only in a transaction that writes
//    nothing, so an old packet's answers are old ones or the leaving endpoint's "no entry",
//    which is the new program's for its side); identities no longer named retire in the
//    cleanup as for policy deltas.
// Between the commits the kernel holds the state a two-commit pod edit holds there (the
// endpoint dispatched, its addresses not yet or no longer its identity's), and nothing else
// any packet reaches has changed. Anything else refused (`fallback`): a delta appending
// identities, endpoints coming and going together, more than one address of a family
// changing (the pod part's rules), an endpoint coming to a table whose chains exist (a dispatch
// entry to an existing chain). `index` is left as it was: the caller applies both parts'
// edits in commit order once the kernel took the event's commits. Cost: both planners' (the
// delta and the touched objects), plus copies of the delta's parts.
struct PodTablePlan {
  bool tables_first = true;   // an endpoint comes (else goes: the pod part first)
  InPlacePlan tables;         // the table part (and its cleanup, deferred as a policy delta's)
  DeltaIndexEdit tables_edit;
  ElementPlan pods;           // the pod part (identity edits only: no endpoint is in it)
  DeltaIndexEdit pods_edit;
  std::string fallback;
  // The one-commit form, when `one_commit`: `commit` (its sets_first, then its transaction)
  // is the event's; `later` the commits (batch and text each) deferred past a grace period,
  // in order. `two_commits`: why not, when not.
  bool one_commit = false;
  InPlacePlan commit;
  std::vector<InPlacePlan> later;
  std::string two_commits;
};
PodTablePlan PlanPodTableDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                               const ir::CompiledPolicyDelta& delta);
// A pod delta that appends identities, or names identities anew or no longer, without tables
// or endpoints (np/lower_delta.h: a pod relabelled into a label set no address carried, or
// back; a class's first pod coming, its last going; the pod of another node, or of this one
// when its table stays): address ranges and identities' pods (PlanDeltaUpdate's element
// edits) with peer sets that gain identities which have no address yet (the new class) or
// lose ones that have none any more (the class the pod left). One address A moves from
// identity X to N. Why not one commit: the element A -> id_N, N's chain and N's peer-set
// memberships must all be new to a packet, but a packet whose walk began before a commit runs
// the old rules while its lookups (the identity map, a live peer set edited in place: nft.h
// above) may already read new elements; it could meet A as N (chain id_N empty to it: "miss")
// under rules without N, or A as X after X left a peer set — a flow both programs allow,
// dropped. So:
//  1. the gains: each peer set that gains becomes old ∪ new (PlanPolicyDelta's transaction,
//     its new named sets a commit ahead), and the chains of identities named anew are
//     created. No address is a gained identity's yet: every packet's verdict is the old one;
//  2. A's identity element X -> N (PlanDeltaUpdate's element edit, one commit). A packet
//     runs old rules or (1)'s in each chain, and reads A as X or as N: (1)'s rules give every
//     mark but N's the old rules' memberships, and N's the new program's; no other answer
//     differs between the programs. So a packet that reads A as X gets the old verdict. One
//     that reads A as N read it after (2)'s flip, and enters every chain that judges that
//     mark (identity chain id_N, then its table chains: the lookup comes first) after it:
//     the kernel writes the rules of the generation it leaves into the next one's slot for
//     each chain a commit leaves alone, before the flip (nf_tables_commit_chain), so from
//     then on a packet of either generation bit meets (1)'s rules there, and id_N's rule —
//     the new verdict. Hence no grace period between (1) and (2), as PlanElementUpdate's
//     two-commit plans need: a packet that spans them meets no mix that matters;
//  3. the losses, left to the next call after a grace period (as PlanInPlaceUpdate's
//     cleanup): peer sets drop the members no address has any more and their chains go. No
//     packet then reads A as X, so dropping X changes no verdict.
// Without gains (no peer set gains: the relabel back into a class whose identity has other
// pods) (1) is skipped: the call makes one commit. Refused (`fallback`): tables or
// endpoints in the delta, a peer set gaining an identity that has addresses before or losing
// one that keeps addresses after (a policy change), anything PlanPodEdits or PlanPolicyDelta's
// transaction refuses (two addresses of a family changing, a tier chain's miss drop while an
// identity is named anew, ...). Cost: the delta, plus PlanPolicyDelta's for the touched
// chains and sets, twice; no pass over the program. `index` is left as it was: the caller
// applies the three edits in order once the kernel took (1) and (2), and (3) is deferred.
// NP_NFT_NO_IDENTITY_DELTA=1 makes UpdateDelta skip it (comparisons with the default path).
struct IdentityPlan {
  InPlacePlan gains;  // (1) (no text: none)
  DeltaIndexEdit gains_edit;
  ElementPlan pods;   // the addresses (2)
  DeltaIndexEdit pods_edit;
  InPlacePlan losses;  // (3), deferred (no text: none)
  DeltaIndexEdit losses_edit;
  std::string fallback;
};
IdentityPlan PlanIdentityDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                               const ir::CompiledPolicyDelta& delta);
// A pod of this node moving into another existing class (bench MoveLocal), in place: its
// address A (one a family) moves between two identities X -> Y whose chains exist before and
// after (id_other included), while its endpoint moves between two tables whose chains exist
// before and after, Tx -> Ty. Each of the two mixes, (Tx side, Y identity) and (Ty side, X
// identity), can give a verdict neither program gives (A -> B where B admits Y but not X, Tx
// allows it and Ty denies: old denies at B, new at A's egress, the mix Tx + Y allows). The
// forward chain reads A's egress dispatch before A's identity and A's identity (as
// destination) before A's ingress dispatch, so one commit of the elements lets a packet from A
// read (old dispatch, new identity) and one to A (old identity, new dispatch); two commits
// leave one mix as the state between. PlanPodTableDelta's alias (a chain created in the
// commit) does not help: it is empty to an old packet, which reads as "allow" for a side (A's
// old side is Tx) and "miss" for an identity (A's old one is X).
// The form (three commits, one grace period on the event's path):
//  (1) indirection chains, reached by nothing: E_d for each direction d whose entry changes
//      (`jump` Tx's chain of d; no rule when Tx has none: the side allows, as "no entry"
//      does) and P (Tx's identity's rule: mark X). A chain created in a commit has one empty
//      rule blob for both generation bits; the commit fills the new bit's slot only
//      (nf_tables_addchain, nf_tables_commit_chain). Call the bit after (1) b1, before it b0;
//  then an RCU grace period (membarrier): no packet that read b0 before (1) is still walking;
//  (2) one commit flips to b0: A's identity elements point at P (the merged piece around A
//      split, as PlanPodTableDelta's alias does) and A's dispatch entries of each changed
//      direction at E_d (deleted and added; an entry to E_d where A had none), and E_d and P
//      are flushed and get the NEW rules (`jump` Ty's chain of d or nothing; mark Y). A
//      rewritten chain's new rules go to the bit the commit flips to (b0, whose slot held
//      only the empty blob of (1)); its b1 slot keeps the old rules (nf_tables_commit_chain
//      writes only the next bit's slot, and frees the replaced blob after a grace period).
//      A packet walking across (2) read b1 (the grace period saw every b0 reader of before
//      (1) out): all its rules are b1's, and each lookup of A gives it the old element (Tx's
//      chain, id_X) or the new one (E_d, P), whose b1 rules are Tx's and X's: the old answer
//      either way, with every other element and chain unchanged — the old verdict. A packet
//      that began after (2) reads b0 and the new elements only: E_d and P's b0 rules, Ty and
//      Y — the new verdict. Neither ever meets E_d or P empty, so a tier chain's miss drop
//      never sees a miss from this form (no refusal on it, unlike PlanPodTableDelta's);
//  (3) deferred past a grace period (the next call, as cleanups are): A's elements pointed at
//      their new targets directly (Ty's chains, id_Y; an entry deleted where Ty has none), the
//      split pieces merged back, E_d and P flushed and deleted. Every packet then walking
//      began after (2) (the grace period): it reads the new elements (the new targets) or the
//      old (E_d and P, whose b0 rules a flush leaves for the readers of b0): Ty and Y either
//      way. The rest of the kernel is (2)'s.
// Why the grace period cannot leave the event's path: the kernel has two generation bits and
// the move needs three states of E_d and P (unreachable, the old answer behind new elements,
// the new answer); the readers of (1)'s old bit must be gone before (2) gives that bit the new
// rules. The sketch of this comment's earlier version (E and P pointed at in one commit, a
// grace period, then rewritten in a third) has the same grace period and one commit more.
// Keeping such chains for every endpoint in the program would take the wait off the path (a
// Build change for every install; not done). Both directions: A's ingress and egress entries
// are edited in (2) and (3) alike (each direction with its own E_d, a direction whose table
// stays untouched); both families: A's IPv4 and IPv6 elements point at the same E_d and P (one
// endpoint, one identity). An identity whose chain would be created or retired by the event
// (Y named by no rule before, X by none after) changes peer sets: such a delta is
// PlanIdentityDelta's or the switch's, refused here; so is a delta with appended
// identities, anything PlanDeltaUpdate's edits refuse but their order, a move where
// the identity or the side stays (PlanDeltaUpdate's own plans do it in one or two commits), and
// families that disagree.
// A table that comes or goes with the move (the old table Tx loses its last selected endpoint
// on the node, or the new one Ty gains its first: the bench's MoveLocal, both ways): the delta
// also retires Tx's chains and the peer sets only they read, or brings Ty's. That table part
// is PlanTables' (PlanPodTableDelta's) with A's own dispatch entries left out — the form above
// edits them — and it goes where no packet can meet it half done:
//  - Ty comes: its part goes in (1), beside E_d and P: Ty's chains (and stage chains), its new
//    peer sets a commit ahead (sets_first: the rule above for sets), and identities its sets
//    name anew — their chains created and their addresses' elements id_other -> id_N in the
//    same commit, PlanInPlaceUpdate's policy-event argument (an old packet meets id_N empty:
//    "miss", which old rules read as id_other; refused when a tier chain drops a miss). Only
//    E_d reaches Ty's chains, and E_d's rules jump Tx until (2): a packet between (1) and (2)
//    meets the old program. (2) leaves Ty's chains alone, so its commit copies their b1 blob
//    (filled by (1)) into the b0 slot before the flip (nf_tables_commit_chain): a packet that
//    began after (2) and follows E_d's b0 rule into Ty meets Ty's rules, never an empty chain.
//    (Ty's chains created in (2) instead would be as safe — created there they are filled for
//    b0, the only bit whose E_d blob jumps to them — but its new peer sets must still precede
//    the rules that read them by a commit, which (1) gives for free.)
//  - Tx goes: its part only deletes (Tx's chains flushed and deleted, its peer sets deleted;
//    anything else is refused: a table coming and another going in one move, element writes),
//    and it goes into (3)'s own transaction (a commit after it when it is more than flushes
//    and deletions), its cleanup after (an identity no rule names any more: its addresses to
//    id_other, its chain deleted). After the grace period every walking packet began after
//    (2): its E_d rule (b0) jumps Ty, A's elements point at E_d or at Ty — nothing it reads
//    reaches Tx or the identities only Tx's rules named. (Deleting Tx in (2), after E_d's
//    flush in the batch, would also be safe: a b1 packet that follows E_d's old blob into Tx
//    meets Tx's old blob — a flushed or deleted chain keeps it for the old bit until the
//    readers are done — and its peer sets are plain sets, which keep their elements for such
//    readers; the kernel test saw no verdict change with it. Deferred, it costs (2) nothing.)
// Not covered (the switch): a table coming and another going with one move (Tx the last
// endpoint's and Ty the first's), and identities appended. (A coming table under an appended
// id is planned like one whose id the lowering reuses; the tests use a reused id.) `tables_edit` is the table part's index edit: before `edit` when Ty comes
// (tables_first), after it when Tx goes. Cost: PlanTables' planning of the touched tables and
// peer sets (twice when Tx goes: to classify, then on the index after the move), and (1) one
// commit more when Ty brings peer sets of its own; NP_NFT_NO_MOVE_TABLES=1 refuses such
// moves (comparisons). Cost of the move itself: the delta (PlanDeltaUpdate's planning), three
// commits that validate the table (rules or jump elements added: netlink.h), one grace period.
// `edit` is the index after (3) (PlanDeltaUpdate's): the caller applies it once (2) is in, as
// PlanPodTableDelta's one-commit form does. NP_NFT_NO_MOVE_DELTA=1 makes UpdateDelta skip it.
struct MovePlan {
  InPlacePlan create;  // (1) (with a coming table: its part, its new sets a commit ahead)
  InPlacePlan commit;  // (2), after a grace period
  InPlacePlan retire;  // (3), deferred past a grace period
  std::vector<InPlacePlan> later;  // a going table's part, then its cleanup: after (3)
  bool tables_first = false;       // a coming table: tables_edit before edit (else after)
  DeltaIndexEdit tables_edit;      // the table part's index edit (none without one)
  DeltaIndexEdit edit;
  std::string fallback;
};
MovePlan PlanMoveDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                       const ir::CompiledPolicyDelta& delta);
// A policy event that splits an identity (np/lower_delta.h LowerPolicyChange: a policy whose
// peer tells some pods of an identity from the others appends an identity N for them, their
// addresses move to it, and tables and peer sets change to name it). Why not Update: that
// builds and diffs whole programs (13 ms at 110 pods, 35 ms at 1,000) to find the same
// transaction. Here the table part is planned from the delta as PlanPolicyDelta plans it,
// with the addresses read as the delta leaves them: N, named anew, gets its addresses'
// elements (id_other -> id_N, a chain this transaction creates) in that transaction, which
// PlanInPlaceUpdate's rules find safe (nft.h above: an old packet meets id_N empty, "miss",
// which old rules read as id_other; no tier chain may drop a miss). Refused (`fallback`):
// any address whose identity element changes otherwise (the pod part, planned after the table
// part, must have nothing left to do: an address moving between two named identities is a
// change both rule sets tell apart), endpoints coming or going, and whatever the table part
// refuses. One commit (`tables`: its new peer sets a commit ahead, its cleanup deferred);
// `index` is left as it was: the caller applies tables_edit then pods_edit.
PodTablePlan PlanSplitDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                            const ir::CompiledPolicyDelta& delta);
// `undo` (optional): set to the edit that puts `index` back as it was (for plans made on an
// index as an earlier edit leaves it, before the kernel took that edit).
void ApplyIndexEdit(const DeltaIndexEdit& edit, DeltaIndex* index, DeltaIndexEdit* undo = nullptr);
// `installed`'s identity and dispatch maps' elements rewritten from `index` (O(program)): the
// full path's PlanElementUpdate reads them after in-place delta edits. Dispatch elements come
// in address order (Build's are in endpoint order).
void MaterializeElements(const DeltaIndex& index, Program* installed);
// What UpdateDelta did on an nft backend (MakeNftBackend), for tests and benchmarks: calls
// that edited in place from the delta, calls that took the full path, and the last reason.
// Zeros for another backend.
// In-place transactions (UpdateDelta's and Update's) go to the kernel as raw netlink
// batches (netlink.h); `netlink_fallbacks` counts those that took libnftables instead (the
// batch could not be built or sent, or the kernel refused it: then libnftables is refused
// too when np's idea of the elements is wrong, and the full path lists the kernel),
// `netlink_aborts` batches refused because someone else had committed since np did (sent
// again at the kernel's generation).
struct DeltaStats {
  uint64_t in_place = 0;
  uint64_t policy_in_place = 0;  // of in_place: policy deltas (PlanPolicyDelta)
  uint64_t pod_table_in_place = 0;  // of in_place: pod deltas with tables (PlanPodTableDelta)
  uint64_t pod_table_one_commit = 0;  // of pod_table_in_place: in one commit (no wait)
  std::string last_two_commits;       // why the last one in place was not (PodTablePlan)
  uint64_t split_in_place = 0;  // of policy_in_place: policies splitting an identity (PlanSplitDelta)
  uint64_t identity_in_place = 0;  // of in_place: pod deltas with peer sets or appended
                                   // identities (PlanIdentityDelta)
  uint64_t move_in_place = 0;  // of in_place: a node-0 pod into another existing class
                               // (PlanMoveDelta: three commits, one grace period)
  uint64_t move_tables_in_place = 0;  // of move_in_place: with a table coming or going
  // Identity retirements (an in-place plan's cleanup) deferred past the call that planned
  // them, and committed at the start of the next call; cleanup_wait_ns: the time those calls
  // still waited for the grace period.
  uint64_t cleanups_deferred = 0;
  uint64_t cleanups_committed = 0;
  uint64_t cleanup_wait_ns = 0;
  uint64_t full_path = 0;
  std::string last_fallback;
  uint64_t netlink_batches = 0;
  uint64_t netlink_fallbacks = 0;
  uint64_t netlink_aborts = 0;
  uint64_t netlink_ns = 0;      // wall time in netlink batches (encode, send, the kernel, acks)
  uint64_t netlink_cpu_ns = 0;  // the calling thread's CPU time there (user and kernel)
  std::string last_netlink_error;
  // The whole path's commits (generation switch, retirement): sent as one netlink batch
  // each (SwitchBatch, RetireBatch), their wall time, and those that went to libnftables
  // (whole_text; whole_netlink_fallbacks of them because the batch could not be built or
  // the kernel refused it).
  uint64_t whole_netlink = 0;
  uint64_t whole_netlink_ns = 0;
  uint64_t whole_text = 0;
  uint64_t whole_netlink_fallbacks = 0;
  // Update (whole programs): calls done by element edits (PlanElementUpdate), by one
  // in-place transaction (PlanInPlaceUpdate; in_place_update_text of them through
  // libnftables), by the generation switch; what the last call did ("elements", "in place",
  // or "switch: " and both plans' reasons).
  uint64_t update_elements = 0;
  uint64_t update_in_place = 0;
  uint64_t update_in_place_text = 0;
  uint64_t in_place_netlink_ns = 0;  // wall time in their netlink batches (encode to acks)
  uint64_t update_switch = 0;
  std::string last_update;
  // In-place commits (UpdateDelta's and Update's: element transactions, in-place batches,
  // their new sets and deferred cleanups; not the generation switch, which always validates),
  // and those of them that mark the table for the kernel's whole-table validation at commit
  // (netlink.h MarksTableForValidation: a jump element or a rule added) — the O(ruleset)
  // part of a pod event's commit at 1,000 endpoints.
  uint64_t in_place_commits = 0;
  uint64_t validating_commits = 0;
};
DeltaStats DeltaStatsOf(const Backend& backend);
// Update and UpdateDelta leave an in-place plan's cleanup (identity chains no rule names any
// more, retired after an RCU grace period) to the start of the next call on the namespace;
// until then the kernel lists those chains beside the new rules (which never reach them).
// This commits every such cleanup now (tests that compare listings, benchmarks, shutdown).
// OK for another backend.
absl::Status SettleCleanups(Backend& backend);

// An ElementPlan transaction (`delete element inet np MAP { ... }` / `add element ... { KEY :
// jump CHAIN, ... }` lines, as PlanElementUpdate and PlanDeltaUpdate write them) as netlink
// edits, in the same order; identity4/6 (and their generations) are the interval maps.
// InvalidArgument for any other line.
absl::StatusOr<std::vector<SetElementEdit>> ParseElementTransaction(const std::string& text);

}  // namespace nft
}  // namespace np::backends

#endif  // NP_BACKENDS_NFT_NFT_H_
