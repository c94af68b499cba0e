// ApplyDelta, DiffPrograms and Backend::UpdateDelta's default (np/backends/util.h,
// backend.h): the delta form of the IR that pod events reach the kernel through.
#include <algorithm>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "np/backends/backend.h"
#include "np/backends/util.h"
#include "proto/compiled.pb.h"

namespace np::backends {
namespace {

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

}  // namespace

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
  for (int e = 0; e < delta.identity_pods_size(); ++e) {
    const uint32_t id = delta.identity_pods(e).identity();
    if (id >= identities || (e > 0 && id <= delta.identity_pods(e - 1).identity())) {
      return Invalid(absl::StrCat("identity_pods[", e, "]: identity ", id,
                                  " does not exist or is not after the edit before it"));
    }
  }
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
    *ir->mutable_identities(static_cast<int>(edit.identity()))->mutable_pods() = edit.pods();
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
      ir::IdentityPodsEdit* edit = delta.add_identity_pods();
      edit->set_identity(static_cast<uint32_t>(i));
      *edit->mutable_pods() = b.pods();
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
