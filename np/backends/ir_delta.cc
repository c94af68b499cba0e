// ApplyDelta, DiffPrograms and Backend::UpdateDelta's default (np/backends/util.h,
// backend.h): the delta form of the IR that pod events reach the kernel through.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "np/backends/backend.h"
#include "np/backends/util.h"
#include "proto/compiled.pb.h"

namespace np::backends {
namespace {

using google::protobuf::RepeatedFieldBackInserter;
using google::protobuf::RepeatedPtrField;
using google::protobuf::util::MessageDifferencer;

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("IR delta: ", what));
}

// The address after `bytes` (big-endian); false when `bytes` is the family's last.
bool Successor(std::string& bytes) {
  for (size_t i = bytes.size(); i-- > 0;) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c != 0xff) {
      bytes[i] = static_cast<char>(c + 1);
      return true;
    }
    bytes[i] = 0;
  }
  return false;
}

// One family's slice edits against `ranges`: in bounds, sorted, disjoint, and each edit's new
// ranges cover exactly the addresses of the ones they replace, one after the other.
absl::Status CheckRangeEdits(const RepeatedPtrField<ir::RangeSliceEdit>& edits,
                             const RepeatedPtrField<ir::AddressRange>& ranges,
                             absl::string_view family, size_t width, uint32_t identities) {
  uint32_t previous_end = 0;
  for (int e = 0; e < edits.size(); ++e) {
    const ir::RangeSliceEdit& edit = edits[e];
    const std::string where = absl::StrCat(family, "[", e, "]");
    if (edit.begin() >= edit.end() || edit.end() > static_cast<uint32_t>(ranges.size())) {
      return Invalid(absl::StrCat(where, ": slice [", edit.begin(), ", ", edit.end(),
                                  ") is empty or outside the program's ", ranges.size(),
                                  " ranges"));
    }
    if (e > 0 && edit.begin() < previous_end) {
      return Invalid(absl::StrCat(where, ": overlaps or precedes the edit before it"));
    }
    previous_end = edit.end();
    if (edit.ranges().empty()) return Invalid(absl::StrCat(where, ": no ranges"));
    std::string expected = ranges[static_cast<int>(edit.begin())].first();
    for (int r = 0; r < edit.ranges_size(); ++r) {
      const ir::AddressRange& range = edit.ranges(r);
      if (range.first().size() != width || range.last().size() != width) {
        return Invalid(absl::StrCat(where, ".ranges[", r, "]: addresses are not ", width,
                                    " bytes"));
      }
      if (range.first() != expected || range.last() < range.first()) {
        return Invalid(absl::StrCat(where, ".ranges[", r,
                                    "]: does not continue the ranges before it"));
      }
      if (range.identity() >= identities) {
        return Invalid(absl::StrCat(where, ".ranges[", r, "]: identity ", range.identity(),
                                    " does not exist"));
      }
      expected = range.last();
      const bool more = Successor(expected);
      if (!more && r + 1 < edit.ranges_size()) {
        return Invalid(absl::StrCat(where, ".ranges[", r, "]: ends the family's addresses"));
      }
    }
    if (edit.ranges(edit.ranges_size() - 1).last() != ranges[static_cast<int>(edit.end()) - 1].last()) {
      return Invalid(absl::StrCat(where, ": covers other addresses than the ranges it replaces"));
    }
  }
  return absl::OkStatus();
}

// field[begin, end) becomes `with`: elements reused in place, the rest deleted or added at the
// end and rotated into place (pointer moves, no copies of the elements after the slice).
template <typename T>
void ReplaceSlice(RepeatedPtrField<T>* field, int begin, int end, const RepeatedPtrField<T>& with) {
  const int old_length = end - begin, new_length = with.size();
  const int common = std::min(old_length, new_length);
  for (int i = 0; i < common; ++i) *field->Mutable(begin + i) = with.Get(i);
  if (new_length < old_length) {
    field->DeleteSubrange(begin + common, old_length - common);
  } else if (new_length > old_length) {
    const int size = field->size();
    for (int i = common; i < new_length; ++i) *field->Add() = with.Get(i);
    std::rotate(field->pointer_begin() + end, field->pointer_begin() + size, field->pointer_end());
  }
}

