#include "np/lower_delta.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/util/message_differencer.h"
#include "np/internal/engine_state.h"
#include "np/internal/ir_ranges.h"

namespace np {
namespace {

using internal::EngineAccess;
using internal::EngineState;
using internal::kNone;
using internal::kSharedPeer;
using internal::U128;

using Ranges = google::protobuf::RepeatedPtrField<ir::AddressRange>;

std::string SortKey(const std::string& namespace_name, const std::string& name) {
  return namespace_name + '\0' + name;
}

// The pod id of "namespace/name" in a snapshot, if live.
std::optional<uint32_t> LivePodId(const EngineState& s, const std::string& key) {
  const uint32_t* id = s.pod_by_key.Find(key);
  if (id == nullptr || s.pods[*id].state == nullptr) return std::nullopt;
  return *id;
}

// Index of the range holding `address` (the ranges cover the family: one does).
int RangeHolding(const Ranges& ranges, U128 address) {
  int lo = 0, hi = ranges.size() - 1;
  while (lo < hi) {  // the first range whose last >= address
    int mid = lo + (hi - lo) / 2;
    if (internal::BytesValue(ranges[mid].last()) >= address) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Position of the endpoint (namespace, name) in the sorted endpoints, and whether it is there.
std::pair<int, bool> EndpointPosition(const ir::CompiledPolicy& ir, const std::string& ns,
                                      const std::string& name) {
  const auto& e = ir.endpoints();
  auto less = [](const ir::Endpoint& a,
                 const std::pair<const std::string*, const std::string*>& k) {
    return std::tie(a.namespace_(), a.name()) < std::tie(*k.first, *k.second);
  };
  auto it = std::lower_bound(e.begin(), e.end(), std::make_pair(&ns, &name), less);
  int pos = static_cast<int>(it - e.begin());
  return {pos, it != e.end() && it->namespace_() == ns && it->name() == name};
}

}  // namespace

PodDeltaLowering PodDeltaLowering::Index(std::shared_ptr<const Engine> snapshot,
                                         const ir::CompiledPolicy& installed) {
  PodDeltaLowering x;
  const EngineState& s = EngineAccess::State(*snapshot);
  x.snapshot_ = std::move(snapshot);
  x.range_count_.assign(installed.identities_size(), 0);
  x.external_count_.assign(installed.identities_size(), 0);
  for (int f = 0; f < 2; ++f) {
    for (const ir::AddressRange& r : f == 0 ? installed.ipv4() : installed.ipv6()) {
      uint32_t c;
      if (r.pod().empty()) {
        c = s.atoms[f]->peer_class[s.atoms[f]->Find(internal::BytesValue(r.first()))];
        x.external_count_[r.identity()]++;
      } else {
        std::optional<uint32_t> p = LivePodId(s, r.pod());
        c = p ? s.records[*p].peer[f] : kNone;
      }
      x.range_count_[r.identity()]++;
      x.identity_of_class_.emplace(c, r.identity());
    }
  }
  x.table_target_.assign(installed.tables_size(), kNone);
  x.table_source_.resize(installed.tables_size());
  x.table_endpoints_.assign(installed.tables_size(), 0);
  for (const ir::Endpoint& e : installed.endpoints()) {
    if (!e.selected()) continue;
    std::optional<uint32_t> p = LivePodId(s, e.namespace_() + "/" + e.name());
    if (!p) continue;
    uint32_t target = s.records[*p].target;
    x.table_endpoints_[e.table()]++;
    if (target == kNone || x.table_target_[e.table()] != kNone) continue;
    x.table_target_[e.table()] = target;
    x.table_source_[e.table()] = s.target_classes[target].table;
    x.table_of_target_.emplace(target, e.table());
  }
  return x;
}

std::optional<PodDelta> PodDeltaLowering::Lower(std::shared_ptr<const Engine> next_engine,
                                                const ir::CompiledPolicy& installed,
                                                const std::vector<std::string>& changed_pods,
                                                std::string* why) const {
  std::string reason_storage;
  std::string& reason = why != nullptr ? *why : reason_storage;
  reason.clear();
  // Not expressible: says why (for the agent's log and for tests), lower whole.
  auto refuse = [&](absl::string_view r) -> std::optional<PodDelta> {
    if (reason.empty()) reason = std::string(r);
    return std::nullopt;
  };
  if (snapshot_ == nullptr || next_engine == nullptr) return refuse("no snapshot");
  const EngineState& prev = EngineAccess::State(*snapshot_);
  const EngineState& next = EngineAccess::State(*next_engine);
  // What the delta cannot change must be the very same objects.
  if (prev.atoms[0] != next.atoms[0] || prev.atoms[1] != next.atoms[1] ||
      prev.tier_policies != next.tier_policies ||
      prev.options.node_name != next.options.node_name ||
      prev.options.evaluation.always_allow_self != next.options.evaluation.always_allow_self ||
      installed.identities_size() != static_cast<int>(range_count_.size()) ||
      installed.tables_size() != static_cast<int>(table_target_.size())) {
    return refuse("atoms, tier policies, options or the program's shape differ");
  }
  std::vector<std::string> keys = changed_pods;
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  const absl::flat_hash_set<std::string> changed(keys.begin(), keys.end());

  struct Address {
    U128 address;
    uint32_t identity;
    const std::string* pod;
  };
  std::vector<Address> removed[2], added[2];
  std::map<uint32_t, std::vector<std::string>> identity_gains;  // identity -> new pods
  std::set<uint32_t> touched_identities;
  // A pod's addresses in one snapshot, each with its identity; false when not expressible.
  auto addresses = [&](const EngineState& s, uint32_t id, bool is_next, std::vector<Address>* out) {
    const internal::PodState& pod = *s.pods[id].state;
    for (size_t i = 0; i < pod.ips.size(); ++i) {
      const IpAddress& ip = pod.ips[i];
      for (size_t j = 0; j < i; ++j) {
        if (pod.ips[j] == ip) {  // listed twice: leave it to the whole lowering
          reason = "a pod lists an address twice";
          return false;
        }
      }
      if (prev.shared_ips.Find(ip) != nullptr || next.shared_ips.Find(ip) != nullptr) {
        reason = "a shared address";
        return false;
      }
      std::optional<uint32_t> owner = s.FindPodByIp(ip);
      if (!owner || *owner != id) {
        reason = "an address owned by another pod";
        return false;
      }
      int f = ip.is_v4() ? 0 : 1;
      uint32_t c = s.records[id].peer[f];
      if (c >= kSharedPeer) {
        reason = "a pod without a peer class";
        return false;
      }
      auto found = identity_of_class_.find(c);
      if (found == identity_of_class_.end()) {
        reason = "a peer class without an identity in the program";
        return false;
      }
      if (is_next) {
        // The same class id must mean the same class in both snapshots.
        if (c >= prev.peer_classes.size() || c >= next.peer_classes.size() ||
            !(prev.peer_classes[c] == next.peer_classes[c])) {
          reason = "a peer class id that means another class now";
          return false;
        }
      }
      out[f].push_back(Address{internal::ToU128(ip), found->second, &pod.key});
      touched_identities.insert(found->second);
      if (is_next) identity_gains[found->second].push_back(pod.key);
    }
    return true;
  };

  PodDelta out;
  out.next = next_engine;
  // Endpoints, in key order.
  struct EndpointChange {
    int begin, end;
    std::optional<ir::Endpoint> endpoint;
  };
  std::vector<std::pair<std::string, EndpointChange>> endpoint_changes;
  for (const std::string& key : keys) {
    std::optional<uint32_t> old_id = LivePodId(prev, key), new_id = LivePodId(next, key);
    if (old_id && !addresses(prev, *old_id, false, removed)) return refuse("?");
    if (new_id && !addresses(next, *new_id, true, added)) return refuse("?");
    const internal::PodState* pod = new_id   ? next.pods[*new_id].state.get()
                                    : old_id ? prev.pods[*old_id].state.get()
                                             : nullptr;
    if (pod == nullptr) continue;  // neither live (e.g. left out of networking both times)
    auto [pos, present] = EndpointPosition(installed, pod->namespace_name, pod->name);
    std::optional<ir::Endpoint> endpoint;
    if (new_id && next.OnNode(*pod)) {
      ir::Endpoint e;
      e.set_namespace_(pod->namespace_name);
      e.set_name(pod->name);
      for (const IpAddress& ip : pod->ips) e.add_ips(ip.ToString());
      uint32_t target = next.records[*new_id].target;
      if (target != kNone) {
        auto t = table_of_target_.find(target);
        if (t == table_of_target_.end()) return refuse("a target class without a table");
        e.set_selected(true);
        e.set_table(t->second);
      }
      endpoint = std::move(e);
    }
    std::string sort_key = SortKey(pod->namespace_name, pod->name);
    if (present) {
      const ir::Endpoint& old = installed.endpoints(pos);
      if (endpoint && google::protobuf::util::MessageDifferencer::Equals(old, *endpoint)) continue;
      if (old.selected()) out.endpoints_out.emplace_back(old.table(), sort_key);
    }
    if (!present && !endpoint) continue;
    if (endpoint && endpoint->selected())
      out.endpoints_in.emplace_back(endpoint->table(), sort_key);
    endpoint_changes.push_back(
        {sort_key, EndpointChange{pos, pos + (present ? 1 : 0), std::move(endpoint)}});
  }
  // Tables: the same engine tables (a pod event that makes a new peer class rebuilds the
  // tables of the policies its selectors are in). O(tables), no pass over pods.
  for (size_t t = 0; t < table_target_.size(); ++t) {
    uint32_t target = table_target_[t];
    // A table no endpoint names (an aligned program's tombstone, np/lower_align.h) stays
    // unnamed: no endpoint of the delta can take it (table_of_target_ does not know it).
    if (target == kNone && table_endpoints_[t] == 0) continue;
    if (target == kNone || target >= next.target_classes.size() || table_source_[t] == nullptr ||
        next.target_classes[target].table != table_source_[t]) {
      return refuse("an engine table rebuilt");
    }
  }

  // A table touched keeps an endpoint: one that lost its last would have to become a
  // tombstone (np/lower_align.h), which only a whole lowering makes. Ids are the installed
  // program's (stable, np/lower_align.h), so the order of tables' first endpoints does not
  // matter.
  {
    std::map<uint32_t, int64_t> change;
    for (const auto& [t, k] : out.endpoints_out) change[t]--;
    for (const auto& [t, k] : out.endpoints_in) change[t]++;
    for (const auto& [t, c] : change) {
      if (table_endpoints_[t] + c <= 0) return refuse("a table loses its last endpoint");
    }
  }
  for (auto& [sort_key, change] : endpoint_changes) {
    auto* edits = out.delta.mutable_endpoints();
    if (!edits->empty() && edits->rbegin()->end() == static_cast<uint32_t>(change.begin)) {
      ir::EndpointSliceEdit& last = *edits->rbegin();
      last.set_end(change.end);
      if (change.endpoint) *last.add_endpoints() = std::move(*change.endpoint);
      continue;
    }
    ir::EndpointSliceEdit* edit = edits->Add();
    edit->set_begin(change.begin);
    edit->set_end(change.end);
    if (change.endpoint) *edit->add_endpoints() = std::move(*change.endpoint);
  }

  // Ranges: around each changed address, the slice from the range before the one holding it
  // to the range after, re-emitted as LowerToIr emits it: the atoms' addresses with each pod
  // address carved out. The slice's ends are boundaries in both programs (an atom's start, or
  // an unchanged pod's address or the address after it), so the rest is untouched.
  std::map<uint32_t, int64_t> range_counts, external_counts;
  for (int f = 0; f < 2; ++f) {
    if (removed[f].empty() && added[f].empty()) continue;
    const Ranges& ranges = f == 0 ? installed.ipv4() : installed.ipv6();
    const internal::AtomTable& atoms = *next.atoms[f];
    std::vector<std::pair<int, int>> windows;
    for (const auto* list : {&removed[f], &added[f]}) {
      for (const Address& a : *list) {
        int i = RangeHolding(ranges, a.address);
        windows.emplace_back(std::max(0, i - 1), std::min(ranges.size(), i + 2));
      }
    }
    std::sort(windows.begin(), windows.end());
    std::vector<std::pair<int, int>> slices;
    for (const auto& w : windows) {
      if (!slices.empty() && w.first <= slices.back().second) {
        slices.back().second = std::max(slices.back().second, w.second);
      } else {
        slices.push_back(w);
      }
    }
    for (const auto& [begin, end] : slices) {
      const U128 span_first = internal::BytesValue(ranges[begin].first());
      const U128 span_last = internal::BytesValue(ranges[end - 1].last());
      std::vector<Address> pods;
      for (int i = begin; i < end; ++i) {
        const ir::AddressRange& r = ranges[i];
        range_counts[r.identity()]--;
        if (r.pod().empty()) {
          external_counts[r.identity()]--;
        } else if (changed.count(r.pod()) == 0) {
          pods.push_back(Address{internal::BytesValue(r.first()), r.identity(), &r.pod()});
        }
      }
      for (const Address& a : added[f]) {
        if (a.address >= span_first && a.address <= span_last) pods.push_back(a);
      }
      std::sort(pods.begin(), pods.end(),
                [](const Address& a, const Address& b) { return a.address < b.address; });
      for (size_t i = 1; i < pods.size(); ++i) {
        if (pods[i].address == pods[i - 1].address) return refuse("two pods at one address");
      }
      ir::RangeSliceEdit* edit = f == 0 ? out.delta.add_ipv4() : out.delta.add_ipv6();
      edit->set_begin(begin);
      edit->set_end(end);
      auto emit = [&](U128 first, U128 last, uint32_t identity, const std::string& pod) {
        ir::AddressRange* r = edit->add_ranges();
        r->set_first(internal::AddressBytes(first, f));
        r->set_last(internal::AddressBytes(last, f));
        r->set_identity(identity);
        r->set_pod(pod);
        for (std::string& cidr : internal::ToCidrs(first, last, f)) r->add_cidrs(std::move(cidr));
        range_counts[identity]++;
        if (pod.empty()) external_counts[identity]++;
      };
      size_t next_pod = 0;
      for (size_t ai = atoms.Find(span_first);
           ai < atoms.starts.size() && atoms.starts[ai] <= span_last; ++ai) {
        U128 start = std::max(atoms.starts[ai], span_first);
        U128 atom_end =
            ai + 1 < atoms.starts.size() ? atoms.starts[ai + 1] - 1 : internal::FamilyMax(f);
        U128 stop = std::min(atom_end, span_last);
        auto found = identity_of_class_.find(atoms.peer_class[ai]);
        std::optional<uint32_t> atom_identity;
        if (found != identity_of_class_.end()) atom_identity = found->second;
        U128 cursor = start;
        bool open = true;
        while (next_pod < pods.size() && pods[next_pod].address <= stop) {
          const Address& pa = pods[next_pod++];
          if (pa.address > cursor) {
            if (!atom_identity) return refuse("an atom without an identity");
            emit(cursor, pa.address - 1, *atom_identity, "");
          }
          emit(pa.address, pa.address, pa.identity, *pa.pod);
          if (pa.address == stop) {
            open = false;
            break;
          }
          cursor = pa.address + 1;
        }
        if (open) {
          if (!atom_identity) return refuse("an atom without an identity");
          emit(cursor, stop, *atom_identity, "");
        }
      }
      if (next_pod != pods.size()) return refuse("a pod outside its span");  // cannot happen
    }
  }
  // Identities: none may appear or vanish, nor change `external`.
  for (const auto& [id, change] : range_counts) {
    if (change == 0) continue;
    if (range_count_[id] + change <= 0) return refuse("an identity loses its last address");
    out.range_counts.emplace_back(id, change);
  }
  for (const auto& [id, change] : external_counts) {
    if (change == 0) continue;
    if ((external_count_[id] + change > 0) != installed.identities(id).external())
      return refuse("an identity gains or loses its external addresses");
    out.external_counts.emplace_back(id, change);
  }
  for (uint32_t id : touched_identities) {
    std::vector<std::string> pods;
    for (const std::string& p : installed.identities(id).pods()) {
      if (changed.count(p) == 0) pods.push_back(p);
    }
    auto gains = identity_gains.find(id);
    if (gains != identity_gains.end()) {
      pods.insert(pods.end(), gains->second.begin(), gains->second.end());
    }
    std::sort(pods.begin(), pods.end());
    pods.erase(std::unique(pods.begin(), pods.end()), pods.end());
    const auto& old = installed.identities(id).pods();
    if (std::equal(pods.begin(), pods.end(), old.begin(), old.end())) continue;
    ir::IdentityPodsEdit* edit = out.delta.add_identity_pods();
    edit->set_identity(id);
    for (std::string& p : pods) edit->add_pods(std::move(p));
  }
  return out;
}

void PodDeltaLowering::Commit(const PodDelta& applied) {
  for (const auto& [id, change] : applied.range_counts) range_count_[id] += change;
  for (const auto& [id, change] : applied.external_counts) external_count_[id] += change;
  for (const auto& [t, key] : applied.endpoints_out) table_endpoints_[t]--;
  for (const auto& [t, key] : applied.endpoints_in) table_endpoints_[t]++;
  snapshot_ = applied.next;
}

}  // namespace np
