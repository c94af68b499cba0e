#include "np/backends/ebpf/ebpf_backend.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "np/backends/ebpf/loader.h"
#include "np/backends/ebpf/maps.h"
#include "np/backends/util.h"

namespace np::backends {
namespace {

using ebpf::BuildMaps;
using ebpf::MapContents;
using ebpf::MapModel;

// kernel/bpf/hashtab.c htab_map_alloc: the buckets (a power of two of 16-byte heads) must
// stay under 4 GiB, so a hash map holds at most 2^27 entries (max_entries above: E2BIG).
constexpr uint64_t kMaxHashEntries = uint64_t{1} << 27;
constexpr char kHashLimit[] =
    "kernel/bpf/hashtab.c: power-of-two buckets of 16 bytes under 4 GiB, 2^27 entries";
constexpr char kTrieLimit[] = "kernel/bpf/lpm_trie.c: none, memory aside (nodes allocated as added)";
constexpr uint64_t kEntryBudget = 2000000;
// np_tier_lists is a preallocated array of 520-byte lists: 100,000 are about 52 MB.
constexpr uint64_t kTierListBudget = 100000;

ir::BackendCapacity MapsCapacity(const ir::CompiledPolicy& ir, const MapContents& maps) {
  ir::BackendCapacity report;
  report.set_backend("ebpf");
  AddCapacityItem(report, "identities", static_cast<uint64_t>(ir.identities_size()),
                  NP_IDENTITY_NONE - 1, "np_abi.h: a __u32, 0xffffffff meaning none");
  AddCapacityItem(report, "np_ident_hosts", maps.ident_hosts.size(), kMaxHashEntries, kHashLimit);
  AddCapacityItem(report, "np_ident4", maps.ident4.size(), 0, kTrieLimit);
  AddCapacityItem(report, "np_ident6", maps.ident6.size(), 0, kTrieLimit);
  AddCapacityItem(report, "np_endpoints_addr", maps.endpoints_addr.size(), kMaxHashEntries,
                  kHashLimit);
  AddCapacityItem(report, "np_tables", maps.tables.size(), 0,
                  "kernel/bpf/arraymap.c: a u32 index, memory aside (preallocated)");
  AddCapacityItem(report, "np_ports", maps.ports.size(), 0, kTrieLimit);
  AddCapacityItem(report, "np_tiers", maps.tiers.size(), 0, kTrieLimit);
  AddCapacityItem(report, "np_tier_lists", maps.tier_lists.size(), 0,
                  "kernel/bpf/arraymap.c: a u32 index, memory aside (preallocated)",
                  kTierListBudget, "about 52 MB of kernel memory at 520 bytes a list");
  AddCapacityItem(report, "tier_list_length", maps.longest_tier_list, NP_TIER_MAX_RULES,
                  "np_abi.h NP_TIER_MAX_RULES: the program's bounded walk of one np_tiers list "
                  "(the longest list of Admin or Baseline rules matching one port piece)");
  AddCapacityItem(report, "np_members", maps.members.size(), kMaxHashEntries, kHashLimit);
  AddCapacityItem(report, "map_entries", maps.TotalEntries(), 0, "the sum of the above", kEntryBudget,
                  "about 5 s of loading on the reference VM at 2.7 us a map update, and about "
                  "80 bytes of kernel memory an entry of the preallocated hash maps");
  report.add_notes(
      "each map is created at its exact size, but the identity maps (np_ident_hosts, "
      "np_ident4, np_ident6) and np_endpoints_addr get an eighth more and 64 entries of "
      "room for in-place pod updates; np_endpoints_if gets as much room over the attached "
      "interfaces, for pods attached in place with their interface; the policy maps get "
      "room for in-place policy edits (np_tables, np_ports, np_tiers twice their entries, "
      "np_tier_lists and np_members a half more), and np_table_slots holds two entries a "
      "table");
  report.add_notes(
      "np_ct (LRU, 131,072 flows) and np_frag (LRU, 8,192 datagrams) are fixed and shared by "
      "all generations: past them the least recently used entries go");
  report.add_notes(
      "the programs are fixed (np_policy.c): what the verifier checks does not grow with the IR");
  return report;
}

class EbpfBackend : public Backend {
 public:
  explicit EbpfBackend(BackendOptions options) : options_(std::move(options)) {}
  std::string name() const override { return "ebpf"; }

  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const override {
    absl::StatusOr<MapContents> maps = BuildMaps(ir);
    if (!maps.ok()) return maps.status();
    return Measure(ir, *maps);
  }

  absl::StatusOr<std::string> Render(const ir::CompiledPolicy& ir) const override {
    absl::StatusOr<MapContents> maps = Checked(ir);
    if (!maps.ok()) return maps.status();
    return ebpf::RenderMaps(ir, *maps);
  }

  absl::Status Apply(const ir::CompiledPolicy& ir, const Attachment& attachment) override {
    absl::StatusOr<MapContents> maps = Checked(ir);
    if (!maps.ok()) return maps.status();
    return ApplyMaps(ir, std::move(*maps), attachment);
  }