// The one slice of `next` that differs from `previous` (common prefix and suffix left out):
// false when none does.
template <typename T>
bool DiffSlice(const RepeatedPtrField<T>& previous, const RepeatedPtrField<T>& next,
               uint32_t* begin, uint32_t* previous_end, uint32_t* next_end) {
  const int shorter = std::min(previous.size(), next.size());
  int prefix = 0;
  while (prefix < shorter && MessageDifferencer::Equals(previous[prefix], next[prefix])) ++prefix;
  if (prefix == previous.size() && prefix == next.size()) return false;
  int suffix = 0;
  while (suffix < shorter - prefix &&
         MessageDifferencer::Equals(previous[previous.size() - 1 - suffix],
                                    next[next.size() - 1 - suffix])) {
    ++suffix;
  }
  *begin = static_cast<uint32_t>(prefix);
  *previous_end = static_cast<uint32_t>(previous.size() - suffix);
  *next_end = static_cast<uint32_t>(next.size() - suffix);
  return true;
}

// Whether `names` is sorted without repeats (what an identity's pods are).
bool SortedDistinct(const RepeatedPtrField<std::string>& names) {
  return std::adjacent_find(names.begin(), names.end(),
                            [](const std::string& a, const std::string& b) { return !(a < b); }) ==
         names.end();
}

// Identity `id`'s pods before the edits: the program's, or as the delta appends it.
const RepeatedPtrField<std::string>& PodsBefore(const ir::CompiledPolicy& program,
                                                const ir::CompiledPolicyDelta& delta, uint32_t id) {
  const uint32_t count = static_cast<uint32_t>(program.identities_size());
  return id < count ? program.identities(static_cast<int>(id)).pods()
                    : delta.identities(static_cast<int>(id - count)).pods();
}

}  // namespace

absl::Status CheckIdentityPodsEdits(const ir::CompiledPolicy& program,
                                    const ir::CompiledPolicyDelta& delta) {
  const uint32_t identities =
      static_cast<uint32_t>(program.identities_size() + delta.identities_size());
  for (int e = 0; e < delta.identity_pods_size(); ++e) {
    const ir::IdentityPodsEdit& edit = delta.identity_pods(e);
    const uint32_t id = edit.identity();
    const std::string where = absl::StrCat("identity_pods[", e, "]");
    if (id >= identities || (e > 0 && id <= delta.identity_pods(e - 1).identity())) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": identity ", id, " does not exist or is not after the edit before it"));
    }
    if (edit.added().empty() && edit.removed().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": adds and removes no pod"));
    }
    // Binary searches in the identity's sorted pods: an edit names a few of thousands.
    const RepeatedPtrField<std::string>& pods = PodsBefore(program, delta, id);
    for (const bool adding : {true, false}) {
      const RepeatedPtrField<std::string>& names = adding ? edit.added() : edit.removed();
      for (int i = 0; i < names.size(); ++i) {
        const std::string field =
            absl::StrCat(where, adding ? ".added[" : ".removed[", i, "]: \"",
                         EscapeText(names[i]), "\"");
        if (i > 0 && !(names[i - 1] < names[i])) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, " is not after the name before it (sorted, no repeats)"));
        }
        const bool present = std::binary_search(pods.begin(), pods.end(), names[i]);
        if (adding && present) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, " is a pod of identity ", id, " already"));
        }
        if (!adding && !present) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, " is not a pod of identity ", id));
        }
      }
    }
  }
  return absl::OkStatus();
}

int PodsAfterEdit(const ir::CompiledPolicy& program, const ir::CompiledPolicyDelta& delta,
                  const ir::IdentityPodsEdit& edit) {
  return PodsBefore(program, delta, edit.identity()).size() - edit.removed_size() +
         edit.added_size();
}

