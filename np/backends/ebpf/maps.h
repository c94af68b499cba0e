// np/backends/ebpf/maps.h — what the eBPF datapath's maps hold for one CompiledPolicy, as
// plain C++ values with the kernel's layouts (bpf/np_abi.h), before anything touches the
// kernel. The loader copies these entries into a new generation's maps; Render prints them;
// Explain replays the program's lookups on them (MapModel), so what it narrates is what the
// kernel would look up.
//
//   absl::StatusOr<MapContents> maps = BuildMaps(ir, /*generation=*/1);
//   MapModel model(*maps);
//   Decision d = model.Decide(NP_HOOK_TO_ENDPOINT, endpoint_id, packet);
//
// Thread safety: BuildMaps is a pure function; a MapModel is immutable after construction.
#ifndef NP_BACKENDS_EBPF_MAPS_H_
#define NP_BACKENDS_EBPF_MAPS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/backends/ebpf/bpf/np_abi.h"
#include "np/types.h"
#include "proto/compiled.pb.h"

namespace np::backends::ebpf {

// The generation number that follows `generation` (np_config.generation, moved on by every
// Apply and every in-place edit — each site calls this): generation + 1, except that
// NP_ANY_GENERATION (np_abi.h) is never returned — np_policy.c's ct_fresh reads it as "an
// np_ct entry of any generation counts", so as the live number it would let a
// connectionless flow recorded under any earlier generation pass undecided. The result has
// the other parity than `generation` always: the bank a run reads (np_endpoint_states,
// NP_TABLE_SLOT) and np_runs' count are by parity, and an edit writes the bank the next
// number names while runs read the live one's. So the reserved odd 0xffffffff is skipped
// together with 0 (even) after it: 0xfffffffe -> 1. 0 is otherwise a valid number (what
// NextGeneration(0xffffffff) gives, should a kernel hold it from a binary before this).
constexpr uint32_t NextGeneration(uint32_t generation) {
  const uint32_t next = generation + 1u;  // unsigned: wraps, defined
  return next == NP_ANY_GENERATION ? next + 2u : next;
}
static_assert(NextGeneration(1) == 2 && NextGeneration(0xfffffffdu) == 0xfffffffeu &&
                  NextGeneration(0xfffffffeu) == 1u && NextGeneration(0xffffffffu) == 0u,
              "NextGeneration: +1, past NP_ANY_GENERATION, the other parity");

// Map entries of one generation. np_endpoints_if is not here: it depends on the node's
// interfaces and is filled at Apply from the Attachment (ifindex -> endpoints[id]).
struct MapContents {
  np_config config{};
  std::vector<std::pair<np_endpoint_addr_key, np_identity_value>> ident_hosts;  // /32, /128
  std::vector<std::pair<np_lpm4_key, np_identity_value>> ident4;  // shorter prefixes
  std::vector<std::pair<np_lpm6_key, np_identity_value>> ident6;
  std::vector<std::pair<np_endpoint_addr_key, np_endpoint>> endpoints_addr;
  std::vector<np_endpoint> endpoints;  // by endpoint id (== index in ir.endpoints)
  // np_endpoint_states, by endpoint id: both banks the same (np_abi.h). MapModel reads the
  // bank of config.generation; an id past its end reads `endpoints` (hand-built contents).
  std::vector<np_endpoint_states> endpoint_states;
  std::vector<std::string> endpoint_names;  // "namespace/name", by endpoint id
  std::vector<np_table> tables;        // by table id
  std::vector<std::pair<np_port_key, np_port_value>> ports;
  std::vector<std::pair<np_tier_key, np_tier_ref>> tiers;
  std::vector<np_tier_value> tier_lists;  // by list id, each distinct list once
  // The longest list. Past NP_TIER_MAX_RULES a list keeps the first NP_TIER_MAX_RULES
  // rules and the true count, which the program denies on; Capacity reports it so that
  // Render and Apply refuse such a program.
  size_t longest_tier_list = 0;
  std::vector<np_member_key> members;