  // In place when only the identity maps change, as maps.h PlanIdentityEdit allows (one
  // pod of another node added, deleted, relabelled or its address reused; or a pod of this
  // node relabelled into another identity with its endpoint entry unchanged); in place too
  // when only tables and peer sets change (PolicyInPlace: policy events with ids kept);
  // otherwise, or when this instance installed nothing yet (or for another attachment),
  // a new generation as Apply loads it. `previous` is trusted to be what this instance
  // installed last (Backend::Update's contract): only where `next` differs from it is
  // encoded and checked, so that a pod event costs a comparison of the IRs, not a
  // re-encoding of every map.
  absl::Status Update(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                      const Attachment& attachment) override {
    if (live_ == nullptr || !SameAttachment(attachment)) {
      last_update_ = "full: nothing installed by this instance for this attachment";
      return Apply(next, attachment);
    }
    if (Shape(previous) != installed_shape_) {
      // Not what this instance installed last (a caller breaking the contract): a cheap
      // guard only, but editing from the wrong base would be worse than a reload.
      last_update_ = "full: `previous` is not what this instance installed";
      return Apply(next, attachment);
    }
    absl::StatusOr<ebpf::IdentityEdit> edit = ebpf::PlanIdentityEditFromIr(previous, next);
    if (edit.ok() && !edit->state_changes.empty() && !ids_are_indexes_) {
      edit = absl::FailedPreconditionError(
          "a pod of this node changes identity and endpoint ids are no longer the IR's indexes");
    }
    if (!edit.ok()) {
      // Not a pod event: perhaps a policy event whose ids carry over (stable numbering).
      if (absl::Status s = ebpf::PolicyOnlyChange(previous, next); !s.ok()) {
        last_update_ = absl::StrCat("full: ", edit.status().message(), "; ", s.message());
        return Apply(next, attachment);
      }
      if (!PolicyInPlace(next)) return Apply(next, attachment);
      return absl::OkStatus();
    }
    if (!EditInPlace(*edit, Shape(next))) return Apply(next, attachment);
    MoveLocal(edit->state_changes);
    return absl::OkStatus();
  }

