#include "np/lower.h"

#include <algorithm>
#include <map>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "np/internal/engine_state.h"
#include "np/internal/ir_ranges.h"
#include "np/internal/lower_tables.h"

namespace np {
namespace {

using internal::EngineAccess;
using internal::EngineState;
using internal::kNone;
using internal::U128;

using internal::AddressBytes;
using internal::FamilyMax;
using internal::ToCidrs;

}  // namespace

absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine) {
  return LowerToIr(engine, LowerOptions());
}

absl::StatusOr<ir::CompiledPolicy> LowerToIr(const Engine& engine, const LowerOptions& options) {
  const EngineState& s = EngineAccess::State(engine);
  if (absl::Status refused = internal::RefuseUnenforceableDomainNames(s); !refused.ok()) return refused;
  ir::CompiledPolicy out;
  out.set_node(s.options.node_name);
  out.set_always_allow_self(s.options.evaluation.always_allow_self);

  // Identities: the peer classes some address carries, numbered densely in class order.
  std::map<uint32_t, uint32_t> identity_of_class;
  std::map<uint32_t, std::vector<std::string>> pods_of_class;
  std::map<uint32_t, bool> external_class;
  struct PodAddress {
    U128 address;
    uint32_t peer_class;
    std::string pod;
  };
  std::vector<PodAddress> pod_addresses[2];
  for (uint32_t p = 0; p < s.pods.size(); ++p) {
    const auto& pod = s.pods[p].state;
    if (pod == nullptr) continue;
    for (const IpAddress& ip : pod->ips) {
      int f = ip.is_v4() ? 0 : 1;
      uint32_t c = s.records[p].peer[f];  // internal::kSharedPeer for a shared address
      pods_of_class[c].push_back(pod->key);
      // A shared address has one range, under its owner (its first holder on this node).
      std::optional<uint32_t> owner = s.FindPodByIp(ip);
      if (!owner || *owner != p) continue;
      pod_addresses[f].push_back(PodAddress{internal::ToU128(ip), c, pod->key});
    }
  }
  // Ranges: the external atoms, with each pod address carved out of the atom holding it.
  struct Range {
    U128 first, last;
    uint32_t peer_class;
    std::string pod;
  };
  std::vector<Range> ranges[2];
  for (int f = 0; f < 2; ++f) {
    auto& pods = pod_addresses[f];
    std::sort(pods.begin(), pods.end(),
              [](const PodAddress& a, const PodAddress& b) { return a.address < b.address; });
    const internal::AtomTable& atoms = *s.atoms[f];
    size_t next_pod = 0;
    for (size_t i = 0; i < atoms.starts.size(); ++i) {
      U128 start = atoms.starts[i];
      U128 end = i + 1 < atoms.starts.size() ? atoms.starts[i + 1] - 1 : FamilyMax(f);
      uint32_t c = atoms.peer_class[i];
      U128 cursor = start;
      bool open = true;  // cursor..end still to emit
      while (next_pod < pods.size() && pods[next_pod].address <= end) {
        PodAddress& pa = pods[next_pod++];  // read once: its key is moved on
        if (pa.address > cursor) ranges[f].push_back(Range{cursor, pa.address - 1, c, ""});
        ranges[f].push_back(Range{pa.address, pa.address, pa.peer_class, std::move(pa.pod)});
        if (pa.address == end) {
          open = false;
          break;
        }
        cursor = pa.address + 1;
      }
      if (open) {
        ranges[f].push_back(Range{cursor, end, c, ""});
        external_class[c] = true;
      }
    }
  }
  for (int f = 0; f < 2; ++f) {
    for (const Range& r : ranges[f]) identity_of_class.emplace(r.peer_class, 0);
    for (const Range& r : ranges[f]) {
      if (r.pod.empty()) external_class[r.peer_class] = true;
    }
  }
  uint32_t next_identity = 0;
  std::vector<uint32_t> class_of_identity;  // kSharedPeer for the shared-address identity
  // identity_of_class as a vector by class (kNoIdentity: no address carries it; the
  // shared-address class is in no selector's set or interval's list, so it is left out):
  // the per-interval and per-rule lookups below were map finds over every identity.
  constexpr uint32_t kNoIdentity = internal::IdentityNumbering::kNoIdentity;
  std::vector<uint32_t> identity_by_class;
  for (auto& [c, id] : identity_of_class) {
    id = next_identity++;
    class_of_identity.push_back(c);
    if (c < internal::kSharedPeer) {
      if (identity_by_class.size() <= c) identity_by_class.resize(c + 1, kNoIdentity);
      identity_by_class[c] = id;
    }
    ir::Identity* identity = out.add_identities();
    identity->set_id(id);
    std::vector<std::string>& pods = pods_of_class[c];
    std::sort(pods.begin(), pods.end());
    pods.erase(std::unique(pods.begin(), pods.end()), pods.end());
    for (const std::string& pod : pods) identity->add_pods(pod);
    identity->set_external(external_class.count(c) > 0);
  }
  for (int f = 0; f < 2; ++f) {
    (f == 0 ? out.mutable_ipv4() : out.mutable_ipv6())->Reserve(static_cast<int>(ranges[f].size()));
    for (Range& r : ranges[f]) {
      ir::AddressRange* range = f == 0 ? out.add_ipv4() : out.add_ipv6();
      range->set_first(AddressBytes(r.first, f));
      range->set_last(AddressBytes(r.last, f));
      range->set_identity(identity_of_class.at(r.peer_class));
      range->set_pod(std::move(r.pod));
      for (std::string& cidr : ToCidrs(r.first, r.last, f)) range->add_cidrs(std::move(cidr));
    }
  }

  // Peer sets, interned by content (hashed: the key is moved in, not copied, and not
  // compared element-wise along a tree path).
  absl::flat_hash_map<std::pair<bool, std::vector<uint32_t>>, uint32_t> peer_set_ids;
  auto peer_set = [&](bool all, std::vector<uint32_t> identities) {
    auto [it, fresh] = peer_set_ids.try_emplace(std::make_pair(all, std::move(identities)),
                                                static_cast<uint32_t>(out.peer_sets_size()));
    if (!fresh) return it->second;
    ir::PeerSet* set = out.add_peer_sets();
    set->set_id(it->second);
    set->set_all(all);
    set->mutable_identities()->Add(it->first.second.begin(), it->first.second.end());
    return it->second;
  };
  internal::IdentityNumbering numbering;
  numbering.by_class = std::move(identity_by_class);
  numbering.live.resize(class_of_identity.size());
  for (uint32_t id = 0; id < numbering.live.size(); ++id) numbering.live[id] = id;
  internal::TableLowering tables(s, options.flatten_tiers, numbering, peer_set);

  // Tables of the node's endpoints' target classes, numbered by first endpoint.
  std::map<uint32_t, uint32_t> table_of_class;
  auto lower_table = [&](uint32_t target_class) {
    auto it = table_of_class.find(target_class);
    if (it != table_of_class.end()) return it->second;
    uint32_t id = static_cast<uint32_t>(out.tables_size());
    table_of_class.emplace(target_class, id);
    ir::Table* t = out.add_tables();
    t->set_id(id);
    tables.Lower(target_class, t);
    return id;
  };

  std::vector<std::pair<std::string, uint32_t>> node_pods;
  for (uint32_t p = 0; p < s.pods.size(); ++p) {
    const auto& pod = s.pods[p].state;
    if (pod == nullptr) continue;
    if (!s.options.node_name.empty() && pod->node_name != s.options.node_name) continue;
    node_pods.emplace_back(pod->namespace_name + '\0' + pod->name, p);
  }
  std::sort(node_pods.begin(), node_pods.end());
  for (const auto& [sort_key, p] : node_pods) {
    const internal::PodState& pod = *s.pods[p].state;
    ir::Endpoint* e = out.add_endpoints();
    e->set_namespace_(pod.namespace_name);
    e->set_name(pod.name);
    // Every address is listed under one endpoint: a shared one under its owner only (all
    // its holders are quarantined, so any of them would deny the same flows).
    for (const IpAddress& ip : pod.ips) {
      std::optional<uint32_t> owner = s.FindPodByIp(ip);
      if (owner && *owner == p) e->add_ips(ip.ToString());
    }
    for (const IpAddress& ip : s.SharedAddresses(pod)) e->add_shared_ips(ip.ToString());
    uint32_t target = s.records[p].target;
    if (target != kNone) {
      e->set_selected(true);
      e->set_table(lower_table(target));
    }
  }
  return out;
}

}  // namespace np