  size_t TotalEntries() const {
    return 1 + ident_hosts.size() + ident4.size() + ident6.size() + endpoints_addr.size() +
           endpoint_states.size() +
           tables.size() + ports.size() + tiers.size() + tier_lists.size() + members.size();
  }
};

// Checks the IR's references (identities, peer sets, tables, ports, CIDRs) and lowers it to
// map entries. Errors name the offending IR element.
absl::StatusOr<MapContents> BuildMaps(const ir::CompiledPolicy& ir, uint32_t generation = 0);

// An endpoint's np_endpoint_state (one bank): its table and selection, and per family the
// identity `identity_of(address)` gives all its addresses of the family (NP_IDENTITY_NONE:
// it has none, NP_IDENTITY_BY_ADDRESS: they differ). Addresses must parse (CheckIr).
np_endpoint_state EndpointState(const ir::Endpoint& e,
                                const std::function<uint32_t(const IpAddress&)>& identity_of);
// Both banks `state` (what a generation is loaded with, and an edit's cleanup writes).
np_endpoint_states BothBanks(const np_endpoint_state& state);
// The identity of `address` in `ranges` (sorted, disjoint: CheckIr), NP_IDENTITY_NONE when
// no range holds it. O(log ranges).
uint32_t RangeIdentity(const google::protobuf::RepeatedPtrField<ir::AddressRange>& ranges,
                       const IpAddress& address);

// An in-place edit of a live generation's identity maps (np_ident_hosts, np_ident_hosts6,
// np_ident4, np_ident6) that turns `from`'s entries into `to`'s, for a pod event that changes nothing
// else (Backend::Update; loader.h EditIdentities performs it).
//
//   absl::StatusOr<IdentityEdit> edit = PlanIdentityEdit(installed, next);
//   if (!edit.ok()) { /* edit.status().message() says why: load a new generation */ }
//
// Why the edit is safe. The program reads map entries one lookup at a time, and an edit is
// a sequence of single-entry updates, each atomic for a reader (hash and LPM updates
// replace an element under RCU). One program run at one hook decides both local sides of
// a packet (np_policy.c policy_allows) from: np_endpoints_if (self), np_endpoints_addr
// (the other end), np_config, the policy maps (np_tables, np_ports, np_tiers,
// np_tier_lists, np_members) and the identity of each end's address (identity_of:
// np_ident_hosts or np_ident_hosts6, then the LPM trie of the family). The plan is refused unless
//   (a) every map but the identity maps is the same in `from` and `to` (np_config's flags,
//       endpoints, their addresses and names, hence np_endpoints_if on the same
//       attachment; tables, ports, tiers, tier lists, members);
//   (b) per family at most ONE address changes identity (one pod added, deleted,
//       relabelled into another identity, or its address reused); identities renumbered,
//       a new shared identity, many pods: refused;
//   (c) a packet looks up the identity of that address at most once: its other end is a
//       different address of the same family, and when both ends are local pods (both
//       sides decided in one run) with the same address (a spoofed src == dst packet),
//       np_policy.c policy_allows reads that one address's identity once for both sides.
//       So a pod of this node may change identity in place too: the program reads its
//       identity from its endpoint state (np_abi.h np_endpoint_states), which the edit
//       switches with the bump (IdentityEdit::state_changes).
// Each address's identity, read by identity_of as a hosts lookup then an LPM lookup,
// must also never be anything but its old or its new one (in particular never "none",
// which tier rules deny). Within `from` and within `to` the LPM keys tile the address
// space without overlap (the segments of the ranges, maps.cc AppendSegments), and a host
// key (a single-address range) answers for its address before them, so an address has at
// most one host key and one LPM key on each side. A pod added or deleted inside a segment
// writes its host key alone. The edit goes:
//   1. host keys added (then a grace period when `barrier_after_host_adds`); LPM keys
//      added or changed, longest prefix first; host keys whose value changes, the last
//   2. `barrier_before_deletes` when a host key was added and an LPM key is deleted: an
//      address moving from an LPM key to a host key (a pod added into a range) could
//      otherwise be read as "no host key yet" before the add and "no LPM key any more"
//      after the delete — no identity at all. np_policy.c identity_of looks the host key
//      up again when both miss, which finds it where the loader's writes are seen in
//      order (loader.cc kWritesSeenInOrder: x86); elsewhere the loader waits for a grace
//      period here;
//   3. LPM keys deleted, then host keys deleted.
// While keys are only added, the old covering key of every address is still there: the
// LPM trie answers the longest of the old and the new covering key, i.e. one of the two,
// and a host key answers for its address first. An address whose host key is added reads
// the trie until then: its new LPM key may answer neither its old nor its new identity
// (see barrier_after_host_adds), else it reads old or new. While keys are only deleted, the new
// covering key is already there. So each identity lookup sees old or new, and by (b) and
// (c) at most one lookup of a packet can see a changed answer: the verdict of every packet
// is the old program's or the new one's.
// What the loader adds around the plan (loader.cc EditIdentities has the proof): a grace
// period between the writes of two edits (started after one, waited for by the next), so
// that no run mixes two edits and no element an edit freed is reused under a reader, and
// at the end np_config.generation = NextGeneration of it, as a new generation would have:
// connectionless flows that np_ct remembers are decided again (np_policy.c), and only by
// runs that saw the new identities.
struct IdentityEdit {
  // Step 1, in this order.
  std::vector<std::pair<np_endpoint_addr_key, np_identity_value>> host_adds;
  std::vector<std::pair<np_lpm4_key, np_identity_value>> lpm4_puts;  // longest first
  std::vector<std::pair<np_lpm6_key, np_identity_value>> lpm6_puts;  // longest first
  std::vector<std::pair<np_endpoint_addr_key, np_identity_value>> host_changes;
  // A grace period between host_adds and the LPM puts (every architecture): an address
  // that gains a host key reads the trie until then, and a run that read np_ident_hosts
  // before the add could read the trie after the puts. The trie holds segments (maps.cc
  // AppendSegments), so its new key over such an address may answer a third identity
  // (the segment of its neighbours, when the address was the last but one of a class: the
  // class's last address becomes a host key and the class leaves the trie). Rare: a pod
  // inside a segment leaves the trie as it was.
  bool barrier_after_host_adds = false;
  bool barrier_before_deletes = false;
  // Step 3.
  std::vector<np_lpm4_key> lpm4_deletes;
  std::vector<np_lpm6_key> lpm6_deletes;
  std::vector<np_endpoint_addr_key> host_deletes;
  // The addresses whose identity changes (at most one per family), as text; a pod of this
  // node is marked "(a pod of this node)".
  std::vector<std::string> changed_addresses;
  int remote_changes = 0;  // of them, addresses that are no pod's of this node