  // Update from a delta: the same in-place edit, planned from the delta alone
  // (maps.h PlanIdentityEditFromDelta) so that a pod event costs time proportional to
  // the ranges it replaces, not to the node's program; a pod delta that also brings or
  // retires a table with its identity edit (maps.h PlanPodPolicyEditFromDelta); a delta of
  // tables and peer sets alone as a policy edit (PolicyDelta). Whatever is not in place:
  // the next program built (copy + ApplyDelta) and loaded as a new generation.
  absl::Status UpdateDelta(const ir::CompiledPolicy& previous,
                           const ir::CompiledPolicyDelta& delta,
                           const Attachment& attachment) override {
    const bool policy_part = !delta.peer_sets().empty() || !delta.tables().empty();
    if (policy_part && delta.ipv4().empty() && delta.ipv6().empty() && delta.endpoints().empty() &&
        delta.identity_pods().empty() && delta.identities().empty()) {
      return PolicyDelta(previous, delta, attachment);
    }
    if (live_ == nullptr || attachment.netns != attachment_.netns) {
      return FullDelta(previous, delta, attachment,
                       "nothing installed by this instance for this attachment");
    }
    if (Shape(previous) != installed_shape_) {
      return FullDelta(previous, delta, attachment, "`previous` is not what this instance installed");
    }
    // Interfaces attached or detached in place: only those of pods the delta adds or deletes.
    // Most events (another node's pod, a relabel) keep every interface: one ordered compare.
    const bool same_interfaces = SameAttachment(attachment);
    const std::vector<EndpointInterface> attach =
        same_interfaces ? std::vector<EndpointInterface>() : Missing(attachment, attachment_);
    const std::vector<EndpointInterface> detach =
        same_interfaces ? std::vector<EndpointInterface>() : Missing(attachment_, attachment);
    // A pod delta that brings or retires a table, or relabels a pod into an identity new
    // to the addresses (maps.h PodPolicyEdit): its policy edit is written with the identity
    // edit, before or after it, its membership edit before it.
    absl::StatusOr<ebpf::IdentityEdit> edit = absl::UnknownError("not planned");
    std::optional<ebpf::PolicyEdit> policy;
    ebpf::PolicyEdit members;
    std::vector<uint32_t> changed_members;  // peer sets whose members change in place
    bool policy_first = true, banked = false;
    if (!policy_part) {
      edit = ebpf::PlanIdentityEditFromDelta(previous, delta, local_addresses_, next_endpoint_id_,
                                             free_endpoint_ids_);
    }
    // A pod of this node moved into a table the maps do not hold (one no endpoint named:
    // a policy edit leaves those unwritten) brings it as a pod added would.
    const bool brings_table =
        !policy_part && edit.ok() &&
        std::any_of(edit->state_changes.begin(), edit->state_changes.end(), [&](const auto& c) {
          return (c.after.flags & NP_ENDPOINT_SELECTED) &&
                 (c.after.table >= policy_.table_slot.size() ||
                  policy_.table_slot[c.after.table] == NP_IDENTITY_NONE);
        });
    if (policy_part || brings_table) {
      absl::StatusOr<ebpf::PodPolicyEdit> both = ebpf::PlanPodPolicyEditFromDelta(
          policy_, previous, delta, local_addresses_, next_endpoint_id_,
          ebpf::NextGeneration(live_->generation), free_endpoint_ids_);
      if (both.ok()) {
        edit = std::move(both->identities);
        policy = std::move(both->policy);
        policy_first = both->policy_first;
        banked = both->banked;
        members = std::move(both->members);
        changed_members = InPlaceMembers(*policy, members);
      } else {
        edit = both.status();
      }
    }
    if (!edit.ok()) {
      // A malformed delta touches nothing (Backend::UpdateDelta's contract).
      if (absl::IsInvalidArgument(edit.status())) return edit.status();
      return FullDelta(previous, delta, attachment, edit.status().message());
    }
    // A pod whose interface stays attached has an np_endpoints_if entry (OUTSIDE while it
    // is no endpoint): adding or deleting it changes what that interface's runs read as
    // self, which the in-place edit does not do. A pod added with its interface gets the
    // interface attached in place, one deleted with it detached; any other change of the
    // interfaces loads a new generation.
    std::vector<std::pair<std::string, np_endpoint>> attach_values;
    for (const EndpointInterface& i : attach) {
      auto it = std::find(edit->added_endpoints.begin(), edit->added_endpoints.end(), i.pod);
      if (it == edit->added_endpoints.end()) {
        return FullDelta(previous, delta, attachment,
                         absl::StrCat("the interface ", i.interface, " of ", i.pod,
                                      " is attached, its pod not added"));
      }
      attach_values.emplace_back(i.interface,
                                 edit->added_values[it - edit->added_endpoints.begin()]);
    }
    for (const EndpointInterface& i : detach) {
      if (std::find(edit->deleted_endpoints.begin(), edit->deleted_endpoints.end(), i.pod) ==
          edit->deleted_endpoints.end()) {
        return FullDelta(previous, delta, attachment,
                         absl::StrCat("the interface ", i.interface, " of ", i.pod,
                                      " is detached, its pod not deleted"));
      }
    }
    for (const std::vector<std::string>* names : {&edit->added_endpoints, &edit->deleted_endpoints}) {
      for (const std::string& name : *names) {
        for (const EndpointInterface& i : attachment_.interfaces) {
          if (i.pod == name && names == &edit->added_endpoints) {
            return FullDelta(previous, delta, attachment,
                             absl::StrCat("the interface of ", name,
                                          " is attached (np_endpoints_if would change)"));
          }
        }
        for (const EndpointInterface& i : attachment.interfaces) {
          if (i.pod == name && names == &edit->deleted_endpoints) {
            return FullDelta(previous, delta, attachment,
                             absl::StrCat("the interface of ", name,
                                          " stays attached (np_endpoints_if would change)"));
          }
        }
      }
    }
    // Deleted pods' interfaces first (their filters, then their entries), so that no
    // interface runs with its pod half gone from the maps.
    for (const EndpointInterface& i : detach) {
      if (absl::Status s = ebpf::DetachInPlace(*live_, i.interface); !s.ok()) {
        return FullDelta(previous, delta, attachment,
                         absl::StrCat("detaching ", i.interface, " in place failed: ", s.message()));
      }
      RemoveInterface(attachment_, i);
    }
    std::array<int, 6> shape = installed_shape_;
    for (int family = 0; family < 2; ++family) {
      for (const ir::RangeSliceEdit& e : family == 0 ? delta.ipv4() : delta.ipv6()) {
        shape[family] += e.ranges_size() - static_cast<int>(e.end() - e.begin());
      }
    }
    for (const ir::EndpointSliceEdit& e : delta.endpoints()) {
      shape[3] += e.endpoints_size() - static_cast<int>(e.end() - e.begin());
    }
    shape[2] += delta.identities_size();
    shape[4] += ApplyDeltaCount(delta.tables(), previous.tables_size());
    shape[5] += ApplyDeltaCount(delta.peer_sets(), previous.peer_sets_size());
    // A retired table's entries stay (maps.h PodPolicyEdit): only a brought one's count,
    // else the membership edit's.
    const long policy_change =
        !policy.has_value() ? 0
        : policy_first      ? PolicyEntriesChange(*policy, delta, previous)
                            : MembersChange(members);
    if (!EditInPlace(*edit, shape, policy.has_value() ? &*policy : nullptr, policy_first,
                     policy_change, &members)) {
      return Reload(previous, delta, attachment);
    }
    // Added pods' interfaces after their addresses: the entry, then the filters.
    for (const auto& [interface, value] : attach_values) {
      if (absl::Status s = ebpf::AttachInPlace(*live_, interface, value); !s.ok()) {
        last_update_ = absl::StrCat("full: attaching ", interface, " in place failed: ",
                                    s.message());
        return Reload(previous, delta, attachment);
      }
    }
    if (!attach.empty() || !detach.empty()) {
      absl::StrAppend(&last_update_, "; interfaces attached: ", attach.size(), ", detached: ",
                      detach.size());
    }
    attachment_ = attachment;
    if (edit->EndpointsChange()) {
      // The ids the edit took: reused ones from the back of free_endpoint_ids_, then new.
      free_endpoint_ids_.resize(free_endpoint_ids_.size() - edit->reused_endpoint_ids);
      next_endpoint_id_ += static_cast<uint32_t>(edit->added_endpoints.size() -
                                                 edit->reused_endpoint_ids);
      auto gone = [&](const np_endpoint_addr_key& k) {
        for (const np_endpoint_addr_key& d : edit->endpoint_deletes) {
          if (std::memcmp(&d, &k, sizeof(k)) == 0) return true;
        }
        return false;
      };
      // The deleted endpoints' ids, free for the NEXT edit on (see free_endpoint_ids_).
      const size_t free_before = free_endpoint_ids_.size();
      for (const auto& [k, v] : local_addresses_) {
        if (gone(k) && std::find(free_endpoint_ids_.begin() + static_cast<long>(free_before),
                                 free_endpoint_ids_.end(), v.id) == free_endpoint_ids_.end()) {
          free_endpoint_ids_.push_back(v.id);
        }
      }
      local_addresses_.erase(std::remove_if(local_addresses_.begin(), local_addresses_.end(),
                                            [&](const auto& e) { return gone(e.first); }),
                             local_addresses_.end());
      local_addresses_.insert(local_addresses_.end(), edit->endpoint_adds.begin(),
                              edit->endpoint_adds.end());
      ids_are_indexes_ = false;
    }
    MoveLocal(edit->state_changes);
    ++stats_.pod_in_place;
    if (!edit->state_changes.empty()) ++stats_.states_in_place;
    if (banked) ++stats_.banked_in_place;
    if (!edit->state_changes.empty()) {
      absl::StrAppend(&last_update_, "; endpoint states switched with the bump: ",
                      edit->state_changes.size(), banked ? " (banked with the policy edit)" : "");
    }
    if (!delta.identities().empty() || !changed_members.empty()) ++stats_.identities_in_place;
    if (!changed_members.empty()) {
      absl::StrAppend(&last_update_, "; identities ",
                      delta.identities().empty() ? "reused or retired" : "appended",
                      ", peer sets ", absl::StrJoin(changed_members, " "), " edited in place");
    }
    return absl::OkStatus();
  }
  const ebpf::DeltaStats& stats() const { return stats_; }