void ApplyPodsEdit(const ir::IdentityPodsEdit& edit, RepeatedPtrField<std::string>* pods) {
  // Pointer moves only: the kept names' strings stay where they are (a relabel at 1,000 pods
  // a node edits an identity of ~2,000).
  auto slots = pods->pointer_begin();
  if (!edit.removed().empty()) {
    // The removed names' positions (ascending, as the names are), then the kept pointers
    // slid down over them, the removed ones collected at the end and cleared for reuse.
    std::vector<int> gone;
    gone.reserve(edit.removed_size());
    for (const std::string& name : edit.removed()) {
      gone.push_back(static_cast<int>(std::lower_bound(pods->begin(), pods->end(), name) -
                                      pods->begin()));
    }
    int kept = gone[0];
    size_t g = 0;
    for (int i = gone[0]; i < pods->size(); ++i) {
      if (g < gone.size() && gone[g] == i) {
        ++g;
        continue;
      }
      std::iter_swap(slots + kept++, slots + i);
    }
    while (pods->size() > kept) pods->RemoveLast();
  }
  if (!edit.added().empty()) {
    // Each added name's position among the kept ones, then one merge from the back.
    const int old_size = pods->size();
    std::vector<int> at;
    at.reserve(edit.added_size());
    for (const std::string& name : edit.added()) {
      at.push_back(static_cast<int>(
          std::lower_bound(pods->begin(), pods->begin() + old_size, name) - pods->begin()));
    }
    for (const std::string& name : edit.added()) pods->Add()->assign(name);
    slots = pods->pointer_begin();
    // Held aside first: the shift below writes over the slots they were appended in.
    std::vector<std::string*> fresh(slots + old_size, slots + pods->size());
    int source = old_size - 1, target = pods->size() - 1;
    for (int j = static_cast<int>(fresh.size()) - 1; j >= 0; --j) {
      while (source >= at[j]) slots[target--] = slots[source--];
      slots[target--] = fresh[j];
    }
  }
}