  // Pods of this node added or deleted (PlanIdentityEditFromDelta only): their
  // np_endpoints_addr entries, both families' keys of each. Added ones are written before
  // step 1, deleted ones after step 3; np_policy.c policy_allows looks the other address's
  // endpoint up again after reading its identity, which makes that order safe (see there).
  // Each added endpoint's entries carry an id no endpoint of the generation has now: first
  // `reusable_endpoint_ids` (taken from its back), then `next_endpoint_id` onwards; the
  // entries of the endpoints that stay are not written. Reusable ids are those of
  // endpoints deleted by an EARLIER edit (ebpf_backend.cc: why no run reads them).
  std::vector<std::pair<np_endpoint_addr_key, np_endpoint>> endpoint_adds;
  std::vector<np_endpoint_addr_key> endpoint_deletes;
  std::vector<std::string> added_endpoints, deleted_endpoints;  // "namespace/name"
  // added_values[i]: added_endpoints[i]'s np_endpoint (its id, table and flags), what its
  // interface's np_endpoints_if entry holds when it is attached in place.
  std::vector<np_endpoint> added_values;
  // How many of the added endpoints' ids were taken from `reusable_endpoint_ids` (its
  // last ones); the others are next_endpoint_id onwards.
  size_t reused_endpoint_ids = 0;

  // np_endpoint_states (np_abi.h): what the program reads of a pod of this node — its
  // table, its selection and its addresses' identity. Added endpoints' states, both banks,
  // written before their np_endpoints_addr entries (no run reads an id before an entry
  // names it). The states of endpoints that stay and change (a pod of this node
  // relabelled: its identity, and its table when it moves between tables): the bank the
  // bump's generation names gets `after` before the bump (no run reads it), the bump
  // switches every run to it at once, and both banks get `after` once no run of the old
  // number is left (the pending cleanup, PolicyCleanup::state_writes). The identity maps'
  // entries of a pod of this node are never read (np_policy.c address_identity), so their
  // writes in the same edit cannot be met half done.
  std::vector<std::pair<uint32_t, np_endpoint_states>> state_adds;
  struct StateChange {
    uint32_t id = 0;
    np_endpoint_state before{}, after{};
  };
  std::vector<StateChange> state_changes;

  size_t Writes() const {
    return host_adds.size() + lpm4_puts.size() + lpm6_puts.size() + host_changes.size() +
           lpm4_deletes.size() + lpm6_deletes.size() + host_deletes.size() +
           endpoint_adds.size() + endpoint_deletes.size() + state_adds.size() +
           state_changes.size();
  }
  bool EndpointsChange() const { return !added_endpoints.empty() || !deleted_endpoints.empty(); }
  // Keys of lpm4_puts / lpm6_puts that `from` lacks: with host_adds, how many entries
  // each map holds beyond `from`'s during the edit (its max_entries must leave the room).
  size_t new_lpm4_keys = 0;
  size_t new_lpm6_keys = 0;