  const std::string& last_update() const { return last_update_; }
  uint64_t policy_deltas_in_place() const { return policy_deltas_in_place_; }

 private:
  // Sizes of an IR's parts: what Update checks `previous` against.
  static std::array<int, 6> Shape(const ir::CompiledPolicy& ir) {
    return {ir.ipv4_size(), ir.ipv6_size(), ir.identities_size(), ir.endpoints_size(),
            ir.tables_size(), ir.peer_sets_size()};
  }

  // local_addresses_ once `changes` are written: the endpoints' C++ values carry their
  // table and selection (what PlanPodPolicyEditFromDelta reads as the tables they name).
  void MoveLocal(const std::vector<ebpf::IdentityEdit::StateChange>& changes) {
    for (const ebpf::IdentityEdit::StateChange& c : changes) {
      for (auto& [k, v] : local_addresses_) {
        if (v.id != c.id) continue;
        v.table = c.after.table;
        v.flags = static_cast<uint8_t>((v.flags & ~NP_ENDPOINT_SELECTED) |
                                       (c.after.flags & NP_ENDPOINT_SELECTED));
      }
    }
  }

  // The full path of UpdateDelta: the next program loaded as a new generation.
  absl::Status FullDelta(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta,
                         const Attachment& attachment, absl::string_view why) {
    last_update_ = absl::StrCat("full: ", why);
    return Reload(previous, delta, attachment);
  }
  // The same once last_update_ says why: counted in stats_ (no room: by what it says).
  absl::Status Reload(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta,
                      const Attachment& attachment) {
    ir::CompiledPolicy next = previous;
    if (absl::Status s = ApplyDelta(delta, &next); !s.ok()) return s;
    ++stats_.full;
    if (absl::StrContains(last_update_, "no room") || absl::StrContains(last_update_, "budget")) {
      ++stats_.full_no_room;
    }
    return Apply(next, attachment);
  }