absl::Status ApplyDelta(const ir::CompiledPolicyDelta& delta, ir::CompiledPolicy* ir) {
  // Appended identities: ids from the program's count on, in order, not external, pods
  // sorted. The ranges, identity pod edits and peer sets below may name them, so their
  // checks count the identities after the delta.
  for (int e = 0; e < delta.identities_size(); ++e) {
    const ir::Identity& identity = delta.identities(e);
    const uint32_t expected = static_cast<uint32_t>(ir->identities_size() + e);
    if (identity.id() != expected) {
      return Invalid(absl::StrCat("identities[", e, "]: id ", identity.id(),
                                  " is not the next id ", expected,
                                  " (appended identities follow the program's, in order)"));
    }
    if (identity.external()) {
      return Invalid(absl::StrCat("identities[", e, "]: an appended identity is not external"));
    }
    if (!std::is_sorted(identity.pods().begin(), identity.pods().end())) {
      return Invalid(absl::StrCat("identities[", e, "].pods: not sorted"));
    }
  }
  const uint32_t identities =
      static_cast<uint32_t>(ir->identities_size() + delta.identities_size());
  if (absl::Status s = CheckRangeEdits(delta.ipv4(), ir->ipv4(), "ipv4", 4, identities); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRangeEdits(delta.ipv6(), ir->ipv6(), "ipv6", 16, identities); !s.ok()) {
    return s;
  }
  // Peer sets and tables by id: replaced below the count, appended one by one past it.
  auto after_count = [](const auto& edits, int size, absl::string_view list,
                        uint32_t* count) -> absl::Status {
    uint32_t n = static_cast<uint32_t>(size);
    for (int e = 0; e < edits.size(); ++e) {
      const uint32_t id = edits[e].id();
      if ((e > 0 && id <= edits[e - 1].id()) || id > n) {
        return Invalid(absl::StrCat(list, "[", e, "]: id ", id,
                                    " is not after the edit before it, or leaves a gap past the "
                                    "program's ", n, " items"));
      }
      if (id == n) ++n;
    }
    *count = n;
    return absl::OkStatus();
  };
  uint32_t peer_sets_after = 0, tables_after = 0;
  if (absl::Status s = after_count(delta.peer_sets(), ir->peer_sets_size(), "peer_sets",
                                   &peer_sets_after);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = after_count(delta.tables(), ir->tables_size(), "tables", &tables_after);
      !s.ok()) {
    return s;
  }
  for (int e = 0; e < delta.peer_sets_size(); ++e) {
    const ir::PeerSet& set = delta.peer_sets(e);
    if (absl::Status s = CheckPeerSet(set, set.id(), identities); !s.ok()) {
      return Invalid(absl::StrCat("peer_sets[", e, "]: ", s.message()));
    }
  }
  for (int e = 0; e < delta.tables_size(); ++e) {
    const ir::Table& table = delta.tables(e);
    if (absl::Status s = CheckTable(table, table.id(), peer_sets_after); !s.ok()) {
      return Invalid(absl::StrCat("tables[", e, "]: ", s.message()));
    }
  }
  uint32_t previous_end = 0;
  for (int e = 0; e < delta.endpoints_size(); ++e) {
    const ir::EndpointSliceEdit& edit = delta.endpoints(e);
    if (edit.begin() > edit.end() || edit.end() > static_cast<uint32_t>(ir->endpoints_size()) ||
        (e > 0 && edit.begin() < previous_end)) {
      return Invalid(absl::StrCat("endpoints[", e, "]: slice [", edit.begin(), ", ", edit.end(),
                                  ") is outside the program's ", ir->endpoints_size(),
                                  " endpoints or not after the edit before it"));
    }
    previous_end = edit.end();
    for (int i = 0; i < edit.endpoints_size(); ++i) {
      const ir::Endpoint& endpoint = edit.endpoints(i);
      if (endpoint.selected() && endpoint.table() >= tables_after) {
        return Invalid(absl::StrCat("endpoints[", e, "].endpoints[", i, "]: table ",
                                    endpoint.table(), " does not exist"));
      }
    }
  }
  if (absl::Status s = CheckIdentityPodsEdits(*ir, delta); !s.ok()) return Invalid(s.message());
  for (const ir::Identity& identity : delta.identities()) *ir->add_identities() = identity;
  // Back to front, so that each edit's indexes still name the slice it was made for.
  for (int e = delta.ipv4_size(); e-- > 0;) {
    const ir::RangeSliceEdit& edit = delta.ipv4(e);
    ReplaceSlice(ir->mutable_ipv4(), edit.begin(), edit.end(), edit.ranges());
  }
  for (int e = delta.ipv6_size(); e-- > 0;) {
    const ir::RangeSliceEdit& edit = delta.ipv6(e);
    ReplaceSlice(ir->mutable_ipv6(), edit.begin(), edit.end(), edit.ranges());
  }
  for (int e = delta.endpoints_size(); e-- > 0;) {
    const ir::EndpointSliceEdit& edit = delta.endpoints(e);
    ReplaceSlice(ir->mutable_endpoints(), edit.begin(), edit.end(), edit.endpoints());
  }
  for (const ir::IdentityPodsEdit& edit : delta.identity_pods()) {
    ApplyPodsEdit(edit, ir->mutable_identities(static_cast<int>(edit.identity()))->mutable_pods());
  }
  for (const ir::PeerSet& set : delta.peer_sets()) {
    const int id = static_cast<int>(set.id());
    *(id < ir->peer_sets_size() ? ir->mutable_peer_sets(id) : ir->add_peer_sets()) = set;
  }
  for (const ir::Table& table : delta.tables()) {
    const int id = static_cast<int>(table.id());
    *(id < ir->tables_size() ? ir->mutable_tables(id) : ir->add_tables()) = table;
  }
  return absl::OkStatus();
}