  // How many entries each identity map gains (negative: loses).
  long HostsDelta() const {
    return static_cast<long>(host_adds.size()) - static_cast<long>(host_deletes.size());
  }
  long Lpm4Delta() const {
    return static_cast<long>(new_lpm4_keys) - static_cast<long>(lpm4_deletes.size());
  }
  long Lpm6Delta() const {
    return static_cast<long>(new_lpm6_keys) - static_cast<long>(lpm6_deletes.size());
  }
};

// The edit from `from` to `to`, or FailedPrecondition saying which condition above does
// not hold (the caller then installs a new generation). Costs O(entries of `from` + `to`).
absl::StatusOr<IdentityEdit> PlanIdentityEdit(const MapContents& from, const MapContents& to);
// The same edit from the IRs, without encoding them whole: (a) is checked on the IR parts
// the other maps are made of, and only the run of address ranges of each family that
// differs is checked (as CheckIr would) and encoded. `from` must be an IR that BuildMaps
// accepted (the one installed). Costs a comparison of the two IRs, no allocation per range.
// InvalidArgument when `to` is malformed where it differs.
absl::StatusOr<IdentityEdit> PlanIdentityEditFromIr(const ir::CompiledPolicy& from,
                                                    const ir::CompiledPolicy& to);

// The same edit for a delta of `from` (proto/compiled.proto CompiledPolicyDelta: next =
// ApplyDelta(delta, from)), from the delta alone: its range edits are checked (as ApplyDelta
// and BuildMaps check them) and only the ranges they replace and their new ranges are
// encoded. (a) holds by the delta's form (no table, peer set or flag changes; identities
// it appends are in no map but through its ranges, as in `to`) except for the endpoints. Endpoints added to or deleted from the node (an endpoint edit's
// endpoints matched by name) become IdentityEdit::endpoint_adds / endpoint_deletes when
// `next_endpoint_id` is given (kNoEndpointEdits: refused, as any endpoint change is).
// Refused (FailedPrecondition): an endpoint that stays but changes (addresses, selected,
// table), one with shared addresses (its quarantine involves another endpoint), an address
// that another endpoint holds or that one endpoint leaves and another takes in one delta,
// and ids past NP_IDENTITY_NONE - 1. The identity conditions (b) and (c) still hold: a pod
// added or deleted changes its addresses' identities, at most one per family.
// `local` holds the node's endpoint addresses (np_endpoints_addr's entries now):
// changed addresses among them are marked in IdentityEdit::changed_addresses.
// `from` must be the IR installed (BuildMaps accepted it). Costs O(size of the delta +
// local addresses changed into): never a walk of `from`. InvalidArgument when the delta is
// malformed (before anything is planned), FailedPrecondition when not in place.
inline constexpr uint32_t kNoEndpointEdits = 0xffffffffu;
absl::StatusOr<IdentityEdit> PlanIdentityEditFromDelta(
    const ir::CompiledPolicy& from, const ir::CompiledPolicyDelta& delta,
    const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local,
    uint32_t next_endpoint_id = kNoEndpointEdits,
    const std::vector<uint32_t>& reusable_endpoint_ids = {});

// What np_tier_lists holds where no table's entry points (its room, lists freed by an
// edit): a count past NP_TIER_MAX_RULES, which the program denies on (np_abi.h: fail
// closed), where the array's zeros would read as an empty list (no verdict).
inline constexpr np_tier_value kUnusedTierList = {NP_TIER_MAX_RULES + 1, 0, {}};

// In-place policy edits: a policy, namespace or tier event whose next program keeps the ids
// of the installed one (the aligned numbering of np/lower_align.h) changes tables and peer
// sets without loading programs (loader.h EditPolicy writes the plan).
//
//   PolicyLayout live = InitialLayout(installed_maps);       // what Apply loaded
//   absl::StatusOr<PolicyEdit> edit = PlanPolicyEdit(live, next_maps, NextGeneration(generation));
//
// Why a packet is judged wholly by the old or wholly by the new policy data. The endpoint
// maps name IR tables; the program turns one into the "physical" table that np_tables,
// np_ports and np_tiers key its entries by through np_table_slots, in the bank that the
// generation number it read once from np_config names (np_abi.h). Tier lists and np_ports
// values name physical peer sets, np_members is keyed by them. The plan:
//   1. writes every changed table's entries under a physical table no bank names, its tier
//      lists into list slots no live table names, the members of every changed peer set
//      under a peer set number never used before, and points the bank of
//      `next_generation` at the new tables (that bank is read by no run: every run that
//      read the generation before the live one ended before the writes — loader.cc);
//      a table changes when its entries do or a peer set it names does, so no table of
//      the new bank names an old peer set number that changed;
//   2. np_config.generation = next_generation: one write. A run that read the old number
//      reads only old entries (untouched until 3), one that read the new number only
//      entries complete before the write (x86 keeps the order; elsewhere a grace period);
//   3. after a grace period (no run of the old number is left): the other bank pointed
//      at the new tables too, the old entries deleted (PolicyCleanup), so the two banks
//      are equal again before the next edit or bump.
// Endpoints and identities are not touched: the caller refuses pairs whose endpoint
// entries, address ranges or np_config flags differ (identity edits are maps.h
// IdentityEdit). Tables past the installed ones are not named by any endpoint of such a
// pair and are not written.

// OK when `to` differs from `from` only in tables, peer sets and identities no address
// has: np_config's flags, the endpoints and the address ranges are the same (what the
// policy edit leaves alone); FailedPrecondition saying what differs. O(size of the IRs).
absl::Status PolicyOnlyChange(const ir::CompiledPolicy& from, const ir::CompiledPolicy& to);

// BuildMaps for a program whose address ranges are installed already (PolicyOnlyChange
// accepted it): everything but the identity maps (left empty), checked as CheckIr checks
// it, in time independent of the ranges. Errors name the offending IR element.
absl::StatusOr<MapContents> BuildPolicyMaps(const ir::CompiledPolicy& ir);

// max_entries of a generation's policy maps: room beyond `maps`' entries so that an edit's
// new entries fit beside the old ones (LPM tries and hashes are allocated as filled, or
// cheap; np_tier_lists and np_members are preallocated, so their room is a half more).
struct PolicyCapacity {
  uint32_t table_slots = 0;             // np_table_slots: two per IR table, 16 more tables
  uint32_t tables = 0, tier_lists = 0;  // arrays: physical numbers are below these
  uint32_t ports = 0, tiers = 0, members = 0;
};
PolicyCapacity PolicyRoom(const MapContents& maps);

// One IR table's entries with the table number zeroed, its tier lists by content and peer
// sets by IR number: what two programs' tables are compared by.
struct TableEntries {
  np_table value{};
  std::vector<std::pair<np_port_key, np_port_value>> ports;  // sorted by key bytes
  std::vector<std::pair<np_tier_key, uint32_t>> tiers;       // -> index into lists; sorted
  std::vector<np_tier_value> lists;                          // distinct, first-use order
  std::vector<uint32_t> peer_sets;                           // named (not ALL), sorted
  std::vector<uint32_t> named;  // every peer set an entry names, ALL ones too, sorted
};

// What a live generation's policy maps hold, by IR table and peer set, and where.
struct PolicyLayout {
  std::vector<TableEntries> tables;                // by IR table
  std::vector<uint32_t> table_slot;                // IR table -> physical table
  std::vector<std::vector<uint32_t>> table_lists;  // IR table -> physical list of each of its lists
  std::vector<std::vector<uint32_t>> peer_sets;    // IR peer set -> identities (sorted)
  std::vector<uint32_t> peer_set_slot;             // IR peer set -> physical peer set
  std::vector<uint32_t> list_refs;   // physical list -> tables naming it (size: capacity)
  std::vector<bool> table_used;      // physical table -> named by a bank (size: capacity)
  // IR peer set -> the IR tables above whose entries name it (TableEntries::named): the
  // tables a delta must rewrite when a peer set's members or `all` change.
  std::vector<std::vector<uint32_t>> peer_set_tables;
  uint32_t next_peer_set_slot = 0;   // past every physical peer set ever used
  // Physical peer sets that no IR peer set has any more: freed by CommitPolicyEdit (a
  // changed set's old number), taken again by a later edit before next_peer_set_slot.
  std::vector<uint32_t> free_peer_set_slots;
  size_t ports_entries = 0, tiers_entries = 0, members_entries = 0;
  PolicyCapacity capacity;
};
// Numbers that a long-lived agent keeps handing out, and what bounds each (an agent runs
// for months: nothing may only grow). "Reused after the grace period" means: freed by one
// edit's commit, taken only by a later edit, whose writes start after loader.cc
// StartEdit has waited for the runs (or the grace period) of the edit that freed it and
// written that edit's cleanup — so no run still reads the old meaning, and the old
// entries are gone before the new ones are written.
//   - Physical tables (np_tables, np_ports and np_tiers keys): table_used, reused after
//     the grace period; at most capacity.tables (2 per IR table + 16), else "no room" and
//     a new generation.
//   - Tier list slots (np_tier_lists): list_refs, reused after the grace period; bounded by
//     capacity.tier_lists likewise.
//   - Physical peer sets (np_members keys, tier rules, np_ports values): an edit gives
//     every changed peer set a number no live entry uses; the old numbers go to
//     free_peer_set_slots and are reused after the grace period. So the numbers in use
//     never exceed the installed peer sets plus the sets one edit changes, and
//     next_peer_set_slot stops growing once that is reached. (Before: every edit took new
//     numbers, and after 2^32 - 1 changed sets "peer set numbers are used up" reloaded.)
//   - Endpoint ids (np_endpoint_states index, np_endpoints_* values): an endpoint added in
//     place takes a deleted endpoint's id first (ebpf_backend.cc: freed after the edit
//     that deletes it, reused from the next edit on), so ids stay below the node's peak
//     endpoint count plus one delta's adds; the array's room (loader.cc IdentityRoom:
//     an eighth more + 64) is left only when the node really grows past it (before: after
//     room - endpoints pod ADDS, however many were deleted, "np_endpoint_states has no
//     room" loaded a new generation).
//   - Identity ids and IR table and peer set ids: the IR's (np/lower_align.h reuses
//     retired ones and bounds tombstones).
//   - np_config.generation: NextGeneration (above) at an edit or Apply, a __u32. np_ct
//     records it and np_policy.c only compares it for equality, so a number from before
//     the wrap is just another generation's; after the wrap a number comes back only
//     2^32 - 2 edits later, long after np_ct's connectionless entries (120 s) expired.
//     NP_ANY_GENERATION (0xffffffff) is never live: NextGeneration skips it and 0 with it,
//     keeping the parity alternation the banks and np_runs need (0xfffffffe -> 1).
//     (Before: `+ 1` everywhere, and after 2^32 - 1 edits the live number was
//     NP_ANY_GENERATION, passing a connectionless flow that np_ct recorded under any
//     earlier generation undecided.)

// The layout Generation::Load fills for `maps`: physical numbers are the IR's.
PolicyLayout InitialLayout(const MapContents& maps);

// Step 3: written after the grace period that follows the bump.
struct PolicyCleanup {
  std::vector<std::pair<uint32_t, uint32_t>> slot_writes;  // np_table_slots, the other bank
  std::vector<np_port_key> port_deletes;
  std::vector<np_tier_key> tier_deletes;
  std::vector<np_member_key> member_deletes;
  std::vector<uint32_t> lists_freed;  // np_tier_lists slots no table names: kUnusedTierList
  // np_endpoint_states: both banks the state after the edit (IdentityEdit::state_changes).
  std::vector<std::pair<uint32_t, np_endpoint_states>> state_writes;
  size_t Writes() const {
    return slot_writes.size() + port_deletes.size() + tier_deletes.size() +
           member_deletes.size() + lists_freed.size() + state_writes.size();
  }
};
struct PolicyEdit {
  // Step 1, in this order (none is read by a run before step 2).
  std::vector<np_member_key> member_adds;
  std::vector<std::pair<uint32_t, np_tier_value>> list_writes;  // physical list -> list
  std::vector<std::pair<uint32_t, np_table>> table_writes;      // physical table -> value
  std::vector<std::pair<np_port_key, np_port_value>> port_adds;
  std::vector<std::pair<np_tier_key, np_tier_ref>> tier_adds;
  // np_table_slots, the next bank (a PodPolicyEdit written policy first: the live bank
  // too, for tables no endpoint names yet).
  std::vector<std::pair<uint32_t, uint32_t>> slot_writes;
  PolicyCleanup cleanup;
  std::vector<uint32_t> changed_tables, changed_peer_sets;  // IR numbers
  // What the layout becomes once the edit is written (CommitPolicyEdit): only the changed
  // items, so that taking an edit costs its size, not a copy of the layout.
  struct TableChange {
    uint32_t table = 0;        // IR number
    TableEntries entries;      // its new entries
    uint32_t slot = 0;         // physical table
    std::vector<uint32_t> lists;  // physical list of each of entries.lists
  };
  struct PeerSetChange {
    uint32_t peer_set = 0;          // IR number
    std::vector<uint32_t> members;  // identities, sorted
    uint32_t slot = 0;              // physical peer set
  };
  std::vector<TableChange> new_tables;
  std::vector<PeerSetChange> new_peer_sets;
  uint32_t next_peer_set_slot = 0;
  // How many numbers the edit took from the back of live's free_peer_set_slots.
  size_t free_peer_set_slots_taken = 0;
  size_t ports_entries = 0, tiers_entries = 0, members_entries = 0;  // once cleaned up
  // How many entries np_tier_lists holds more (negative: fewer) once cleaned up.
  long lists_delta = 0;
  size_t Writes() const {
    return member_adds.size() + list_writes.size() + table_writes.size() + port_adds.size() +
           tier_adds.size() + slot_writes.size();
  }
};
// The plan from `live` to `next`'s policy maps, for the bump to `next_generation`.
// FailedPrecondition (load a new generation) when the maps lack the room.
absl::StatusOr<PolicyEdit> PlanPolicyEdit(const PolicyLayout& live, const MapContents& next,
                                          uint32_t next_generation);

// The same edit for a policy delta of `from` (proto/compiled.proto CompiledPolicyDelta with
// only `peer_sets` and `tables`: next = ApplyDelta(delta, from)), planned from the delta and
// `live` alone: the delta's tables and the installed tables that name a peer set whose
// members or `all` change (PolicyLayout::peer_set_tables) are encoded, nothing else, and
// what is written is what PlanPolicyEdit would write for next's maps up to physical
// numbers (peer sets no installed table names may keep members: no run reads them).
// `from` must be the program installed, `live` its layout. InvalidArgument when the delta
// is malformed (as ApplyDelta says), FailedPrecondition when it carries anything else, a
// tier list is past NP_TIER_MAX_RULES or the maps lack the room (load a new generation).
// Costs O(delta + tables rewritten + their peer sets' members): never a walk of `from`.
absl::StatusOr<PolicyEdit> PlanPolicyEditFromDelta(const PolicyLayout& live,
                                                   const ir::CompiledPolicy& from,
                                                   const ir::CompiledPolicyDelta& delta,
                                                   uint32_t next_generation);

// `layout` once `edit` (planned from it) is written, cleanup included.
void CommitPolicyEdit(PolicyLayout& layout, PolicyEdit&& edit);

// A pod delta that brings or retires a table (np/lower_delta.h: the first pod of a target
// class on the node, the last pod of a table leaving): endpoint, range and identity-pod
// edits with tables and peer sets, written in place as one identity edit and one policy
// edit in an order that keeps every packet's verdict the old program's or the new one's.
//   - policy_first: no endpoint of `from` names a table the policy edit changes (the
//     brought table, peer sets only it names). Its step 1 goes first, both banks of
//     np_table_slots pointing at those tables (no run reads them: no endpoint names them
//     yet), then the identity edit, whose endpoint writes then name complete tables, and
//     its one bump (loader.h EditIdentities with `policy_first`). A run meets the old
//     endpoints and addresses with policy data they never read, then the identity edit's
//     old-or-new states over policy data equal to next's where it reads it.
//   - else when no endpoint of `next` names a changed table (a retired table, peer sets
//     only it named): `policy` is NOT written (policy_first false), only the identity
//     edit. No run of `next` reads those entries, and writing them would cost a grace
//     period (no run may still hold the deleted endpoint naming the table). The maps keep
//     the retired table's and sets' old entries, and the layout, which describes the maps,
//     keeps them too: a later edit that reuses their ids compares the new contents with
//     them and writes what differs (nothing, when the same class comes back), a peer set's
//     members as usual. They take room only while their ids are tombstones, which
//     np/lower_align.h bounds. `policy` is what a write would be (for tests and reports).
// A pod relabelled into a label set no address carries yet (np/lower_delta.h: an identity
// appended, `delta.identities`, or an unused id reused through identity_pods), and one
// whose old identity loses its last address (retired), change peer sets whose tables
// endpoints name before and after the delta: refused above, they are written in place
// instead when each such installed peer set keeps `all` and only gains identities no
// address carries in `from` and loses identities no address carries in `next` (read from
// the identities' `pods` and `external`, proto/compiled.proto: an identity the delta
// appends or whose pods it edits from none, one whose pods it edits to none):
//   - `members`: np_members entries added into the peer sets' LIVE numbers (no table or
//     bank changes), before everything else of the delta. No run can tell: the program
//     asks np_members only about an identity it read for an address (np_policy.c), and no
//     address has the added ones yet;
//   - then the identity edit (and its bump) as above: each packet meets each end's old or
//     new identity (IdentityEdit (b), (c)). An identity carried before and after has the
//     same members in `from`, `next` and every state between (nothing else of it
//     changes), an added one has `next`'s, so a run that meets the new identity decides as
//     `next`, one that meets the old as `from`;
//   - the removed identities' entries are deleted in the cleanup, after the grace period
//     that follows the bump (loader.h EditIdentities: pending_cleanup), when no run that
//     read the old identity is left; until then they are read by no run either. They must
//     go before the next edit: lower_align.h reuses a retired identity id for another class.
// With `policy_first` the membership edit is merged into `policy` (`members` is empty);
// without, `members` is written first alone and `policy` left unwritten as above.
// Changed tables named both before and after the delta: a banked edit (below) when it may
// be one. FailedPrecondition when it may not (endpoints added or deleted, addresses of other
// nodes changing identity with it), np_members lacks the room, or as
// PlanIdentityEditFromDelta and PlanPolicyEditFromDelta refuse;
// InvalidArgument when the delta is malformed. Costs what the two planners cost and a walk
// of the node's endpoints (`from.endpoints`).
// A banked edit (`banked`): tables that endpoints name before AND after the delta change
// (a pod of this node relabelled into a new target class while its old table is retired or
// rewritten; a policy splitting or merging the identity of pods of this node). It is
// planned when every address whose identity changes is a pod's of this node and no
// endpoint is added or deleted: `policy` is a plain policy edit (PlanPolicyEdit's three
// steps: changed tables and peer sets under numbers no run reads, the bank of the next
// generation pointed at them), `identities` carries the moved pods' states
// (IdentityEdit::state_changes, written to the same next bank) and identity-map writes
// that no run of this node reads (a pod of this node's identity is read from its state,
// np_policy.c address_identity). Step 1 of both, then ONE bump switches every run from
// the old tables, peer sets, endpoint tables and identities to the new ones; the cleanup
// after the grace period points the other bank at them too. No program is loaded.
struct PodPolicyEdit {
  IdentityEdit identities;
  PolicyEdit policy;
  bool policy_first = true;
  PolicyEdit members;  // written first when !policy_first (else merged into `policy`)
  bool banked = false;
};
absl::StatusOr<PodPolicyEdit> PlanPodPolicyEditFromDelta(
    const PolicyLayout& live, const ir::CompiledPolicy& from,
    const ir::CompiledPolicyDelta& delta,
    const std::vector<std::pair<np_endpoint_addr_key, np_endpoint>>& local,
    uint32_t next_endpoint_id, uint32_t next_generation,
    const std::vector<uint32_t>& reusable_endpoint_ids = {});

// The fewest port prefixes covering [first, last] (0 <= first <= last <= 65535), as
// (first port of the block, prefix length 0..16).
std::vector<std::pair<uint16_t, int>> PortPrefixes(uint32_t first, uint32_t last);

// The maps as text a person can read (what Render prints).
std::string RenderMaps(const ir::CompiledPolicy& ir, const MapContents& maps);

// A packet as the program parses it (only what the policy decision reads).
struct PacketView {
  uint8_t family = NP_FAMILY_V4;
  uint8_t saddr[16] = {};
  uint8_t daddr[16] = {};
  uint8_t protocol = 6;
  uint16_t dport = 0;         // host order; meaningful for TCP/UDP/SCTP
  bool has_ports = true;      // false: ports unknown or not a port protocol
};

// One side's evaluation, with the map keys that decided it.
struct SideTrace {
  uint32_t endpoint = 0;
  uint8_t direction = NP_DIR_INGRESS;
  bool allowed = false;
  std::vector<std::string> steps;  // e.g. "np_tables[2].isolated[ingress] = 1"
};
struct Decision {
  bool allowed = false;
  bool self_traffic = false;  // allowed because the other end is the endpoint itself
  std::vector<SideTrace> sides;
};

// The program's lookups replayed on MapContents (np_policy.c: policy_allows).
class MapModel {
 public:
  explicit MapModel(const MapContents& maps);