  // The peer sets whose members a pod delta's plan changes in their live numbers (maps.h
  // PodPolicyEdit: merged into `policy`, or `members`), for last_update_ and the stats.
  // Those keep their live number (the others get a new one). Before the plan is committed.
  std::vector<uint32_t> InPlaceMembers(const ebpf::PolicyEdit& policy,
                                       const ebpf::PolicyEdit& members) const {
    std::vector<uint32_t> out;
    for (const ebpf::PolicyEdit* edit : {&policy, &members}) {
      for (const ebpf::PolicyEdit::PeerSetChange& c : edit->new_peer_sets) {
        if (c.peer_set < policy_.peer_set_slot.size() &&
            policy_.peer_set_slot[c.peer_set] == c.slot) {
          out.push_back(c.peer_set);
        }
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Writes `edit` into the live generation, which then holds a program of shape
  // `next_shape`; false (last_update_ says why) when a new generation must be loaded
  // instead — then nothing, or a state whose verdicts are the old or the new program's,
  // was written.
  // `policy` (maps.h PodPolicyEdit): a pod delta's policy edit, `policy_change` entries
  // more (fewer) once written, written before the identity edit (`policy_first`), else
  // left unwritten and `members` (its membership edit) written first instead.
  bool EditInPlace(const ebpf::IdentityEdit& edit, const std::array<int, 6>& next_shape,
                   ebpf::PolicyEdit* policy = nullptr, bool policy_first = true,
                   long policy_change = 0, ebpf::PolicyEdit* members = nullptr) {
    // What is written before the identity edit (and committed to policy_): the policy edit
    // (policy first), else the membership edit alone.
    auto writes = [](const ebpf::PolicyEdit* p) {
      return p != nullptr && p->Writes() + p->cleanup.Writes() > 0;
    };
    ebpf::PolicyEdit* first = policy_first ? policy : members;
    if (!writes(first)) first = nullptr;
    if (!writes(policy)) policy = nullptr;
    if (edit.Writes() == 0 && policy == nullptr && first == nullptr) {
      last_update_ = "in place: nothing to change";
      installed_shape_ = next_shape;
      return true;
    }
    // The entry budget, as Apply checks it (the kernel's limits are far: 2^27 a hash map).
    auto budget = options_.budgets.find("map_entries");
    const long limit = static_cast<long>(budget == options_.budgets.end() ? kEntryBudget
                                                                          : budget->second);
    const long total = static_cast<long>(installed_entries_) + edit.HostsDelta() +
                       edit.Lpm4Delta() + edit.Lpm6Delta() +
                       static_cast<long>(edit.endpoint_adds.size()) -
                       static_cast<long>(edit.endpoint_deletes.size()) + policy_change;
    if (total > limit) {
      last_update_ = "full: past the map entry budget";
      return false;
    }
    absl::Status s = ebpf::EditIdentities(*live_, edit, first);
    if (!s.ok()) {
      // Half an edit is a state whose verdicts are the old or the new program's; a new
      // generation replaces it whole.
      last_update_ = absl::StrCat("full: in-place edit failed: ", s.message());
      return false;
    }
    std::string policy_text;
    if (policy != nullptr) {
      policy_text = absl::StrCat("; tables ", absl::StrJoin(policy->changed_tables, " "),
                                 " and peer sets ", absl::StrJoin(policy->changed_peer_sets, " "),
                                 policy_first ? " written first"
                                              : " left as they were (no endpoint names them)");
    }
    if (first != nullptr && !policy_first) {
      absl::StrAppend(&policy_text, "; members of peer sets ",
                      absl::StrJoin(first->changed_peer_sets, " "), " written first");
    }
    if (first != nullptr) {
      ebpf::CommitPolicyEdit(policy_, std::move(*first));
      installed_policy_entries_ =
          static_cast<size_t>(static_cast<long>(installed_policy_entries_) + policy_change);
    }
    installed_entries_ = static_cast<size_t>(total);
    installed_shape_ = next_shape;
    last_update_ = absl::StrCat("in place: ", edit.Writes(), " writes, identity of ",
                                edit.changed_addresses.empty()
                                    ? std::string("no address")
                                    : absl::StrJoin(edit.changed_addresses, " and "),
                                " changed", policy_text);
    if (!edit.added_endpoints.empty()) {
      absl::StrAppend(&last_update_, "; endpoints added: ",
                      EscapeText(absl::StrJoin(edit.added_endpoints, " ")));
    }
    if (!edit.deleted_endpoints.empty()) {
      absl::StrAppend(&last_update_, "; endpoints deleted: ",
                      EscapeText(absl::StrJoin(edit.deleted_endpoints, " ")));
    }
    if (live_->last_wait_ms >= 0.01) {
      absl::StrAppend(&last_update_, "; waited ", absl::SixDigits(live_->last_wait_ms),
                      " ms for the previous edit's grace period");
    }
    return true;
  }

  // The policy maps of the live generation edited into `next`'s (maps.h PlanPolicyEdit:
  // changed tables and peer sets written under fresh numbers, one np_config write switches
  // every run to them), for a pair PolicyOnlyChange accepted; false (last_update_ says
  // why) when a new generation must be loaded instead — then the live generation still
  // decides as `previous` (nothing it reads was written) or as `next`.
  bool PolicyInPlace(const ir::CompiledPolicy& next) {
    // `next` is checked as Apply would (CheckIr, the tier lists' bound), its ranges aside:
    // PolicyOnlyChange found them equal to the installed ones. Its policy maps are what the
    // edit writes; the kernel's limits hold by the room reserved at load (PlanPolicyEdit),
    // np's entry budget is checked on the total with the installed identity maps.
    absl::StatusOr<MapContents> maps = ebpf::BuildPolicyMaps(next);
    absl::Status checked = maps.status();
    if (checked.ok()) {
      absl::StatusOr<ir::BackendCapacity> capacity = Measure(next, *maps);
      checked = capacity.ok() ? CheckCapacity(*capacity) : capacity.status();
    }
    const size_t policy_entries = checked.ok() ? PolicyEntries(*maps) : 0;
    const size_t entries = installed_entries_ - installed_policy_entries_ + policy_entries;
    if (checked.ok() && entries > EntryBudget()) {
      checked = absl::ResourceExhaustedError("past the map entry budget");
    }
    if (!checked.ok()) {
      last_update_ = absl::StrCat("full: ", checked.message());
      return false;
    }
    absl::StatusOr<ebpf::PolicyEdit> edit =
        ebpf::PlanPolicyEdit(policy_, *maps, ebpf::NextGeneration(live_->generation));
    if (!edit.ok()) {
      last_update_ = absl::StrCat("full: ", edit.status().message());
      return false;
    }
    if (!WritePolicy(*edit, entries, Shape(next), "policy")) return false;
    installed_policy_entries_ = policy_entries;
    return true;
  }

  // A policy delta (tables and peer sets only) written in place, planned from the delta
  // and the layout the backend keeps (maps.h PlanPolicyEditFromDelta): the changed tables'
  // and peer sets' entries under fresh numbers, one np_config write. Whatever it cannot do
  // (nothing installed here, no room, a failed write) goes to Backend::UpdateDelta (copy,
  // ApplyDelta, Update). A delta with endpoint or range edits too is a pod delta's form
  // (UpdateDelta's identity path); an endpoint moving between tables loads a new
  // generation there.
  absl::Status PolicyDelta(const ir::CompiledPolicy& previous,
                           const ir::CompiledPolicyDelta& delta, const Attachment& attachment) {
    std::string why;
    if (live_ == nullptr || !SameAttachment(attachment)) {
      why = "nothing installed by this instance for this attachment";
    } else if (Shape(previous) != installed_shape_) {
      why = "`previous` is not what this instance installed";
    } else {
      absl::StatusOr<ebpf::PolicyEdit> edit =
          ebpf::PlanPolicyEditFromDelta(policy_, previous, delta,
                                        ebpf::NextGeneration(live_->generation));
      // A malformed delta touches nothing (Backend::UpdateDelta's contract).
      if (absl::IsInvalidArgument(edit.status())) return edit.status();
      if (edit.ok()) {
        // np's entry budget on the total, as Apply checks it; the kernel's limits hold by
        // the room PlanPolicyEditFromDelta checked.
        const long change = PolicyEntriesChange(*edit, delta, previous);
        const size_t entries = static_cast<size_t>(static_cast<long>(installed_entries_) + change);
        const size_t policy_entries =
            static_cast<size_t>(static_cast<long>(installed_policy_entries_) + change);
        std::array<int, 6> shape = installed_shape_;
        shape[4] += ApplyDeltaCount(delta.tables(), previous.tables_size());
        shape[5] += ApplyDeltaCount(delta.peer_sets(), previous.peer_sets_size());
        if (entries > EntryBudget()) {
          why = "past the map entry budget";
        } else if (const bool writes = edit->Writes() > 0;
                   WritePolicy(*edit, entries, shape, "policy delta")) {
          installed_policy_entries_ = policy_entries;
          policy_deltas_in_place_ += writes ? 1 : 0;
          return absl::OkStatus();
        } else if (live_ == nullptr) {
          // The write failed half way: only a new generation is sure.
          return FullDelta(previous, delta, attachment, last_update_);
        } else {
          why = last_update_;
        }
      } else {
        why = std::string(edit.status().message());
      }
    }
    absl::Status s = Backend::UpdateDelta(previous, delta, attachment);
    last_update_ = absl::StrCat(last_update_, " (policy delta not in place: ", why, ")");
    return s;
  }

  // How many np_members entries a membership edit (maps.h PodPolicyEdit::members) adds
  // (negative: removes) once cleaned up.
  long MembersChange(const ebpf::PolicyEdit& members) const {
    return static_cast<long>(members.members_entries) -
           static_cast<long>(policy_.members_entries);
  }

  // How many policy map entries (of MapContents::TotalEntries) `edit`, planned from
  // `delta` of `previous` against policy_, adds (negative: removes) once cleaned up.
  long PolicyEntriesChange(const ebpf::PolicyEdit& edit, const ir::CompiledPolicyDelta& delta,
                           const ir::CompiledPolicy& previous) const {
    return static_cast<long>(edit.ports_entries + edit.tiers_entries + edit.members_entries) -
           static_cast<long>(policy_.ports_entries + policy_.tiers_entries +
                             policy_.members_entries) +
           edit.lists_delta + ApplyDeltaCount(delta.tables(), previous.tables_size());
  }

  // How many of `items` (a delta's peer sets or tables, sorted by id) append to a list of
  // `size`.
  template <typename Items>
  static int ApplyDeltaCount(const Items& items, int size) {
    int appended = 0;
    for (const auto& item : items) appended += item.id() >= static_cast<uint32_t>(size) ? 1 : 0;
    return appended;
  }

  size_t EntryBudget() const {
    auto budget = options_.budgets.find("map_entries");
    return budget == options_.budgets.end() ? kEntryBudget : budget->second;
  }

  // Writes a planned policy edit into the live generation (loader.h EditPolicy) and
  // records what is installed then: `entries` map entries, an IR of shape `shape`. False,
  // last_update_ saying why, when it was not written: live_ is then null when the write
  // failed half way (a new generation must be loaded), kept when nothing was written.
  bool WritePolicy(ebpf::PolicyEdit& edit, size_t entries, const std::array<int, 6>& shape,
                   absl::string_view kind) {
    const uint32_t next_generation = ebpf::NextGeneration(live_->generation);
    if (edit.Writes() == 0) {
      last_update_ = "in place: nothing to change";
      installed_shape_ = shape;
      return true;
    }
    if (absl::Status s = ebpf::EditPolicy(*live_, edit, next_generation); !s.ok()) {
      last_update_ = absl::StrCat("full: in-place ", kind, " edit failed: ", s.message());
      if (!absl::IsFailedPrecondition(s)) live_ = nullptr;
      return false;
    }
    last_update_ = absl::StrCat("in place: ", kind, ", ", edit.Writes(), " writes, tables ",
                                absl::StrJoin(edit.changed_tables, " "), " and peer sets ",
                                absl::StrJoin(edit.changed_peer_sets, " "),
                                " changed; generation ", next_generation);
    ebpf::CommitPolicyEdit(policy_, std::move(edit));
    installed_entries_ = entries;
    installed_shape_ = shape;
    if (live_->last_wait_ms >= 0.01) {
      absl::StrAppend(&last_update_, "; waited ", absl::SixDigits(live_->last_wait_ms),
                      " ms for the previous edit's grace period");
    }
    return true;
  }

  absl::Status ApplyMaps(const ir::CompiledPolicy& ir, MapContents maps,
                         const Attachment& attachment) {
    live_ = nullptr;
    std::map<std::string, uint32_t> ids;
    for (uint32_t i = 0; i < maps.endpoint_names.size(); ++i) ids[maps.endpoint_names[i]] = i;
    std::vector<ebpf::InterfaceEndpoint> interfaces;
    // An interface whose pod is not an endpoint of the IR (deleted from the API before its
    // veth went, not yet known) carries addresses the IR calls outside the cluster: its
    // filter passes them (and records their flows, so that replies keep flowing when the
    // pod becomes an endpoint), and the pods at the other end judge them by address, as
    // nft and iptables do.
    for (const EndpointInterface& e : attachment.interfaces) {
      auto it = ids.find(e.pod);
      interfaces.push_back(
          {e.interface, it == ids.end() ? ebpf::InterfaceEndpoint::kOutside : it->second});
    }
    absl::StatusOr<ebpf::ApplyReport> report =
        ebpf::ApplyGeneration(maps, interfaces, attachment.netns);
    if (!report.ok()) return report.status();
    live_ = report->live;
    policy_ = ebpf::InitialLayout(maps);
    installed_entries_ = maps.TotalEntries();
    installed_policy_entries_ = PolicyEntries(maps);
    installed_shape_ = Shape(ir);
    local_addresses_ = maps.endpoints_addr;
    next_endpoint_id_ = static_cast<uint32_t>(maps.endpoints.size());
    free_endpoint_ids_.clear();
    ids_are_indexes_ = true;
    attachment_ = attachment;
    return absl::OkStatus();
  }

  // The interfaces of `a` that `b` lacks (pod and interface both compared), in `a`'s order.
  // Every pod event that adds or deletes a node's pod asks twice, with the node's every
  // interface on both sides, and the agent keeps their order: the common head and tail are
  // matched in place, and only the few interfaces between are looked up (a set of b's
  // pairs over all 1,000 was a fifth of a table-bringing pod add's backend time; a pass
  // over b per interface, 1,000 x 1,000 string compares, before that).
  static bool SameInterface(const EndpointInterface& i, const EndpointInterface& j) {
    return i.pod == j.pod && i.interface == j.interface;
  }
  static std::vector<EndpointInterface> Missing(const Attachment& a, const Attachment& b) {
    const std::vector<EndpointInterface>& x = a.interfaces;
    const std::vector<EndpointInterface>& y = b.interfaces;
    size_t head = 0;
    while (head < x.size() && head < y.size() && SameInterface(x[head], y[head])) ++head;
    size_t tail = 0;
    while (tail < x.size() - head && tail < y.size() - head &&
           SameInterface(x[x.size() - 1 - tail], y[y.size() - 1 - tail])) {
      ++tail;
    }
    std::vector<EndpointInterface> out;
    // The rest looked up in the whole of `b` (an interface listed twice in `a` may match in
    // b's head or tail): by a pass over `b` for the few of an event, a set of b's pairs
    // when the order changed.
    absl::flat_hash_set<std::pair<absl::string_view, absl::string_view>> present;
    const bool few = x.size() - tail - head <= 8;
    if (!few) {
      present.reserve(y.size());
      for (const EndpointInterface& j : y) present.emplace(j.pod, j.interface);
    }
    for (size_t i = head; i < x.size() - tail; ++i) {
      const bool found =
          few ? std::any_of(y.begin(), y.end(),
                            [&](const EndpointInterface& j) { return SameInterface(x[i], j); })
              : present.contains(std::make_pair(absl::string_view(x[i].pod),
                                                absl::string_view(x[i].interface)));
      if (!found) out.push_back(x[i]);
    }
    return out;
  }
  // Removes `gone` from `a` in place (a copy of the node's 1,000 interfaces per detach
  // was a tenth of a pod delete's backend time).
  static void RemoveInterface(Attachment& a, const EndpointInterface& gone) {
    a.interfaces.erase(std::remove_if(a.interfaces.begin(), a.interfaces.end(),
                                      [&](const EndpointInterface& i) {
                                        return SameInterface(i, gone);
                                      }),
                       a.interfaces.end());
  }

  bool SameAttachment(const Attachment& a) const {
    if (a.netns != attachment_.netns || a.interfaces.size() != attachment_.interfaces.size()) {
      return false;
    }
    for (size_t i = 0; i < a.interfaces.size(); ++i) {
      if (!SameInterface(a.interfaces[i], attachment_.interfaces[i])) return false;
    }
    return true;
  }

 public:

  absl::Status Remove(const Attachment& attachment) override {
    live_ = nullptr;
    std::vector<std::string> names;
    for (const EndpointInterface& e : attachment.interfaces) names.push_back(e.interface);
    return ebpf::RemoveFromInterfaces(names, attachment.netns);
  }

  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy& ir,
                                      const FlowQuery& flow) const override {
    absl::StatusOr<MapContents> maps = BuildMaps(ir);
    if (!maps.ok()) return maps.status();
    return ebpf::ExplainFlow(MapModel(*maps), flow);
  }

 private:
  absl::StatusOr<ir::BackendCapacity> Measure(const ir::CompiledPolicy& ir,
                                              const MapContents& maps) const {
    ir::BackendCapacity report = MapsCapacity(ir, maps);
    if (absl::Status s = FinishCapacity(report, options_); !s.ok()) return s;
    return report;
  }
  // The maps, when they are within the kernel's limits and np's budget.
  absl::StatusOr<MapContents> Checked(const ir::CompiledPolicy& ir) const {
    absl::StatusOr<MapContents> maps = BuildMaps(ir);
    if (!maps.ok()) return maps.status();
    absl::StatusOr<ir::BackendCapacity> capacity = Measure(ir, *maps);
    if (!capacity.ok()) return capacity.status();
    if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
    return maps;
  }

  BackendOptions options_;
  // What this instance installed last (by Apply or Update), for in-place updates; null
  // when unknown (nothing installed, Remove, a failed Apply).
  std::shared_ptr<ebpf::LiveMaps> live_;
  size_t installed_entries_ = 0;  // MapContents::TotalEntries of what is installed
  // Where the live generation's policy maps keep each table and peer set (in-place policy
  // edits renumber them: maps.h PolicyLayout); meaningful while live_ is set.
  ebpf::PolicyLayout policy_;
  size_t installed_policy_entries_ = 0;  // PolicyEntries of what is installed
  // The entries of the maps a policy edit writes (of MapContents::TotalEntries).
  static size_t PolicyEntries(const MapContents& m) {
    return m.tables.size() + m.ports.size() + m.tiers.size() + m.tier_lists.size() +
           m.members.size();
  }
  std::array<int, 6> installed_shape_{};  // Shape of the IR installed
  // np_endpoints_addr of what is installed: the node's pod addresses, which last_update
  // names as such when an in-place edit changes their identity (maps.h, condition (c)).
  // Kept up to date by in-place edits that add or delete endpoints.
  std::vector<std::pair<np_endpoint_addr_key, np_endpoint>> local_addresses_;
  // The id the next endpoint added in place gets when free_endpoint_ids_ is empty: ids are
  // the IR's indexes at Apply, and in-place edits never renumber (np_abi.h np_endpoint.id).
  uint32_t next_endpoint_id_ = 0;
  // Ids of endpoints deleted in place, given again to endpoints added by a LATER edit (so
  // that they stay below the node's peak endpoint count and np_endpoint_states' room is
  // left only when the node grows: maps.h PolicyLayout, the numbers of a long life). Why
  // no run can take the new endpoint for the old one (ALLOW_SELF compares ids, and
  // np_endpoint_states[id] is read through an entry naming the id): the edit that deleted
  // the old endpoint removed every entry naming its id (np_endpoints_addr in the edit,
  // before its bump; np_endpoints_if before the edit, DetachInPlace; an interface that
  // stays loads a new generation), so only runs that started before that bump can hold
  // the id, and the next edit's first act (loader.cc StartEdit) waits for every run of
  // the generation before that bump (or a grace period) to end. Only then are the reused
  // id's state (both banks) and entries written. Never taken by the edit that frees it.
  std::vector<uint32_t> free_endpoint_ids_;
  // No endpoint was added or deleted in place since the last full install: endpoint ids
  // are the IR's indexes (what PlanIdentityEditFromIr numbers state changes by).
  bool ids_are_indexes_ = true;
  Attachment attachment_;
  std::string last_update_;
  uint64_t policy_deltas_in_place_ = 0;  // UpdateDelta's policy deltas written in place
  ebpf::DeltaStats stats_;
};

}  // namespace

namespace ebpf {

absl::StatusOr<std::string> ExplainFlow(const MapModel& model, const FlowQuery& flow) {
  absl::StatusOr<FlowAddresses> ends = ParseFlowAddresses(flow);
  if (!ends.ok()) return ends.status();
  const std::string* src = &ends->source;
  const std::string* dst = &ends->destination;
  PacketView p;
  p.family = src->size() == 4 ? NP_FAMILY_V4 : NP_FAMILY_V6;
  std::memcpy(p.saddr, src->data(), src->size());
  std::memcpy(p.daddr, dst->data(), dst->size());
  p.protocol = flow.protocol;
  p.dport = flow.port;
  p.has_ports = flow.protocol == 6 || flow.protocol == 17 || flow.protocol == 132;
  const MapContents* maps = &model.maps();

  std::string out = absl::StrCat("ebpf: ", flow.source, " -> ", flow.destination, " ",
                                 ProtocolName(flow.protocol));
  if (p.has_ports) absl::StrAppend(&out, "/", flow.port);
  absl::StrAppend(&out, "\n");
  for (auto [label, addr, text] : {std::tuple<const char*, const uint8_t*, std::string>{
                                       "source", p.saddr, flow.source},
                                   {"destination", p.daddr, flow.destination}}) {
    std::string prefix;
    uint32_t identity = model.Identity(p.family, addr, &prefix);
    const np_endpoint* e = model.EndpointByAddress(p.family, addr);
    absl::StrAppend(&out, "  ", label, " ", text, ": ", prefix, " = identity ", identity);
    if (e != nullptr) {
      absl::StrAppend(&out, "; np_endpoints_addr -> endpoint ", e->id, " ",
                      EscapeText(maps->endpoint_names[e->id]),
                      (e->flags & NP_ENDPOINT_SELECTED) ? absl::StrCat(", table ", e->table)
                                                        : std::string(", not selected"),
                      label == std::string("source")
                          ? " (decided at tc ingress of its host veth: np_from_ep)"
                          : " (decided at tc egress of its host veth: np_to_ep)");
    } else {
      absl::StrAppend(&out, "; not a pod of this node");
    }
    absl::StrAppend(&out, "\n");
  }
  const np_endpoint* s = model.EndpointByAddress(p.family, p.saddr);
  const np_endpoint* d = model.EndpointByAddress(p.family, p.daddr);
  if (s == nullptr && d == nullptr) {
    absl::StrAppend(&out, "  no endpoint of this node sends or receives it: no hook sees "
                          "the flow\n  verdict: ALLOW\n");
    return out;
  }
  Decision decision = s != nullptr ? model.Decide(NP_HOOK_FROM_ENDPOINT, s->id, p)
                                         : model.Decide(NP_HOOK_TO_ENDPOINT, d->id, p);
  absl::StrAppend(&out, "  each hook decides every local side of the flow (np_policy.c "
                        "policy_allows):\n");
  if (decision.self_traffic) {
    absl::StrAppend(&out, "    the other end is the endpoint itself and np_config has "
                          "ALLOW_SELF -> allowed\n");
  }
  for (const SideTrace& side : decision.sides) {
    for (const std::string& step : side.steps) absl::StrAppend(&out, "    ", step, "\n");
  }
  if (!p.has_ports) {
    absl::StrAppend(&out, "  (", ProtocolName(flow.protocol),
                    ": NetworkPolicy names only TCP, UDP and SCTP; other protocols pass "
                    "only sides that are not isolated)\n");
  }
  absl::StrAppend(&out, "  verdict: ", decision.allowed ? "ALLOW" : "DROP",
                  decision.allowed ? " (np_ct then records the flow so replies pass)\n"
                                   : " (TC_ACT_SHOT; unless the flow is already in np_ct)\n");
  return out;
}

}  // namespace ebpf

std::unique_ptr<Backend> MakeEbpfBackend(const BackendOptions& options) {
  return std::make_unique<EbpfBackend>(options);
}

std::string EbpfLastUpdate(const Backend& backend) {
  const auto* ebpf = dynamic_cast<const EbpfBackend*>(&backend);
  return ebpf == nullptr ? std::string() : ebpf->last_update();
}

ebpf::DeltaStats EbpfDeltaStats(const Backend& backend) {
  const auto* ebpf = dynamic_cast<const EbpfBackend*>(&backend);
  return ebpf == nullptr ? ebpf::DeltaStats() : ebpf->stats();
}

uint64_t EbpfPolicyDeltasInPlace(const Backend& backend) {
  const auto* ebpf = dynamic_cast<const EbpfBackend*>(&backend);
  return ebpf == nullptr ? 0 : ebpf->policy_deltas_in_place();
}

}  // namespace np::backends