std::optional<ir::CompiledPolicyDelta> DiffPrograms(const ir::CompiledPolicy& previous,
                                                    const ir::CompiledPolicy& next) {
  if (previous.node() != next.node() ||
      previous.always_allow_self() != next.always_allow_self() ||
      next.identities_size() < previous.identities_size() ||
      next.peer_sets_size() < previous.peer_sets_size() ||
      next.tables_size() < previous.tables_size()) {
    return std::nullopt;
  }
  ir::CompiledPolicyDelta delta;
  // Peer sets and tables by id: the ones that differ or are new, whole.
  for (int i = 0; i < next.peer_sets_size(); ++i) {
    if (i >= previous.peer_sets_size() ||
        !MessageDifferencer::Equals(previous.peer_sets(i), next.peer_sets(i))) {
      *delta.add_peer_sets() = next.peer_sets(i);
    }
  }
  for (int i = 0; i < next.tables_size(); ++i) {
    if (i >= previous.tables_size() ||
        !MessageDifferencer::Equals(previous.tables(i), next.tables(i))) {
      *delta.add_tables() = next.tables(i);
    }
  }
  // Identities past previous's count are appended whole (the format's rules: in order, not
  // external, pods sorted); the common prefix keeps ids and `external`.
  for (int i = previous.identities_size(); i < next.identities_size(); ++i) {
    const ir::Identity& b = next.identities(i);
    if (b.id() != static_cast<uint32_t>(i) || b.external() ||
        !std::is_sorted(b.pods().begin(), b.pods().end())) {
      return std::nullopt;
    }
    *delta.add_identities() = b;
  }
  for (int i = 0; i < previous.identities_size(); ++i) {
    const ir::Identity& a = previous.identities(i);
    const ir::Identity& b = next.identities(i);
    if (a.id() != b.id() || a.external() != b.external()) return std::nullopt;
    if (!std::equal(a.pods().begin(), a.pods().end(), b.pods().begin(), b.pods().end())) {
      // The format's edit is of sorted lists without repeats: anything else is no delta.
      if (!SortedDistinct(a.pods()) || !SortedDistinct(b.pods())) return std::nullopt;
      ir::IdentityPodsEdit* edit = delta.add_identity_pods();
      edit->set_identity(static_cast<uint32_t>(i));
      std::set_difference(b.pods().begin(), b.pods().end(), a.pods().begin(), a.pods().end(),
                          RepeatedFieldBackInserter(edit->mutable_added()));
      std::set_difference(a.pods().begin(), a.pods().end(), b.pods().begin(), b.pods().end(),
                          RepeatedFieldBackInserter(edit->mutable_removed()));
    }
  }
  auto diff_ranges = [&](const RepeatedPtrField<ir::AddressRange>& a,
                         const RepeatedPtrField<ir::AddressRange>& b,
                         RepeatedPtrField<ir::RangeSliceEdit>* out) {
    uint32_t begin, a_end, b_end;
    if (!DiffSlice(a, b, &begin, &a_end, &b_end)) return true;
    // Both programs cover the whole family, so a differing slice is never empty on one side.
    if (begin == a_end || begin == b_end) return false;
    ir::RangeSliceEdit* edit = out->Add();
    edit->set_begin(begin);
    edit->set_end(a_end);
    for (uint32_t i = begin; i < b_end; ++i) *edit->add_ranges() = b[static_cast<int>(i)];
    return true;
  };
  if (!diff_ranges(previous.ipv4(), next.ipv4(), delta.mutable_ipv4()) ||
      !diff_ranges(previous.ipv6(), next.ipv6(), delta.mutable_ipv6())) {
    return std::nullopt;
  }
  uint32_t begin, a_end, b_end;
  if (DiffSlice(previous.endpoints(), next.endpoints(), &begin, &a_end, &b_end)) {
    ir::EndpointSliceEdit* edit = delta.add_endpoints();
    edit->set_begin(begin);
    edit->set_end(a_end);
    for (uint32_t i = begin; i < b_end; ++i) *edit->add_endpoints() = next.endpoints(static_cast<int>(i));
  }
  return delta;
}

absl::Status Backend::UpdateDelta(const ir::CompiledPolicy& previous,
                                  const ir::CompiledPolicyDelta& delta,
                                  const Attachment& attachment) {
  ir::CompiledPolicy next = previous;
  if (absl::Status s = ApplyDelta(delta, &next); !s.ok()) return s;
  return Update(previous, next, attachment);
}

}  // namespace np::backends