  // Identity of an address by longest prefix; NP_IDENTITY_NONE when nothing covers it.
  // `prefix` (optional) receives the matching entry as text.
  uint32_t Identity(uint8_t family, const uint8_t* addr, std::string* prefix = nullptr) const;
  // The endpoint of a pod address of this node, or null.
  const np_endpoint* EndpointByAddress(uint8_t family, const uint8_t* addr) const;
  // An endpoint's state in the bank of maps().config.generation (np_abi.h
  // np_endpoint_states), or, past endpoint_states, what `endpoints` says.
  np_endpoint_state State(uint32_t endpoint) const;
  // The identity of an address as the program reads it: a pod of this node's from its
  // state, any other from the identity maps (Identity).
  uint32_t AddressIdentity(uint8_t family, const uint8_t* addr, std::string* prefix = nullptr) const;
  // The np_ports entry matching a full key, or null; `prefix` receives the matching key.
  const np_port_value* Port(uint32_t table, uint8_t direction, uint8_t protocol, uint16_t port,
                            std::string* prefix = nullptr) const;
  // The list of the np_tiers entry matching a full key (protocol NP_TIER_PROTO_OTHER: port
  // 0), or null when there is no entry or np_tier_lists has no such list.
  const np_tier_value* Tier(uint32_t table, uint8_t direction, uint8_t tier, uint8_t protocol,
                            uint16_t port, std::string* prefix = nullptr) const;
  bool Member(uint32_t peer_set, uint32_t identity) const;

  // The policy verdict at `hook` of the interface of endpoint `self` (no conntrack).
  Decision Decide(uint32_t hook, uint32_t self, const PacketView& p) const;

  const MapContents& maps() const { return maps_; }

 private:
  SideTrace Side(uint32_t endpoint, uint8_t direction, const PacketView& p,
                 const uint8_t* peer) const;
  // np_tier_verdict of np_policy.c: NP_TIER_ALLOW, NP_TIER_DENY or 0 (no verdict).
  // `identity` is asked only when a rule's peer set is not every address.
  int TierVerdict(uint32_t table, uint8_t direction, uint8_t tier, uint8_t protocol,
                  uint16_t port, const std::function<uint32_t()>& identity,
                  const std::string& who, std::vector<std::string>& steps) const;

  const MapContents& maps_;
  std::map<std::pair<int, std::string>, uint32_t> ident_;  // (family*1000+len, masked addr)
  std::map<std::string, uint32_t> hosts_;  // family byte + 16 address bytes
  std::map<std::string, const np_endpoint*> endpoints_;   // family byte + 16 address bytes
  std::map<std::pair<int, std::string>, const np_port_value*> ports_;  // (len, masked key)
  std::map<std::pair<int, std::string>, const np_tier_ref*> tiers_;  // (len, masked key)
  std::map<std::pair<uint32_t, uint32_t>, bool> members_;
};

std::string DirectionName(uint8_t direction);  // "ingress" / "egress"
std::string ProtocolName(uint8_t protocol);     // "TCP", "UDP", "SCTP", "proto 1"

}  // namespace np::backends::ebpf

#endif  // NP_BACKENDS_EBPF_MAPS_H_
