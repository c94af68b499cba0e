// Engine updates: how a batch of changes turns one snapshot's state into the next.
//
// A full build is the same code path with every object arriving as an upsert, so an
// incremental snapshot and a fresh build of the same objects are made by one algorithm
// (and tests compare them verdict by verdict).
//
// The batch applies object changes, collecting what they invalidate, then recomputes in
// dependency order, touching only what is dirty:
//   namespaces' matching namespaceSelectors -> identities (selecting policies, matching peer
//   selectors) -> external address atoms -> pods' target and peer classes -> selector
//   bitsets of new peer classes -> policies whose peers gained a class -> tables of the
//   target classes that hold a dirty policy.
// Peer and target classes are interned by content and never change meaning, so a bit for
// class c in selector s's bitset is set exactly once: when c is created with s in its
// signature. Classes no pod uses any more stay until Compact().
#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/internal/engine_state.h"
#include "np/validation.h"

namespace np::internal {

// ----------------------------------------------------------------- CompiledSelector

CompiledSelector CompiledSelector::From(const k8s::LabelSelector& selector) {
  CompiledSelector out;
  for (const auto& [k, v] : selector.matchlabels()) out.match_labels.emplace_back(k, v);
  std::sort(out.match_labels.begin(), out.match_labels.end());
  for (const auto& req : selector.matchexpressions()) {
    Expression e;
    e.key = req.key();
    const std::string& op = req.operator_();
    e.op = op == "In"             ? Op::kIn
           : op == "NotIn"        ? Op::kNotIn
           : op == "Exists"       ? Op::kExists
           : op == "DoesNotExist" ? Op::kDoesNotExist
                                  : Op::kInvalid;
    e.values.assign(req.values().begin(), req.values().end());
    std::sort(e.values.begin(), e.values.end());
    e.values.erase(std::unique(e.values.begin(), e.values.end()), e.values.end());
    out.expressions.push_back(std::move(e));
  }
  std::sort(out.expressions.begin(), out.expressions.end(),
            [](const Expression& a, const Expression& b) {
              return std::tie(a.key, a.op, a.values) < std::tie(b.key, b.op, b.values);
            });
  return out;
}

bool CompiledSelector::Matches(const Labels& labels) const {
  for (const auto& [k, v] : match_labels) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  for (const Expression& e : expressions) {
    auto it = labels.find(e.key);
    bool has = it != labels.end();
    switch (e.op) {
      case Op::kIn:
        if (!has || !std::binary_search(e.values.begin(), e.values.end(), it->second)) {
          return false;
        }
        break;
      case Op::kNotIn:
        if (has && std::binary_search(e.values.begin(), e.values.end(), it->second)) {
          return false;
        }
        break;
      case Op::kExists:
        if (!has) return false;
        break;
      case Op::kDoesNotExist:
        if (has) return false;
        break;
      case Op::kInvalid:
        return false;
    }
  }
  return true;
}

std::string CompiledSelector::CanonicalKey() const {
  // Label keys and values cannot hold these separators (validation guarantees it).
  std::string out;
  for (const auto& [k, v] : match_labels) absl::StrAppend(&out, k, "=", v, ";");
  out += "|";
  for (const Expression& e : expressions) {
    absl::StrAppend(&out, e.key, " ", static_cast<int>(e.op), " ", absl::StrJoin(e.values, ","),
                    ";");
  }
  return out;
}

size_t AtomTable::Find(U128 address) const {
  size_t i = std::upper_bound(starts.begin(), starts.end(), address) - starts.begin();
  return i - 1;
}

namespace {

Protocol ProtocolOrTcp(const std::string& text) {
  absl::StatusOr<Protocol> p = ParseProtocol(text);
  return p.ok() ? *p : Protocol::kTCP;
}

// The last address of a prefix, as U128.
U128 PrefixEnd(const IpPrefix& p) {
  int width = p.family() == AddressFamily::kIPv4 ? 32 : 128;
  U128 start = ToU128(p.network());
  int host_bits = width - p.length();
  if (host_bits == 0) return start;
  U128 span = host_bits == 128 ? ~U128{0} : ((U128{1} << host_bits) - 1);
  return start | span;
}

U128 FamilyMax(int family_index) {
  return family_index == 0 ? U128{0xffffffffu} : ~U128{0};
}

void SetBit(Bitset& bits, uint32_t i) {
  size_t w = i >> 6;
  if (bits.size() <= w) bits.resize(w + 1, 0);
  bits[w] |= uint64_t{1} << (i & 63);
}

// A pod that takes no part in networking (finished, or on the host's network): the snapshot
// keeps its object aside (left_out_pods), in no class.
bool LeftOutOfNetworking(const k8s::Pod& pod) {
  const std::string& phase = pod.status().phase();
  return phase == "Succeeded" || phase == "Failed" || pod.spec().hostnetwork();
}

bool SameNamedPort(const NamedPort& a, const NamedPort& b) {
  return std::tie(a.name, a.protocol, a.port) == std::tie(b.name, b.protocol, b.port);
}

// Everything a snapshot reads of a networked pod but its key: labels, addresses (in the
// object's order: the first of each family is the one verdicts use), node and named container
// ports (sorted, as a named-port map is interned). Nothing else of the object — status
// conditions, resource version, annotations — changes an answer, which is what lets
// EngineState::Unchanged call a pod whose reading is equal a no-op.
void ReadPod(const k8s::Pod& pod, PodState* state, std::vector<NamedPort>* named) {
  for (const auto& [k, v] : pod.metadata().labels()) state->labels[k] = v;
  std::vector<std::string> ip_texts;
  for (const auto& ip : pod.status().podips()) ip_texts.push_back(ip.ip());
  if (ip_texts.empty() && !pod.status().podip().empty()) ip_texts.push_back(pod.status().podip());
  for (const std::string& text : ip_texts) {
    absl::StatusOr<IpAddress> a = IpAddress::Parse(text, /*allow_leading_zeros=*/true);
    if (!a.ok()) continue;
    state->ips.push_back(*a);
    if (a->is_v4() && !state->ipv4) state->ipv4 = *a;
    if (a->is_v6() && !state->ipv6) state->ipv6 = *a;
  }
  state->node_name = pod.spec().nodename();
  for (const auto& container : pod.spec().containers()) {
    for (const auto& port : container.ports()) {
      if (port.name().empty()) continue;
      named->push_back(NamedPort{port.name(), ProtocolOrTcp(port.protocol()),
                                 static_cast<uint16_t>(port.containerport())});
    }
  }
  std::sort(named->begin(), named->end(), [](const NamedPort& a, const NamedPort& b) {
    return std::tie(a.name, a.protocol, a.port) < std::tie(b.name, b.protocol, b.port);
  });
}

}  // namespace

// ------------------------------------------------------------------------- the batch

class Batch {
 public:
  Batch(EngineState& s, std::vector<Diagnostic>* diagnostics, bool validated)
      : s_(s), gen_(s.generation), diagnostics_(diagnostics), validated_(validated) {}

  absl::Status Run(absl::Span<const Change> changes, const Cluster* tiers_from) {
    if (tiers_from != nullptr &&
        (tiers_from->tier_policy_count() > 0 || tiers_from->node_count() > 0)) {
      CompileTiers(*tiers_from);
    }
    // The tier policies and Nodes as this batch leaves them, once a change touches one.
    std::optional<ClusterObjects> tier_objects;
    absl::flat_hash_set<std::string> changed_tier_objects;  // "Kind name"
    for (const Change& change : changes) {
      if (const auto* ns = std::get_if<k8s::Namespace>(&change.object)) {
        change.op == Change::Op::kDelete ? DeleteNamespace(*ns) : UpsertNamespace(*ns);
      } else if (const auto* pod = std::get_if<k8s::Pod>(&change.object)) {
        change.op == Change::Op::kDelete ? DeletePod(*pod) : UpsertPod(*pod);
      } else if (const auto* policy = std::get_if<k8s::NetworkPolicy>(&change.object)) {
        change.op == Change::Op::kDelete ? DeletePolicy(*policy) : UpsertPolicy(*policy);
      } else {
        if (!tier_objects) tier_objects = CurrentTierObjects();
        auto [kind, name] = TierObjectName(change);
        changed_tier_objects.insert(absl::StrCat(kind, " ", name));
        if (!ApplyTierChange(change, &*tier_objects).ok()) {
          Error(kind, name, "cannot delete: no such object");
        }
      }
    }
    if (tier_objects) RecompileTiers(*std::move(tier_objects), changed_tier_objects);
    if (!errors_.empty()) {
      return absl::InvalidArgumentError(absl::StrJoin(errors_, "\n"));
    }
    Recompute();
    PublishHotArrays();
    return absl::OkStatus();
  }

  // The table `key` would have without its tier policies (EngineState::NetworkPolicyTable).
  std::shared_ptr<const TargetTable> NetworkPolicyTable(TargetClassKey key) {
    key.tier_policies = 0;  // id list 0 is the empty list
    return BuildTable(key);
  }

 private:
  // ----------------------------------------------------------- object changes

  void Report(std::vector<Diagnostic> found) {
    for (Diagnostic& d : found) {
      if (d.is_error()) errors_.push_back(d.ToString());
      if (diagnostics_ != nullptr) diagnostics_->push_back(std::move(d));
    }
  }
  void Error(std::string kind, std::string object, std::string message) {
    Diagnostic d;
    d.kind = std::move(kind);
    d.object = std::move(object);
    d.message = std::move(message);
    Report({d});
  }

  // Validates unless the batch comes from a Cluster (validated when it was created).
  template <typename T, typename F>
  bool Invalid(const T& object, F validate) {
    if (validated_) return false;
    std::vector<Diagnostic> found = validate(object);
    bool bad = HasErrors(found);
    Report(std::move(found));
    return bad;
  }

  bool HasErrors(const std::vector<Diagnostic>& found) {
    for (const Diagnostic& d : found) {
      if (d.is_error()) return true;
    }
    return false;
  }

  void SetNamespace(const std::string& name, Labels labels,
                    std::shared_ptr<const Sourced<k8s::Namespace>> object) {
    labels[std::string(kNamespaceNameLabel)] = name;
    const std::shared_ptr<const NamespaceState>* old = s_.namespaces.Find(name);
    bool labels_changed = old == nullptr || (*old)->labels != labels;
    auto state = std::make_shared<NamespaceState>();
    state->name = name;
    state->labels = std::move(labels);
    state->object = std::move(object);
    s_.namespaces.Set(name, std::move(state), gen_);
    if (labels_changed) dirty_namespaces_.insert(name);
  }

  void EnsureNamespace(const std::string& name) {
    if (s_.namespaces.Find(name) == nullptr) SetNamespace(name, {}, nullptr);
  }

  void UpsertNamespace(const k8s::Namespace& ns) {
    if (Invalid(ns, ValidateNamespace)) return;
    Labels labels;
    for (const auto& [k, v] : ns.metadata().labels()) labels[k] = v;
    SetNamespace(ns.metadata().name(), std::move(labels),
                 std::make_shared<Sourced<k8s::Namespace>>(Sourced<k8s::Namespace>{ns, {}}));
  }

  void DeleteNamespace(const k8s::Namespace& ns) {
    const std::string& name = ns.metadata().name();
    const std::shared_ptr<const NamespaceState>* old = s_.namespaces.Find(name);
    if (old == nullptr || (*old)->object == nullptr) {
      Error("Namespace", name, "cannot delete: no such object");
      return;
    }
    // Pods and policies may still name it: it stays, implied, with only its name label.
    SetNamespace(name, {}, nullptr);
  }

  template <typename T>
  static std::string KeyOf(const T& object) {
    return absl::StrCat(object.metadata().namespace_(), "/", object.metadata().name());
  }

  std::optional<uint32_t> IpOwner(const IpAddress& a) const { return s_.FindPodByIp(a); }
  IpIndex& MutableIpIndex() {
    if (!ip_index_copied_) {
      // Copies 64 shard pointers; the index then copies each shard it writes to.
      auto copy = std::make_shared<IpIndex>(*s_.pod_by_ip);
      copy->ReleaseOwnership();
      s_.pod_by_ip = std::move(copy);
      ip_index_copied_ = true;
    }
    return const_cast<IpIndex&>(*s_.pod_by_ip);
  }
  // The classes stored with the address are filled in when the pod is recomputed.
  void SetIpOwner(const IpAddress& a, uint32_t pod) {
    PacketEntry entry;
    entry.pod = pod;
    MutableIpIndex().Set(a, entry);
    dirty_pods_.insert(pod);
  }
  void EraseIpOwner(const IpAddress& a) { MutableIpIndex().Erase(a); }

  // `ports` sorted (ReadPod).
  uint32_t InternNamedMap(std::vector<NamedPort> ports) {
    std::string key;
    for (const NamedPort& p : ports) {
      absl::StrAppend(&key, p.name, "/", static_cast<int>(p.protocol), "/", p.port, ";");
    }
    if (const uint32_t* id = s_.named_map_by_key.Find(key)) return *id;
    uint32_t id = static_cast<uint32_t>(s_.named_maps.size());
    s_.named_maps.PushBack(std::make_shared<const std::vector<NamedPort>>(std::move(ports)), gen_);
    s_.named_map_classes.PushBack(std::make_shared<const Bitset>(), gen_);
    s_.named_map_by_key.Set(key, id, gen_);
    return id;
  }

  uint32_t InternIdentity(const PodState& pod) {
    std::vector<std::pair<std::string, std::string>> labels(pod.labels.begin(), pod.labels.end());
    std::sort(labels.begin(), labels.end());
    std::string key = absl::StrCat(pod.namespace_name, "\x1f", pod.named_map, "\x1f");
    for (const auto& [k, v] : labels) absl::StrAppend(&key, k, "=", v, "\x1f");
    if (const uint32_t* id = s_.identity_by_key.Find(key)) return *id;
    uint32_t id = static_cast<uint32_t>(s_.identities.size());
    IdentitySlot slot;
    auto ik = std::make_shared<IdentityKey>();
    ik->namespace_name = pod.namespace_name;
    ik->labels = pod.labels;
    ik->named_map = pod.named_map;
    slot.key = std::move(ik);
    s_.identities.PushBack(std::move(slot), gen_);
    s_.identity_by_key.Set(key, id, gen_);
    return id;
  }

  // Ownership order of an address's holders: this snapshot's node's pods first (so a
  // node-scoped engine attributes a shared address to a pod it enforces), then by key.
  void SortHolders(std::vector<uint32_t>& holders) const {
    auto rank = [&](uint32_t p) {
      const PodState& pod = *s_.pods[p].state;
      return std::make_pair(!s_.OnNode(pod), std::cref(pod.key));
    };
    std::sort(holders.begin(), holders.end(),
              [&](uint32_t a, uint32_t b) { return rank(a) < rank(b); });
  }

  // A live pod now holds `a`. A second holder makes the address shared: every holder is
  // recomputed (quarantined) and the address goes to the first in ownership order.
  void AddAddress(const IpAddress& a, uint32_t id) {
    std::optional<uint32_t> owner = IpOwner(a);
    if (!owner) {
      SetIpOwner(a, id);
      return;
    }
    const std::vector<uint32_t>* shared = s_.shared_ips.Find(a);
    std::vector<uint32_t> holders = shared != nullptr ? *shared : std::vector<uint32_t>{*owner};
    holders.push_back(id);
    SortHolders(holders);
    for (uint32_t h : holders) dirty_pods_.insert(h);
    if (holders.front() != *owner) SetIpOwner(a, holders.front());
    s_.shared_ips.Set(a, std::move(holders), gen_);
  }

  // Pod `id` no longer holds `a`: the next holder owns it; with one left it is not shared.
  void RemoveAddress(const IpAddress& a, uint32_t id) {
    std::optional<uint32_t> owner = IpOwner(a);
    const std::vector<uint32_t>* shared = s_.shared_ips.Find(a);
    if (shared == nullptr) {
      if (owner && *owner == id) EraseIpOwner(a);
      return;
    }
    std::vector<uint32_t> holders = *shared;
    holders.erase(std::remove(holders.begin(), holders.end(), id), holders.end());
    for (uint32_t h : holders) dirty_pods_.insert(h);
    if (owner && *owner == id) SetIpOwner(a, holders.front());
    if (holders.size() == 1) {
      s_.shared_ips.Erase(a, gen_);
    } else {
      s_.shared_ips.Set(a, std::move(holders), gen_);
    }
  }

  void RemovePod(uint32_t id) {
    const PodSlot& slot = s_.pods[id];
    std::shared_ptr<const PodState> state = slot.state;
    s_.identities.Mutable(slot.identity, gen_).pods--;
    uint32_t target = s_.records[id].target;
    if (target != kNone) {
      s_.target_classes.Mutable(target, gen_).pods--;
      LeaveClass(id, target);
    }
    s_.records.Mutable(id, gen_) = PodRecord();
    touched_records_.insert(id);
    s_.pods.Mutable(id, gen_) = PodSlot();
    s_.pod_by_key.Erase(state->key, gen_);
    for (const IpAddress& a : state->ips) RemoveAddress(a, id);
    dirty_pods_.erase(id);
    s_.live_pods--;
  }

  void UpsertPod(k8s::Pod given) {
    if (given.metadata().namespace_().empty()) {
      given.mutable_metadata()->set_namespace_("default");
    }
    if (Invalid(given, ValidatePod)) return;
    // The snapshot keeps the object: moved in and read there (a copy here was a third of
    // the pod copies of a Build: perf, bench/RESULTS.md h73).
    auto object = std::make_shared<Sourced<k8s::Pod>>(Sourced<k8s::Pod>{std::move(given), {}});
    const k8s::Pod& pod = object->object;
    std::string key = KeyOf(pod);
    if (LeftOutOfNetworking(pod)) {
      if (const uint32_t* id = s_.pod_by_key.Find(key)) RemovePod(*id);
      s_.left_out_pods.Set(key, std::move(object), gen_);
      return;
    }
    s_.left_out_pods.Erase(key, gen_);
    auto state = std::make_shared<PodState>();
    state->key = key;
    state->namespace_name = pod.metadata().namespace_();
    state->name = pod.metadata().name();
    std::vector<NamedPort> named;
    ReadPod(pod, state.get(), &named);
    state->named_map = InternNamedMap(std::move(named));
    state->object = std::move(object);
    if (const uint32_t* old = s_.pod_by_key.Find(key)) RemovePod(*old);
    EnsureNamespace(state->namespace_name);

    uint32_t identity = InternIdentity(*state);
    s_.identities.Mutable(identity, gen_).pods++;
    touched_identities_.insert(identity);
    uint32_t id = static_cast<uint32_t>(s_.pods.size());
    std::vector<IpAddress> ips = state->ips;
    s_.pod_by_key.Set(key, id, gen_);
    s_.pods.PushBack(PodSlot{std::move(state), identity}, gen_);
    s_.records.PushBack(PodRecord(), gen_);
    s_.class_links.PushBack(ClassLink(), gen_);
    s_.live_pods++;
    dirty_pods_.insert(id);
    for (const IpAddress& a : ips) AddAddress(a, id);
  }

  void DeletePod(k8s::Pod pod) {
    if (pod.metadata().namespace_().empty()) pod.mutable_metadata()->set_namespace_("default");
    std::string key = KeyOf(pod);
    if (const uint32_t* id = s_.pod_by_key.Find(key)) {
      RemovePod(*id);
    } else if (!s_.left_out_pods.Erase(key, gen_)) {
      Error("Pod", key, "cannot delete: no such object");
    }
  }

  // ---- selectors

  uint32_t InternSelector(PeerSelector selector) {
    if (const uint32_t* id = s_.selector_by_key.Find(selector.key)) {
      s_.selector_refs.Mutable(*id, gen_)++;
      return *id;
    }
    uint32_t id = static_cast<uint32_t>(s_.selectors.size());
    switch (selector.kind) {
      case PeerSelector::Kind::kPodsInNamespace: {
        const std::vector<uint32_t>* old =
            s_.pod_selectors_by_namespace.Find(selector.policy_namespace);
        std::vector<uint32_t> list = old ? *old : std::vector<uint32_t>();
        list.push_back(id);
        s_.pod_selectors_by_namespace.Set(selector.policy_namespace, std::move(list), gen_);
        label_dirty_namespaces_.insert(selector.policy_namespace);
        break;
      }
      case PeerSelector::Kind::kNamespaces: {
        auto list = std::make_shared<std::vector<uint32_t>>(*s_.namespace_selectors);
        list->push_back(id);
        s_.namespace_selectors = std::move(list);
        new_namespace_selectors_.push_back(id);
        break;
      }
      case PeerSelector::Kind::kNetwork:
      case PeerSelector::Kind::kNodeAddresses:
        s_.has_tier_address_selectors = true;
        [[fallthrough]];
      case PeerSelector::Kind::kIpBlock: {
        auto list = std::make_shared<std::vector<uint32_t>>(*s_.ipblock_selectors);
        list->push_back(id);
        s_.ipblock_selectors = std::move(list);
        ipblocks_changed_ = true;
        new_block_ids_.push_back(id);
        break;
      }
    }
    s_.selector_by_key.Set(selector.key, id, gen_);
    s_.selectors.PushBack(std::make_shared<const PeerSelector>(std::move(selector)), gen_);
    s_.selector_refs.PushBack(1, gen_);
    s_.selector_bits.PushBack(std::make_shared<const Bitset>(), gen_);
    s_.selector_policies.PushBack(std::make_shared<const std::vector<uint32_t>>(), gen_);
    return id;
  }

  void ReleaseSelector(uint32_t id) {
    if (--s_.selector_refs.Mutable(id, gen_) > 0) return;
    std::shared_ptr<const PeerSelector> selector = s_.selectors[id];
    s_.selectors.Mutable(id, gen_) = nullptr;
    s_.selector_by_key.Erase(selector->key, gen_);
    auto without = [id](std::vector<uint32_t> list) {
      list.erase(std::remove(list.begin(), list.end(), id), list.end());
      return list;
    };
    switch (selector->kind) {
      case PeerSelector::Kind::kPodsInNamespace:
        s_.pod_selectors_by_namespace.Set(
            selector->policy_namespace,
            without(*s_.pod_selectors_by_namespace.Find(selector->policy_namespace)), gen_);
        label_dirty_namespaces_.insert(selector->policy_namespace);
        break;
      case PeerSelector::Kind::kNamespaces: {
        s_.namespace_selectors =
            std::make_shared<std::vector<uint32_t>>(without(*s_.namespace_selectors));
        std::vector<std::string> holders;
        s_.namespace_matches.ForEach([&](const std::string& ns, const std::vector<uint32_t>& l) {
          if (std::find(l.begin(), l.end(), id) != l.end()) holders.push_back(ns);
        });
        for (const std::string& ns : holders) {
          s_.namespace_matches.Set(ns, without(*s_.namespace_matches.Find(ns)), gen_);
          label_dirty_namespaces_.insert(ns);
        }
        break;
      }
      case PeerSelector::Kind::kIpBlock:
      case PeerSelector::Kind::kNetwork:
      case PeerSelector::Kind::kNodeAddresses:
        s_.ipblock_selectors =
            std::make_shared<std::vector<uint32_t>>(without(*s_.ipblock_selectors));
        ipblocks_changed_ = true;
        changed_blocks_.push_back(selector);
        break;
    }
  }

  PeerSelector MakeSelector(const std::string& policy_namespace,
                            const k8s::NetworkPolicyPeer& peer) {
    PeerSelector s;
    if (peer.has_ipblock()) {
      s.kind = PeerSelector::Kind::kIpBlock;
      s.cidr = *IpPrefix::Parse(peer.ipblock().cidr(), /*allow_leading_zeros=*/true);
      s.key = absl::StrCat("ip:", s.cidr.ToString());
      std::vector<std::string> excepts;
      for (const std::string& text : peer.ipblock().except()) {
        IpPrefix e = *IpPrefix::Parse(text, /*allow_leading_zeros=*/true);
        s.excepts.push_back(e);
        excepts.push_back(e.ToString());
      }
      std::sort(excepts.begin(), excepts.end());
      absl::StrAppend(&s.key, "-", absl::StrJoin(excepts, ","));
      return s;
    }
    if (peer.has_podselector()) s.pod_selector = CompiledSelector::From(peer.podselector());
    std::string pod_key = s.pod_selector ? s.pod_selector->CanonicalKey() : "*";
    if (peer.has_namespaceselector()) {
      s.kind = PeerSelector::Kind::kNamespaces;
      s.namespace_selector = CompiledSelector::From(peer.namespaceselector());
      s.key = absl::StrCat("ns:", s.namespace_selector.CanonicalKey(), "/pod:", pod_key);
    } else {
      s.kind = PeerSelector::Kind::kPodsInNamespace;
      s.policy_namespace = policy_namespace;
      s.key = absl::StrCat("in:", policy_namespace, "/pod:", pod_key);
    }
    return s;
  }

  // ---- policies

  std::shared_ptr<CompiledPolicy> CompilePolicy(const k8s::NetworkPolicy& policy) {
    auto out = std::make_shared<CompiledPolicy>();
    out->namespace_name = policy.metadata().namespace_();
    out->name = policy.metadata().name();
    out->key = KeyOf(policy);
    const k8s::NetworkPolicySpec& spec = policy.spec();
    out->pod_selector = CompiledSelector::From(spec.podselector());
    if (spec.policytypes_size() > 0) {
      for (const std::string& t : spec.policytypes()) {
        if (t == "Ingress") out->affects[0] = true;
        if (t == "Egress") out->affects[1] = true;
      }
    } else {
      out->affects[0] = true;
      out->affects[1] = spec.egress_size() > 0;
    }
    auto compile_rule = [&](const auto& peers, const auto& ports) {
      CompiledRule rule;
      rule.all_peers = peers.empty();
      for (const k8s::NetworkPolicyPeer& peer : peers) {
        uint32_t id = InternSelector(MakeSelector(out->namespace_name, peer));
        rule.selectors.push_back(id);
      }
      rule.all_ports = ports.empty();
      for (const k8s::NetworkPolicyPort& port : ports) {
        CompiledPort p;
        p.protocol = port.has_protocol() ? ProtocolOrTcp(port.protocol()) : Protocol::kTCP;
        if (!port.has_port()) {
          p.kind = CompiledPort::Kind::kAllPorts;
        } else if (port.port().type() == 1) {
          p.kind = CompiledPort::Kind::kNamed;
          p.name = port.port().strval();
          rule.has_named_ports = true;
        } else {
          p.kind = CompiledPort::Kind::kRange;
          p.first = static_cast<uint16_t>(port.port().intval());
          p.last = static_cast<uint16_t>(port.has_endport() ? port.endport() : p.first);
        }
        rule.ports.push_back(std::move(p));
      }
      return rule;
    };
    for (const auto& rule : spec.ingress()) {
      out->rules[0].push_back(compile_rule(rule.from(), rule.ports()));
    }
    for (const auto& rule : spec.egress()) {
      out->rules[1].push_back(compile_rule(rule.to(), rule.ports()));
      if (out->rules[1].back().has_named_ports) out->has_egress_named_ports = true;
    }
    out->object =
        std::make_shared<Sourced<k8s::NetworkPolicy>>(Sourced<k8s::NetworkPolicy>{policy, {}});
    return out;
  }

  // The selectors policy's rules name, each once, ascending.
  static std::vector<uint32_t> NamedSelectors(const CompiledPolicy& policy) {
    std::vector<uint32_t> out;
    for (const auto& rules : policy.rules) {
      for (const CompiledRule& rule : rules) {
        out.insert(out.end(), rule.selectors.begin(), rule.selectors.end());
      }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  // Policy `id` joins (`add`) or leaves the per-selector policy lists and the list of
  // policies with egress named ports (EngineState::selector_policies). A copy of each list
  // it is on: O(the lists' lengths), a policy event's few selectors.
  void IndexPolicySelectors(uint32_t id, const CompiledPolicy& policy, bool add) {
    auto edit = [&](const std::vector<uint32_t>* old) {
      std::vector<uint32_t> list = old != nullptr ? *old : std::vector<uint32_t>();
      auto at = std::lower_bound(list.begin(), list.end(), id);
      if (add && (at == list.end() || *at != id)) list.insert(at, id);
      if (!add && at != list.end() && *at == id) list.erase(at);
      return std::make_shared<const std::vector<uint32_t>>(std::move(list));
    };
    for (uint32_t s : NamedSelectors(policy)) {
      s_.selector_policies.Mutable(s, gen_) = edit(s_.selector_policies[s].get());
    }
    if (policy.has_egress_named_ports) {
      s_.egress_named_policies = edit(s_.egress_named_policies.get());
    }
  }

  void RemovePolicy(uint32_t id) {
    std::shared_ptr<const CompiledPolicy> policy = s_.policies[id];
    IndexPolicySelectors(id, *policy, /*add=*/false);
    for (const auto& rules : policy->rules) {
      for (const CompiledRule& rule : rules) {
        for (uint32_t s : rule.selectors) ReleaseSelector(s);
      }
    }
    s_.policies.Mutable(id, gen_) = nullptr;
    s_.policy_by_key.Erase(policy->key, gen_);
    std::vector<uint32_t> list = *s_.policies_by_namespace.Find(policy->namespace_name);
    list.erase(std::remove(list.begin(), list.end(), id), list.end());
    s_.policies_by_namespace.Set(policy->namespace_name, std::move(list), gen_);
    target_dirty_namespaces_.insert(policy->namespace_name);
    dirty_policies_.insert(id);
    s_.live_policies--;
  }

  void UpsertPolicy(k8s::NetworkPolicy policy) {
    if (policy.metadata().namespace_().empty()) {
      policy.mutable_metadata()->set_namespace_("default");
    }
    if (Invalid(policy, ValidateNetworkPolicy)) return;
    // Intern the new selectors before releasing the old policy's, so that peers both
    // versions share keep their ids (and their classes).
    std::shared_ptr<CompiledPolicy> compiled = CompilePolicy(policy);
    if (const uint32_t* old = s_.policy_by_key.Find(compiled->key)) RemovePolicy(*old);
    EnsureNamespace(compiled->namespace_name);
    uint32_t id = static_cast<uint32_t>(s_.policies.size());
    s_.policy_by_key.Set(compiled->key, id, gen_);
    const std::vector<uint32_t>* old_list = s_.policies_by_namespace.Find(compiled->namespace_name);
    std::vector<uint32_t> list = old_list ? *old_list : std::vector<uint32_t>();
    list.push_back(id);
    s_.policies_by_namespace.Set(compiled->namespace_name, std::move(list), gen_);
    target_dirty_namespaces_.insert(compiled->namespace_name);
    IndexPolicySelectors(id, *compiled, /*add=*/true);
    s_.policies.PushBack(std::move(compiled), gen_);
    dirty_policies_.insert(id);
    s_.live_policies++;
  }

  void DeletePolicy(k8s::NetworkPolicy policy) {
    if (policy.metadata().namespace_().empty()) {
      policy.mutable_metadata()->set_namespace_("default");
    }
    std::string key = KeyOf(policy);
    const uint32_t* id = s_.policy_by_key.Find(key);
    if (id == nullptr) {
      Error("NetworkPolicy", key, "cannot delete: no such object");
      return;
    }
    RemovePolicy(*id);
  }

  // ---- policy tiers (fixed for the life of the state: compiled once, before any pod)

  // One tier peer as interned selectors (engine_state.h, top: "Peers").
  CompiledTierPeer CompileTierPeer(const Cluster& cluster, const tiers::Peer& peer) {
    CompiledTierPeer out;
    out.kind = peer.kind;
    PeerSelector s;
    switch (peer.kind) {
      case tiers::Peer::Kind::kNamespaces:
      case tiers::Peer::Kind::kPods: {
        // The same key as the NetworkPolicy peer {namespaceSelector[, podSelector]}: equal
        // peers share one id.
        s.kind = PeerSelector::Kind::kNamespaces;
        s.namespace_selector = CompiledSelector::From(peer.namespace_selector);
        if (peer.kind == tiers::Peer::Kind::kPods) {
          s.pod_selector = CompiledSelector::From(peer.pod_selector);
        }
        s.key = absl::StrCat("ns:", s.namespace_selector.CanonicalKey(),
                             "/pod:", s.pod_selector ? s.pod_selector->CanonicalKey() : "*");
        out.selectors.push_back(InternSelector(std::move(s)));
        break;
      }
      case tiers::Peer::Kind::kNetworks:
        for (const IpPrefix& network : peer.networks) {
          PeerSelector n;
          n.kind = PeerSelector::Kind::kNetwork;
          n.cidr = network;
          n.key = absl::StrCat("net:", network.ToString());
          out.selectors.push_back(InternSelector(std::move(n)));
        }
        break;
      case tiers::Peer::Kind::kNodes: {
        // "It selects the nodeIPs as the peer type by matching on the IPs present in the
        // node.Status.Addresses field of the node."
        CompiledSelector nodes = CompiledSelector::From(peer.node_selector);
        std::vector<IpPrefix> addresses;
        for (int n = 0; n < cluster.node_count(); ++n) {
          const NodeInfo& node = cluster.node(n);
          if (!nodes.Matches(node.labels)) continue;
          for (const IpAddress& a : node.addresses) {
            addresses.push_back(IpPrefix(a, a.is_v4() ? 32 : 128));
          }
        }
        std::sort(addresses.begin(), addresses.end(), [](const IpPrefix& a, const IpPrefix& b) {
          return a.ToString() < b.ToString();
        });
        addresses.erase(std::unique(addresses.begin(), addresses.end(),
                                    [](const IpPrefix& a, const IpPrefix& b) {
                                      return a.ToString() == b.ToString();
                                    }),
                        addresses.end());
        if (addresses.empty()) break;  // no Node: matches nothing
        s.kind = PeerSelector::Kind::kNodeAddresses;
        s.key = "nodes:";
        for (const IpPrefix& a : addresses) absl::StrAppend(&s.key, a.ToString(), ",");
        s.addresses = std::move(addresses);
        out.selectors.push_back(InternSelector(std::move(s)));
        break;
      }
      case tiers::Peer::Kind::kDomainNames:
        break;  // never decidable from objects: no selector, explain says so
    }
    return out;
  }

  void CompileTiers(const Cluster& cluster) {
    auto compiled = std::make_shared<std::vector<CompiledTierPolicy>>();
    for (int i = 0; i < cluster.tier_policy_count(); ++i) {
      const tiers::TierPolicy& in = cluster.tier_policy(i);  // in evaluation order
      CompiledTierPolicy& out = compiled->emplace_back();
      out.tier = in.tier;
      out.priority = in.priority;
      out.key = in.Key();
      out.namespace_selector = CompiledSelector::From(in.subject.namespace_selector);
      if (in.subject.pod_selector) {
        out.pod_selector = CompiledSelector::From(*in.subject.pod_selector);
      }
      for (int d = 0; d < 2; ++d) {
        for (const tiers::Rule& rule : in.rules(static_cast<Direction>(d))) {
          CompiledTierRule& r = out.rules[d].emplace_back();
          r.name = rule.name;
          r.action = rule.action;
          for (const tiers::Peer& peer : rule.peers) r.peers.push_back(CompileTierPeer(cluster, peer));
          // "If Ports is not set then the rule does not filter traffic via port."
          r.all_ports = rule.ports.empty();
          for (const tiers::PortMatch& port : rule.ports) {
            CompiledPort p;
            p.protocol = port.protocol;
            if (port.named_port.empty()) {
              p.kind = CompiledPort::Kind::kRange;
              p.first = port.range.first;
              p.last = port.range.last;
            } else {
              p.kind = CompiledPort::Kind::kNamed;
              p.name = port.named_port;
              p.any_protocol = true;
              if (d == 1) out.has_egress_named_ports = true;
            }
            r.ports.push_back(std::move(p));
          }
        }
      }
    }
    s_.tier_policies = std::move(compiled);
    // (The objects themselves, EngineState::tier_objects, Engine::Build keeps from its own
    // copy of the cluster and RecompileTiers from the tiers' cluster: a copy of `cluster`
    // here copied every pod and policy of a Build too, a seventh of a tiered Build at 10k
    // pods for a handful of objects kept: bench/RESULTS.md, h73.)
  }

  // ---- tier policies and Nodes as changes

  // A copy of the snapshot's tier policies and Nodes, for a batch to edit.
  ClusterObjects CurrentTierObjects() const {
    ClusterObjects objects;
    if (s_.tier_objects != nullptr) {
      objects.admin_network_policies = s_.tier_objects->admin_network_policies;
      objects.baseline_admin_network_policies = s_.tier_objects->baseline_admin_network_policies;
      objects.cluster_network_policies = s_.tier_objects->cluster_network_policies;
      objects.nodes = s_.tier_objects->nodes;
    }
    return objects;
  }

  // The kind ("AdminNetworkPolicy") and name of a tier policy or Node change.
  static std::pair<std::string, std::string> TierObjectName(const Change& change) {
    return std::visit(
        [](const auto& object) {
          const std::string& type = object.GetTypeName();
          return std::make_pair(type.substr(type.rfind('.') + 1), object.metadata().name());
        },
        change.object);
  }

  // Replaces the compiled tiers with those of `objects` (the tier policies and Nodes after
  // this batch), validated as Cluster::Create validates them. Tier policy ids are
  // evaluation order, so adding, removing or re-prioritizing one renumbers the others, and a
  // Node's labels or addresses change the `nodes` peers' address selectors: the policies are
  // recompiled from the objects (cheap: a handful of objects) and re-interned, keeping the
  // ids of the selectors old and new share. What depends on them is then recomputed by the
  // usual machinery: every identity's tier list (and so its pods' target class), the atoms
  // when address selectors came or went, and every table that holds a tier policy. Pods,
  // NetworkPolicies and tables without tiers are left as they are.
  void RecompileTiers(ClusterObjects objects,
                      const absl::flat_hash_set<std::string>& changed_objects) {
    std::vector<Diagnostic> found;
    absl::StatusOr<Cluster> tiers = Cluster::Create(std::move(objects), &found);
    // The other objects were valid before: only the changed ones can be wrong, and warnings
    // about objects the batch did not touch were reported when they came.
    std::vector<Diagnostic> reported;
    for (Diagnostic& d : found) {
      if (d.is_error() || changed_objects.count(absl::StrCat(d.kind.str(), " ", d.object.str()))) {
        reported.push_back(std::move(d));
      }
    }
    const bool reported_error = HasErrors(reported);
    Report(std::move(reported));
    if (!tiers.ok()) {
      if (!reported_error) Error("", "", std::string(tiers.status().message()));
      return;
    }
    if (!errors_.empty()) return;  // the batch is discarded: nothing to compile
    std::shared_ptr<const std::vector<CompiledTierPolicy>> old = s_.tier_policies;
    // Intern the new selectors before releasing the old ones, so that peers both share keep
    // their ids (and their peer classes).
    CompileTiers(*tiers);
    s_.tier_objects = std::make_shared<const ClusterObjects>(tiers->ToObjects());
    size_t old_count = 0;
    if (old != nullptr) {
      old_count = old->size();
      for (const CompiledTierPolicy& policy : *old) {
        for (const auto& rules : policy.rules) {
          for (const CompiledTierRule& rule : rules) {
            for (const CompiledTierPeer& peer : rule.peers) {
              for (uint32_t selector : peer.selectors) ReleaseSelector(selector);
            }
          }
        }
      }
    }
    s_.has_tier_address_selectors = false;
    for (uint32_t id : *s_.ipblock_selectors) {
      PeerSelector::Kind kind = s_.selectors[id]->kind;
      if (kind == PeerSelector::Kind::kNetwork || kind == PeerSelector::Kind::kNodeAddresses) {
        s_.has_tier_address_selectors = true;
      }
    }
    // Every identity's tier list may have changed (subjects, and ids renumbered).
    s_.namespaces.ForEach([&](const std::string& name, const auto&) {
      target_dirty_namespaces_.insert(name);
    });
    // Tier policy ids name other policies now: every table holding one is rebuilt.
    for (uint32_t t = 0; t < std::max(old_count, s_.tier_policies->size()); ++t) {
      dirty_tier_policies_.insert(t);
    }
    tiers_recompiled_ = true;
  }

  // -------------------------------------------------------------- recomputation

  uint32_t InternIdList(std::vector<uint32_t> ids) {
    if (const uint32_t* id = s_.id_list_by_value.Find(ids)) return *id;
    uint32_t id = static_cast<uint32_t>(s_.id_lists.size());
    s_.id_list_by_value.Set(ids, id, gen_);
    s_.id_lists.PushBack(std::make_shared<const std::vector<uint32_t>>(std::move(ids)), gen_);
    return id;
  }

  uint32_t InternPeerClass(const PeerClassKey& key) {
    if (const uint32_t* id = s_.peer_class_by_key.Find(key)) return *id;
    uint32_t id = static_cast<uint32_t>(s_.peer_classes.size());
    s_.peer_class_by_key.Set(key, id, gen_);
    s_.peer_classes.PushBack(key, gen_);
    new_peer_classes_.push_back(id);
    return id;
  }

  uint32_t InternTargetClass(const TargetClassKey& key) {
    if (const uint32_t* id = s_.target_class_by_key.Find(key)) return *id;
    uint32_t id = static_cast<uint32_t>(s_.target_classes.size());
    s_.target_class_by_key.Set(key, id, gen_);
    TargetClassSlot slot;
    slot.key = key;
    s_.target_classes.PushBack(std::move(slot), gen_);
    return id;
  }

  void RecomputeNamespaceMatches() {
    const std::vector<uint32_t>& all = *s_.namespace_selectors;
    // New namespaceSelectors, against every namespace.
    if (!new_namespace_selectors_.empty()) {
      std::vector<std::pair<std::string, std::vector<uint32_t>>> updates;
      s_.namespaces.ForEach([&](const std::string& name,
                                const std::shared_ptr<const NamespaceState>& ns) {
        if (dirty_namespaces_.count(name)) return;  // recomputed in full below
        std::vector<uint32_t> added;
        for (uint32_t id : new_namespace_selectors_) {
          if (s_.selectors[id] != nullptr &&
              s_.selectors[id]->namespace_selector.Matches(ns->labels)) {
            added.push_back(id);
          }
        }
        if (added.empty()) return;
        const std::vector<uint32_t>* old = s_.namespace_matches.Find(name);
        std::vector<uint32_t> list = old ? *old : std::vector<uint32_t>();
        list.insert(list.end(), added.begin(), added.end());
        updates.emplace_back(name, std::move(list));
      });
      for (auto& [name, list] : updates) {
        label_dirty_namespaces_.insert(name);
        s_.namespace_matches.Set(name, std::move(list), gen_);
      }
    }
    // Namespaces that are new or whose labels changed, against every namespaceSelector.
    for (const std::string& name : dirty_namespaces_) {
      const NamespaceState& ns = **s_.namespaces.Find(name);
      std::vector<uint32_t> list;
      for (uint32_t id : all) {
        if (s_.selectors[id]->namespace_selector.Matches(ns.labels)) list.push_back(id);
      }
      s_.namespace_matches.Set(name, std::move(list), gen_);
      label_dirty_namespaces_.insert(name);
    }
  }

  // Which policies select the identity, and which non-ipBlock peers match it.
  void RecomputeIdentity(uint32_t id, absl::flat_hash_set<uint32_t>& changed) {
    IdentitySlot& slot = s_.identities.Mutable(id, gen_);
    const IdentityKey& key = *slot.key;
    std::vector<uint32_t> policies;
    if (const std::vector<uint32_t>* list = s_.policies_by_namespace.Find(key.namespace_name)) {
      for (uint32_t p : *list) {
        if (s_.policies[p]->pod_selector.Matches(key.labels)) policies.push_back(p);
      }
    }
    std::sort(policies.begin(), policies.end());
    std::vector<uint32_t> peers;
    auto pod_matches = [&](uint32_t s) {
      const PeerSelector& sel = *s_.selectors[s];
      return !sel.pod_selector || sel.pod_selector->Matches(key.labels);
    };
    if (const auto* list = s_.pod_selectors_by_namespace.Find(key.namespace_name)) {
      for (uint32_t s : *list) {
        if (pod_matches(s)) peers.push_back(s);
      }
    }
    if (const auto* list = s_.namespace_matches.Find(key.namespace_name)) {
      for (uint32_t s : *list) {
        if (pod_matches(s)) peers.push_back(s);
      }
    }
    std::sort(peers.begin(), peers.end());
    uint32_t target_policies = InternIdList(std::move(policies));
    uint32_t label_part = InternIdList(std::move(peers));
    uint32_t tier_policies = InternIdList(SelectingTierPolicies(key));
    if (target_policies != slot.target_policies || label_part != slot.label_part ||
        tier_policies != slot.tier_policies) {
      slot.target_policies = target_policies;
      slot.label_part = label_part;
      slot.tier_policies = tier_policies;
      changed.insert(id);
    }
  }

  // The tier policies whose subject selects the identity's pods, in evaluation order (their
  // ids). "Namespaces is used to select pods via namespace selectors." "Pods is used to
  // select pods via namespace AND pod selectors."
  std::vector<uint32_t> SelectingTierPolicies(const IdentityKey& key) {
    std::vector<uint32_t> out;
    if (!s_.has_tier_policies()) return out;
    const Labels& namespace_labels = (*s_.namespaces.Find(key.namespace_name))->labels;
    const std::vector<CompiledTierPolicy>& all = *s_.tier_policies;
    for (uint32_t t = 0; t < all.size(); ++t) {
      if (!all[t].namespace_selector.Matches(namespace_labels)) continue;
      if (all[t].pod_selector && !all[t].pod_selector->Matches(key.labels)) continue;
      out.push_back(t);
    }
    return out;
  }

  void RebuildAtoms() {
    for (int f = 0; f < 2; ++f) {
      // Each ipBlock contributes its cidr minus excepts as +1/-1 events per selector.
      std::map<U128, std::vector<std::pair<uint32_t, int>>> events;
      for (uint32_t id : *s_.ipblock_selectors) {
        const PeerSelector& sel = *s_.selectors[id];
        auto add = [&](const IpPrefix& p, int delta) {
          if (FamilyIndex(p.family()) != f) return;
          events[ToU128(p.network())].emplace_back(id, delta);
          U128 end = PrefixEnd(p);
          if (end != FamilyMax(f)) events[end + 1].emplace_back(id, -delta);
        };
        if (sel.kind == PeerSelector::Kind::kNodeAddresses) {
          for (const IpPrefix& a : sel.addresses) add(a, +1);  // distinct: never overlap
          continue;
        }
        add(sel.cidr, +1);
        for (const IpPrefix& e : sel.excepts) {
          if (sel.cidr.Contains(e)) add(e, -1);
        }
      }
      auto atoms = std::make_shared<AtomTable>();
      absl::flat_hash_map<uint32_t, int> depth;
      std::vector<uint32_t> active;
      auto emit = [&](U128 start) {
        active.clear();
        for (const auto& [id, d] : depth) {
          if (d > 0) active.push_back(id);
        }
        std::sort(active.begin(), active.end());
        uint32_t part = InternIdList(active);
        if (!atoms->ipblock_part.empty() && atoms->ipblock_part.back() == part) return;
        atoms->starts.push_back(start);
        atoms->ipblock_part.push_back(part);
      };
      if (events.empty() || events.begin()->first != 0) emit(0);
      for (const auto& [at, changes] : events) {
        for (const auto& [id, delta] : changes) depth[id] += delta;
        emit(at);
      }
      for (uint32_t part : atoms->ipblock_part) {
        atoms->peer_class.push_back(InternPeerClass(PeerClassKey{0, part, 0}));
      }
      s_.atoms[f] = std::move(atoms);
    }
  }

  void RecomputePod(uint32_t id) {
    const PodSlot& slot = s_.pods[id];
    if (slot.state == nullptr) return;
    const PodState& pod = *slot.state;
    const IdentitySlot& identity = s_.identities[slot.identity];
    PodRecord record;
    bool on_node = s_.OnNode(pod);
    std::vector<IpAddress> shared = s_.SharedAddresses(pod);
    if (on_node && !shared.empty()) {
      // Quarantined: np cannot tell this pod's packets from another's (README).
      record.target = InternTargetClass(TargetClassKey{kQuarantinePolicies, 0, kNone});
    } else if (on_node && (!IdList(identity.target_policies).empty() ||
                           !IdList(identity.tier_policies).empty())) {
      record.target = InternTargetClass(
          TargetClassKey{identity.target_policies, pod.named_map, identity.tier_policies});
    }
    bool external_only = s_.options.evaluation.ip_block_scope ==
                         EvaluationOptions::IpBlockScope::kExternalOnly;
    for (int f = 0; f < 2; ++f) {
      const std::optional<IpAddress>& ip = f == 0 ? pod.ipv4 : pod.ipv6;
      if (!ip) continue;
      uint32_t part = 0;
      if (!external_only || s_.has_tier_address_selectors) {
        const AtomTable& atoms = *s_.atoms[f];
        part = PodAddressPart(atoms.ipblock_part[atoms.Find(ToU128(*ip))], external_only);
      }
      record.peer[f] = InternPeerClass(PeerClassKey{identity.label_part, part, pod.named_map});
      if (std::find(shared.begin(), shared.end(), *ip) != shared.end()) record.peer[f] = kSharedPeer;
    }
    record.peer[2] = InternPeerClass(PeerClassKey{identity.label_part, 0, pod.named_map});
    const PodRecord& old = s_.records[id];
    if (old.target != record.target) {
      if (old.target != kNone) {
        s_.target_classes.Mutable(old.target, gen_).pods--;
        LeaveClass(id, old.target);
      }
      if (record.target != kNone) {
        TargetClassSlot& t = s_.target_classes.Mutable(record.target, gen_);
        t.pods++;
        if (t.table == nullptr) dirty_targets_.insert(record.target);
        JoinClass(id, record.target);
      }
    }
    s_.records.Mutable(id, gen_) = record;
    touched_records_.insert(id);
  }

  // The target class pod lists (ClassLink): a pod joins at the head, leaves from anywhere.
  void JoinClass(uint32_t pod, uint32_t target) {
    uint32_t head = s_.target_classes[target].first_pod;
    if (head != kNone) s_.class_links.Mutable(head, gen_).previous = pod;
    s_.class_links.Mutable(pod, gen_) = ClassLink{kNone, head};
    s_.target_classes.Mutable(target, gen_).first_pod = pod;
  }
  void LeaveClass(uint32_t pod, uint32_t target) {
    ClassLink link = s_.class_links[pod];
    if (link.previous != kNone) {
      s_.class_links.Mutable(link.previous, gen_).next = link.next;
    } else {
      s_.target_classes.Mutable(target, gen_).first_pod = link.next;
    }
    if (link.next != kNone) s_.class_links.Mutable(link.next, gen_).previous = link.previous;
    s_.class_links.Mutable(pod, gen_) = ClassLink();
  }

  const std::vector<uint32_t>& IdList(uint32_t id) const { return s_.IdList(id); }

  // The address selectors of an atom that hold a pod with that address: a `nodes` peer
  // never does (it selects nodes' addresses, not pods), an ipBlock only when ipBlocks apply
  // to pods (EvaluationOptions::ip_block_scope), a tier `networks` peer always.
  uint32_t PodAddressPart(uint32_t atom_part, bool external_only) {
    if (!s_.has_tier_address_selectors) return external_only ? 0 : atom_part;
    std::vector<uint32_t> kept;
    for (uint32_t id : IdList(atom_part)) {
      PeerSelector::Kind kind = s_.selectors[id]->kind;
      if (kind == PeerSelector::Kind::kNetwork ||
          (kind == PeerSelector::Kind::kIpBlock && !external_only)) {
        kept.push_back(id);
      }
    }
    return InternIdList(std::move(kept));
  }

  // A new peer class sets its bit in the bitset of every selector of its signature.
  void RegisterNewPeerClasses(absl::flat_hash_set<uint32_t>& dirty_selectors,
                              bool& named_dirty) {
    absl::flat_hash_map<uint32_t, Bitset> selector_updates;
    absl::flat_hash_map<uint32_t, Bitset> named_updates;
    for (uint32_t c : new_peer_classes_) {
      const PeerClassKey& key = s_.peer_classes[c];
      for (uint32_t part : {key.label_part, key.ipblock_part}) {
        for (uint32_t s : IdList(part)) {
          auto it = selector_updates.find(s);
          if (it == selector_updates.end()) {
            it = selector_updates.emplace(s, *s_.selector_bits[s]).first;
          }
          SetBit(it->second, c);
          dirty_selectors.insert(s);
        }
      }
      if (key.named_map != 0) {
        auto it = named_updates.find(key.named_map);
        if (it == named_updates.end()) {
          it = named_updates.emplace(key.named_map, *s_.named_map_classes[key.named_map]).first;
        }
        SetBit(it->second, c);
        named_dirty = true;
      }
    }
    for (auto& [s, bits] : selector_updates) {
      s_.selector_bits.Mutable(s, gen_) = std::make_shared<const Bitset>(std::move(bits));
    }
    for (auto& [m, bits] : named_updates) {
      s_.named_map_classes.Mutable(m, gen_) = std::make_shared<const Bitset>(std::move(bits));
    }
    new_peer_classes_.clear();
  }

  void Recompute() {
    RecomputeNamespaceMatches();

    // Identities: recompute those whose namespace's policies or peers changed, and those
    // that were stale (no pods when last invalidated) and have pods again.
    absl::flat_hash_set<uint32_t> changed_identities;
    // Only namespace-level changes (policies, peer selectors, namespace labels) can change
    // an existing identity; otherwise just the identities new pods landed on need a look,
    // and all of their pods are in dirty_pods_ already.
    bool namespace_level =
        !target_dirty_namespaces_.empty() || !label_dirty_namespaces_.empty();
    // A policy event dirties one namespace or a few: every identity is visited, and two
    // string hashes each were most of a policy event's Apply at 10k pods (perf). A short list
    // is compared instead (size first); many dirty namespaces, the sets.
    std::vector<absl::string_view> few_dirty;
    const bool few = target_dirty_namespaces_.size() + label_dirty_namespaces_.size() <= 8;
    if (few) {
      for (const auto* set : {&target_dirty_namespaces_, &label_dirty_namespaces_}) {
        few_dirty.insert(few_dirty.end(), set->begin(), set->end());
      }
    }
    auto namespace_dirty = [&](const std::string& ns) {
      if (!few) {
        return target_dirty_namespaces_.count(ns) > 0 || label_dirty_namespaces_.count(ns) > 0;
      }
      for (absl::string_view d : few_dirty) {
        if (d == ns) return true;
      }
      return false;
    };
    auto visit_identity = [&](uint32_t i) {
      const IdentitySlot& slot = s_.identities[i];
      bool dirty = slot.target_policies == kNone || namespace_dirty(slot.key->namespace_name);
      if (!dirty) return;
      if (slot.pods == 0) {
        if (slot.target_policies != kNone) {
          IdentitySlot& m = s_.identities.Mutable(i, gen_);
          m.target_policies = kNone;  // stale until a pod uses it again
          m.label_part = kNone;
          m.tier_policies = kNone;
        }
        return;
      }
      RecomputeIdentity(i, changed_identities);
    };
    if (namespace_level) {
      for (uint32_t i = 0; i < s_.identities.size(); ++i) visit_identity(i);
    } else {
      // In id order: ids interned while visiting must not depend on hash iteration order
      // (absl salts its hashes per process), or the same input would lower differently.
      std::vector<uint32_t> touched(touched_identities_.begin(), touched_identities_.end());
      std::sort(touched.begin(), touched.end());
      for (uint32_t i : touched) visit_identity(i);
    }

    if (ipblocks_changed_ || s_.atoms[0] == nullptr) RebuildAtoms();

    // Pods whose identity changed, or with an address inside an ipBlock that came or went
    // (only those can see their ipBlock membership change).
    bool external_only = s_.options.evaluation.ip_block_scope ==
                         EvaluationOptions::IpBlockScope::kExternalOnly;
    // A tier `networks` peer matches pod addresses whatever the ipBlock scope.
    bool blocks_matter = ipblocks_changed_ && (!external_only || tiers_recompiled_);
    for (uint32_t id : new_block_ids_) {
      if (s_.selectors[id] != nullptr) changed_blocks_.push_back(s_.selectors[id]);
    }
    // A pod's ipBlock membership changed only if an added or removed block holds it.
    auto member = [](const PeerSelector& block, const IpAddress& a) {
      // Node addresses never count for a pod.
      if (block.kind == PeerSelector::Kind::kNodeAddresses) return false;
      if (!block.cidr.Contains(a)) return false;
      for (const IpPrefix& e : block.excepts) {
        if (e.Contains(a)) return false;
      }
      return true;
    };
    if ((namespace_level && !changed_identities.empty()) || blocks_matter) {
      for (uint32_t p = 0; p < s_.pods.size(); ++p) {
        const PodSlot& slot = s_.pods[p];
        if (slot.state == nullptr) continue;
        bool dirty = changed_identities.count(slot.identity) > 0;
        for (size_t i = 0; blocks_matter && !dirty && i < slot.state->ips.size(); ++i) {
          for (const auto& block : changed_blocks_) {
            if (member(*block, slot.state->ips[i])) {
              dirty = true;
              break;
            }
          }
        }
        if (dirty) dirty_pods_.insert(p);
      }
    }
    // In pod order, so that classes are numbered the same in every process.
    std::vector<uint32_t> dirty_pods(dirty_pods_.begin(), dirty_pods_.end());
    std::sort(dirty_pods.begin(), dirty_pods.end());
    for (uint32_t p : dirty_pods) RecomputePod(p);
    // (The address index's copies of the records are refreshed by PublishHotArrays.)

    absl::flat_hash_set<uint32_t> dirty_selectors;
    bool named_dirty = false;
    RegisterNewPeerClasses(dirty_selectors, named_dirty);

    // Policies whose rules now cover more peer classes: those naming a widened selector,
    // and with a widened named-port map those with egress named ports (the state's lists of
    // them, not a pass over every policy's rules).
    for (uint32_t s : dirty_selectors) {
      dirty_policies_.insert(s_.selector_policies[s]->begin(), s_.selector_policies[s]->end());
    }
    if (named_dirty && s_.egress_named_policies != nullptr) {
      dirty_policies_.insert(s_.egress_named_policies->begin(), s_.egress_named_policies->end());
    }

    // Tier policies whose rules now cover more peer classes (the same test).
    if ((!dirty_selectors.empty() || named_dirty) && s_.has_tier_policies()) {
      const std::vector<CompiledTierPolicy>& all = *s_.tier_policies;
      for (uint32_t t = 0; t < all.size(); ++t) {
        bool dirty = named_dirty && all[t].has_egress_named_ports;
        for (int d = 0; d < 2 && !dirty; ++d) {
          for (const CompiledTierRule& rule : all[t].rules[d]) {
            for (const CompiledTierPeer& peer : rule.peers) {
              for (uint32_t sel : peer.selectors) dirty = dirty || dirty_selectors.count(sel) > 0;
            }
          }
        }
        if (dirty) dirty_tier_policies_.insert(t);
      }
    }

    // Tables: every target class holding a dirty policy, and new ones. The dirty policies
    // as a bitmap: every target class's policies are tested, and hashing each id was a
    // quarter of the rest of a policy event's Recompute at 10k pods (perf, h94).
    std::vector<bool> dirty_policy;
    if (!dirty_policies_.empty()) {
      dirty_policy.assign(s_.policies.size(), false);
      for (uint32_t p : dirty_policies_) dirty_policy[p] = true;
    }
    for (uint32_t t = 0; (!dirty_policies_.empty() || !dirty_targets_.empty() ||
                          !dirty_tier_policies_.empty()) &&
                         t < s_.target_classes.size();
         ++t) {
      const TargetClassSlot& slot = s_.target_classes[t];
      bool dirty = dirty_targets_.count(t) > 0;
      if (!dirty && !dirty_policies_.empty()) {
        for (uint32_t p : IdList(slot.key.policies)) {
          if (p < dirty_policy.size() && dirty_policy[p]) {
            dirty = true;
            break;
          }
        }
      }
      if (!dirty && !dirty_tier_policies_.empty() && slot.key.tier_policies != kNone) {
        for (uint32_t p : IdList(slot.key.tier_policies)) {
          if (dirty_tier_policies_.count(p)) {
            dirty = true;
            break;
          }
        }
      }
      if (!dirty) continue;
      TargetClassSlot& m = s_.target_classes.Mutable(t, gen_);
      m.table = m.pods > 0 ? BuildTable(m.key) : nullptr;
      touched_tables_.insert(t);
    }
  }

  // The arrays verdicts read: the previous snapshot's chunks, shared, with those this batch
  // writes cloned (CowVector) — the cost follows what the batch touched, not the cluster.
  void PublishHotArrays() {
    auto table_data = [&](size_t t) {
      const auto& table = s_.target_classes[t].table;
      return table != nullptr ? table->sides() : HotSides{};
    };
    while (s_.hot_tables.size() < s_.target_classes.size()) {
      s_.hot_tables.PushBack(table_data(s_.hot_tables.size()), gen_);
    }
    for (uint32_t t : touched_tables_) s_.hot_tables.Mutable(t, gen_) = table_data(t);
    auto refresh = [&](size_t p) {
      const PodRecord& r = s_.records[p];
      HotRecord& h = s_.hot_records.Mutable(p, gen_);
      h.bits_row = s_.BitsRow(r.target);
      s_.RefreshPairClass(static_cast<uint32_t>(p), gen_);
      std::copy(std::begin(r.peer), std::end(r.peer), std::begin(h.peer));
      const HotSides sides = r.target == kNone ? HotSides{} : s_.hot_tables[r.target];
      std::copy(std::begin(sides.side), std::end(sides.side), std::begin(h.side));
    };
    while (s_.hot_records.size() < s_.records.size()) {
      s_.hot_records.PushBack(HotRecord(), gen_);
      refresh(s_.hot_records.size() - 1);
    }
    for (uint32_t p : touched_records_) refresh(p);
    // The address index carries each address's copy of its owner's hot record for the packet
    // path (PacketEntry: sides, peer class, bits row).
    auto refresh_index = [&](uint32_t p) {
      s_.MirrorHotRecord(p, [&]() -> IpIndex& { return MutableIpIndex(); });
    };
    // (Every pod whose record or address ownership this batch changed is in
    // touched_records_: RecomputePod writes the record of each dirty pod.)
    for (uint32_t p : touched_records_) refresh_index(p);
    // A rebuilt table moves: the pods of its class (and only they) point at the new one.
    for (uint32_t t : touched_tables_) {
      const HotSides sides = s_.hot_tables[t];
      for (uint32_t p = s_.target_classes[t].first_pod; p != kNone; p = s_.class_links[p].next) {
        HotRecord& h = s_.hot_records.Mutable(p, gen_);
        std::copy(std::begin(sides.side), std::end(sides.side), std::begin(h.side));
        h.bits_row = s_.BitsRow(t);  // the painted table is gone: exact path
        s_.RefreshPairClass(p, gen_);  // so is its pair matrix's
        refresh_index(p);
      }
    }
  }

  // --------------------------------------------------------------------- tables

  struct Entry {
    uint16_t first, last;
    bool all;
    const Bitset* bits;  // when !all
  };

  // The port ranges a rule's ports cover, per protocol, for a target with named ports
  // `own_ports`: f(protocol, first, last, named_map), where named_map != 0 says the range
  // holds only for destinations whose named-port map is that one (an egress named port,
  // resolved against each possible destination: the peer classes carrying map m get the
  // port number m gives). Ingress named ports resolve on the target's own container ports.
  template <typename F>
  void ForEachPortRange(bool all_ports, const std::vector<CompiledPort>& ports, int direction,
                        const std::vector<NamedPort>& own_ports, F&& f) const {
    if (all_ports) {
      for (Protocol proto : kAllProtocols) f(proto, 0, 65535, 0u);
      return;
    }
    for (const CompiledPort& port : ports) {
      switch (port.kind) {
        case CompiledPort::Kind::kAllPorts:
          f(port.protocol, 0, 65535, 0u);
          break;
        case CompiledPort::Kind::kRange:
          f(port.protocol, port.first, port.last, 0u);
          break;
        case CompiledPort::Kind::kNamed:
          if (direction == 0) {
            for (const NamedPort& np : own_ports) {
              if (np.name == port.name && (port.any_protocol || np.protocol == port.protocol)) {
                f(np.protocol, np.port, np.port, 0u);
              }
            }
          } else {
            for (uint32_t m = 1; m < s_.named_maps.size(); ++m) {
              for (const NamedPort& np : *s_.named_maps[m]) {
                if (np.name == port.name && (port.any_protocol || np.protocol == port.protocol)) {
                  f(np.protocol, np.port, np.port, m);
                }
              }
            }
          }
          break;
      }
    }
  }

  // The union of the selectors' peer classes.
  Bitset SelectorUnion(const std::vector<uint32_t>& selectors) const {
    Bitset bits;
    for (uint32_t s : selectors) {
      const Bitset& sb = *s_.selector_bits[s];
      if (bits.size() < sb.size()) bits.resize(sb.size(), 0);
      for (size_t w = 0; w < sb.size(); ++w) bits[w] |= sb[w];
    }
    return bits;
  }

  std::shared_ptr<const TargetTable> BuildTable(const TargetClassKey& key) {
    if (!key.quarantine() && !IdList(key.tier_policies).empty()) return BuildTieredTable(key);
    auto table = std::make_unique<TableDraft>();
    std::vector<std::unique_ptr<Bitset>> owned;  // rule peer sets built for this table
    const std::vector<NamedPort>& own_ports = *s_.named_maps[key.named_map];
    for (int d = 0; d < 2; ++d) {
      DirectionTable& dt = table->direction[d];
      // A quarantined pod's table: isolated, and (no entries) one interval with no peer.
      if (key.quarantine()) dt.isolated = true;
      std::vector<Entry> entries[3];
      for (uint32_t p : IdList(key.policies)) {
        const CompiledPolicy& policy = *s_.policies[p];
        if (!policy.affects[d]) continue;
        dt.isolated = true;
        for (const CompiledRule& rule : policy.rules[d]) {
          const Bitset* peers = nullptr;
          if (!rule.all_peers) {
            owned.push_back(std::make_unique<Bitset>(SelectorUnion(rule.selectors)));
            peers = owned.back().get();
          }
          ForEachPortRange(rule.all_ports, rule.ports, d, own_ports,
                           [&](Protocol proto, uint16_t first, uint16_t last, uint32_t m) {
                             const Bitset* bits = peers;
                             if (m != 0) {
                               auto only = std::make_unique<Bitset>(*s_.named_map_classes[m]);
                               if (peers != nullptr) {
                                 for (size_t w = 0; w < only->size(); ++w) {
                                   (*only)[w] &= w < peers->size() ? (*peers)[w] : 0;
                                 }
                               }
                               bits = only.get();
                               owned.push_back(std::move(only));
                             }
                             entries[ProtocolIndex(proto)].push_back(
                                 Entry{first, last, bits == nullptr, bits});
                           });
        }
      }
      for (int pi = 0; pi < 3; ++pi) {
        dt.begin[pi] = static_cast<uint32_t>(table->intervals.size());
        Sweep(entries[pi], *table);
        dt.end[pi] = static_cast<uint32_t>(table->intervals.size());
      }
    }
    return std::make_shared<const TargetTable>(*table);
  }

  // Cuts 0..65535 at every entry boundary; each piece allows the union of the entries
  // covering it; equal neighbours merge.
  void Sweep(const std::vector<Entry>& entries, TableDraft& table) {
    std::vector<uint32_t> points = {0};
    for (const Entry& e : entries) {
      points.push_back(e.first);
      if (e.last < 65535) points.push_back(uint32_t{e.last} + 1);
    }
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
    Bitset merged;
    size_t first_interval = table.intervals.size();
    for (uint32_t start : points) {
      bool all = false;
      merged.clear();
      for (const Entry& e : entries) {
        if (e.first > start || e.last < start) continue;
        if (e.all) {
          all = true;
          break;
        }
        if (merged.size() < e.bits->size()) merged.resize(e.bits->size(), 0);
        for (size_t w = 0; w < e.bits->size(); ++w) merged[w] |= (*e.bits)[w];
      }
      if (all) merged.clear();
      AppendPiece(table, first_interval, start, all, /*negated=*/false, merged);
    }
  }

  // One piece of a protocol's port range: its peers (all; else `merged`, which lists the
  // allowed classes, or with `negated` the denied ones), encoded as a sorted id list when
  // that is smaller than the bitset; merged into the previous interval when equal.
  void AppendPiece(TableDraft& table, size_t first_interval, uint32_t start, bool all,
                   bool negated, Bitset& merged) {
    while (!merged.empty() && merged.back() == 0) merged.pop_back();
    Bitset& encoded = encoded_;  // reused: no allocation per piece
    encoded.clear();
    bool sparse = false;
    uint32_t count = static_cast<uint32_t>(merged.size());
    size_t ones = 0;
    for (uint64_t w : merged) ones += static_cast<size_t>(__builtin_popcountll(w));
    if (ones < 2 * merged.size()) {
      sparse = true;
      count = static_cast<uint32_t>(ones);
      std::vector<uint32_t> ids;
      ids.reserve(ones);
      for (size_t w = 0; w < merged.size(); ++w) {
        for (uint64_t word = merged[w]; word != 0; word &= word - 1) {
          ids.push_back(static_cast<uint32_t>(w * 64 + __builtin_ctzll(word)));
        }
      }
      encoded.assign((ids.size() + 1) / 2, 0);
      std::memcpy(encoded.data(), ids.data(), ids.size() * sizeof(uint32_t));
    } else {
      encoded = merged;
    }
    if (table.intervals.size() > first_interval) {
      const Interval& prev = table.intervals.back();
      bool same = prev.all_peers == all && prev.sparse == sparse && prev.negated == negated &&
                  prev.count == count &&
                  std::equal(encoded.begin(), encoded.end(), table.words.begin() + prev.bits);
      if (same) return;
    }
    Interval iv;
    iv.first = static_cast<uint16_t>(start);
    iv.all_peers = all ? 1 : 0;
    iv.sparse = sparse ? 1 : 0;
    iv.negated = negated ? 1 : 0;
    iv.bits = static_cast<uint32_t>(table.words.size());
    iv.count = count;
    table.words.insert(table.words.end(), encoded.begin(), encoded.end());
    table.intervals.push_back(iv);
  }

  // ------------------------------------------------------------- tiered tables

  // A set of peer classes that may be infinite: `bits`, or with `negated` every class
  // (and every peer of no class) except `bits`. Closed under union, intersection and
  // difference, which is what folding an ordered rule list needs (top of engine_state.h).
  // The operations work in place: the sweep does several per port piece and class, and a
  // new vector for each (the form before) made malloc/free a third of a tiered compile
  // (perf, BM_CompileTiered/10000: bench/RESULTS.md, h73).
  struct PeerSet {
    bool negated = false;
    Bitset bits;
    static PeerSet All() { return PeerSet{true, {}}; }
    void Clear() {
      negated = false;
      bits.clear();  // (keeps the capacity for the next piece)
    }
    // this = this ∩ (other, complemented when `other_negated`), word by word, the shorter
    // padded with zeros: the one operation the others reduce to.
    void IntersectWith(const Bitset& other, bool other_negated) {
      if (bits.size() < other.size()) bits.resize(other.size(), 0);
      const size_t n = other.size();
      uint64_t* x = bits.data();
      const uint64_t* y = other.data();
      if (negated && other_negated) {  // ~x & ~y = ~(x | y); past y: x
        for (size_t w = 0; w < n; ++w) x[w] |= y[w];
      } else if (negated) {  // ~x & y; past y: 0
        for (size_t w = 0; w < n; ++w) x[w] = y[w] & ~x[w];
        bits.resize(n);
      } else if (other_negated) {  // x & ~y; past y: x
        for (size_t w = 0; w < n; ++w) x[w] &= ~y[w];
      } else {  // x & y; past y: 0
        for (size_t w = 0; w < n; ++w) x[w] &= y[w];
        bits.resize(n);
      }
      negated = negated && other_negated;
    }
    void IntersectWith(const PeerSet& other) { IntersectWith(other.bits, other.negated); }
    void Subtract(const PeerSet& other) { IntersectWith(other.bits, !other.negated); }
    void UniteWith(const PeerSet& other) {  // a ∪ b = ~(~a ∩ ~b)
      negated = !negated;
      IntersectWith(other.bits, !other.negated);
      negated = !negated;
    }
  };

  struct OrderedEntry {
    uint16_t first, last;
    tiers::Action action;
    PeerSet peers;
  };

  // A table whose target some tier policy selects: per direction and protocol the Admin
  // tier's rules in order, the NetworkPolicy entries, the Baseline tier's rules in order,
  // folded per port piece into one allowed peer set (top of engine_state.h, step 3).
  std::shared_ptr<const TargetTable> BuildTieredTable(const TargetClassKey& key) {
    auto table = std::make_unique<TableDraft>();
    const std::vector<NamedPort>& own_ports = *s_.named_maps[key.named_map];
    const std::vector<CompiledTierPolicy>& tier_policies = *s_.tier_policies;
    for (int d = 0; d < 2; ++d) {
      DirectionTable& dt = table->direction[d];
      std::vector<OrderedEntry> tiered[2][3];  // [tier][protocol], in evaluation order
      std::vector<OrderedEntry> network_policy[3];
      bool isolated_by_network_policy = false;
      // Entries of one rule: its peers at each port range it covers (an egress named port
      // only towards the classes whose named ports give that number).
      auto add_rule = [&](std::vector<OrderedEntry>* out, tiers::Action action,
                          const PeerSet& peers, bool all_ports,
                          const std::vector<CompiledPort>& ports) {
        ForEachPortRange(all_ports, ports, d, own_ports,
                         [&](Protocol proto, uint16_t first, uint16_t last, uint32_t m) {
                           PeerSet at = peers;
                           if (m != 0) at.IntersectWith(*s_.named_map_classes[m], false);
                           out[ProtocolIndex(proto)].push_back(OrderedEntry{first, last, action, std::move(at)});
                         });
      };
      for (uint32_t p : IdList(key.policies)) {
        const CompiledPolicy& policy = *s_.policies[p];
        if (!policy.affects[d]) continue;
        isolated_by_network_policy = true;
        for (const CompiledRule& rule : policy.rules[d]) {
          PeerSet peers = rule.all_peers ? PeerSet::All() : PeerSet{false, SelectorUnion(rule.selectors)};
          add_rule(network_policy, tiers::Action::kAllow, peers, rule.all_ports, rule.ports);
        }
      }
      bool has_tier_rules = false;
      for (uint32_t t : IdList(key.tier_policies)) {
        const CompiledTierPolicy& policy = tier_policies[t];
        for (const CompiledTierRule& rule : policy.rules[d]) {
          has_tier_rules = true;
          PeerSet peers;
          for (const CompiledTierPeer& peer : rule.peers) {
            peers.UniteWith(PeerSet{false, SelectorUnion(peer.selectors)});
          }
          add_rule(tiered[static_cast<int>(policy.tier)], rule.action, peers, rule.all_ports,
                   rule.ports);
        }
      }
      // "CNPs with no ingress rules do not affect ingress traffic": with neither tier rules
      // nor an isolating NetworkPolicy the direction allows everything.
      dt.isolated = isolated_by_network_policy || has_tier_rules;
      for (int pi = 0; pi < 3; ++pi) {
        dt.begin[pi] = static_cast<uint32_t>(table->intervals.size());
        if (dt.isolated) {
          OrderedSweep(tiered[0][pi], isolated_by_network_policy, network_policy[pi],
                       tiered[1][pi], *table);
        }
        dt.end[pi] = static_cast<uint32_t>(table->intervals.size());
      }
    }
    return std::make_shared<const TargetTable>(*table);
  }

  // Cuts 0..65535 at every entry boundary and folds, per piece, the tiers' order into the
  // allowed peers: the first matching Admin rule decides (Pass: on to NetworkPolicy); an
  // isolating NetworkPolicy decides the rest by the union of its entries; otherwise the
  // first matching Baseline rule (Pass: the default); the default allows.
  void OrderedSweep(const std::vector<OrderedEntry>& admin, bool isolated,
                    const std::vector<OrderedEntry>& network_policy,
                    const std::vector<OrderedEntry>& baseline, TableDraft& table) {
    std::vector<uint32_t> points = {0};
    for (const auto* list : {&admin, &network_policy, &baseline}) {
      for (const OrderedEntry& e : *list) {
        points.push_back(e.first);
        if (e.last < 65535) points.push_back(uint32_t{e.last} + 1);
      }
    }
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
    size_t first_interval = table.intervals.size();
    auto covers = [](const OrderedEntry& e, uint32_t port) {
      return e.first <= port && port <= e.last;
    };
    // The sets of one piece, kept across pieces so that their words are reused.
    PeerSet undecided, allowed, passed, matched, admitted;
    for (uint32_t start : points) {
      undecided.Clear();
      undecided.negated = true;  // every peer
      allowed.Clear();
      passed.Clear();
      for (const OrderedEntry& e : admin) {
        if (!covers(e, start)) continue;
        matched = e.peers;
        matched.IntersectWith(undecided);
        undecided.Subtract(matched);
        if (e.action == tiers::Action::kAllow) allowed.UniteWith(matched);
        if (e.action == tiers::Action::kPass) passed.UniteWith(matched);
      }
      PeerSet& rest = undecided;  // the peers no Admin rule decided, and those it passed
      rest.UniteWith(passed);
      if (isolated) {
        admitted.Clear();
        for (const OrderedEntry& e : network_policy) {
          if (covers(e, start)) admitted.UniteWith(e.peers);
        }
        admitted.IntersectWith(rest);
        allowed.UniteWith(admitted);
      } else {
        for (const OrderedEntry& e : baseline) {
          if (!covers(e, start)) continue;
          matched = e.peers;
          matched.IntersectWith(rest);
          rest.Subtract(matched);
          if (e.action != tiers::Action::kDeny) allowed.UniteWith(matched);
        }
        allowed.UniteWith(rest);
      }
      bool all = allowed.negated && std::all_of(allowed.bits.begin(), allowed.bits.end(),
                                                [](uint64_t w) { return w == 0; });
      if (all) allowed.bits.clear();
      AppendPiece(table, first_interval, start, all, allowed.negated && !all, allowed.bits);
    }
  }

  EngineState& s_;
  uint64_t gen_;
  std::vector<Diagnostic>* diagnostics_;
  bool validated_;
  bool ip_index_copied_ = false;
  std::vector<std::string> errors_;
  bool ipblocks_changed_ = false;
  bool tiers_recompiled_ = false;  // a tier policy or Node changed (RecompileTiers)
  absl::flat_hash_set<std::string> dirty_namespaces_;         // new, or labels changed
  absl::flat_hash_set<std::string> label_dirty_namespaces_;   // identities' peers to redo
  absl::flat_hash_set<std::string> target_dirty_namespaces_;  // identities' policies to redo
  std::vector<uint32_t> new_namespace_selectors_;
  // ipBlock peers removed by this batch, and the ids of those added (resolved after the
  // changes, when the selectors are in place).
  std::vector<std::shared_ptr<const PeerSelector>> changed_blocks_;
  std::vector<uint32_t> new_block_ids_;
  absl::flat_hash_set<uint32_t> dirty_pods_;
  absl::flat_hash_set<uint32_t> dirty_policies_;
  absl::flat_hash_set<uint32_t> dirty_tier_policies_;
  Bitset encoded_;  // AppendPiece's scratch
  absl::flat_hash_set<uint32_t> dirty_targets_;
  std::vector<uint32_t> new_peer_classes_;
  absl::flat_hash_set<uint32_t> touched_identities_;  // identities new pods landed on
  absl::flat_hash_set<uint32_t> touched_records_;  // pod records this batch wrote
  absl::flat_hash_set<uint32_t> touched_tables_;   // target class tables this batch wrote
};

absl::Status EngineState::ApplyBatch(absl::Span<const Change> changes,
                                     std::vector<Diagnostic>* diagnostics, bool validated,
                                     const Cluster* tiers_from) {
  static std::atomic<uint64_t> generations{1};
  generation = generations.fetch_add(1);
  if (namespace_selectors == nullptr) {
    pod_by_ip = std::make_shared<IpIndex>();
    namespace_selectors = std::make_shared<std::vector<uint32_t>>();
    ipblock_selectors = std::make_shared<std::vector<uint32_t>>();
    // Conventions the code relies on: id list 0 is the empty list, named map 0 is empty.
    id_lists.PushBack(std::make_shared<const std::vector<uint32_t>>(), generation);
    id_list_by_value.Set({}, 0, generation);
    named_maps.PushBack(std::make_shared<const std::vector<NamedPort>>(), generation);
    named_map_classes.PushBack(std::make_shared<const Bitset>(), generation);
    named_map_by_key.Set("", 0, generation);
  }
  Batch batch(*this, diagnostics, validated);
  return batch.Run(changes, tiers_from);
}

bool EngineState::Unchanged(absl::Span<const Change> changes,
                            std::vector<Diagnostic>* diagnostics) const {
  if (changes.empty()) return false;  // (an empty batch still makes a snapshot, as it did)
  std::vector<Diagnostic> found;
  for (const Change& change : changes) {
    // Only a pod upsert is looked at: it is what arrives at a steady rate (each status
    // change of each pod); the other kinds take the batch path, which is exact for them.
    const auto* pod = std::get_if<k8s::Pod>(&change.object);
    if (pod == nullptr || change.op != Change::Op::kUpsert) return false;
    // (An empty namespace means "default": left to the batch, which fills it in.)
    const std::string& ns = pod->metadata().namespace_();
    if (ns.empty() || LeftOutOfNetworking(*pod)) return false;
    const uint32_t* id = pod_by_key.Find(absl::StrCat(ns, "/", pod->metadata().name()));
    if (id == nullptr) return false;
    const PodState& held = *pods[*id].state;
    PodState read;
    std::vector<NamedPort> named;
    ReadPod(*pod, &read, &named);
    const std::vector<NamedPort>& held_named = *named_maps[held.named_map];
    if (read.labels != held.labels || read.ips != held.ips || read.node_name != held.node_name ||
        !std::equal(named.begin(), named.end(), held_named.begin(), held_named.end(),
                    SameNamedPort)) {
      return false;
    }
    // Validated as the batch would: an invalid object is the batch's to reject, with its
    // errors; a valid one's warnings are reported as the batch reports them.
    std::vector<Diagnostic> findings = ValidatePod(*pod);
    for (Diagnostic& d : findings) {
      if (d.is_error()) return false;
      found.push_back(std::move(d));
    }
  }
  if (diagnostics != nullptr) {
    for (Diagnostic& d : found) diagnostics->push_back(std::move(d));
  }
  return true;
}

std::shared_ptr<const TargetTable> EngineState::NetworkPolicyTable(
    const TargetClassKey& key) const {
  // A Batch holds its state mutably because batches update it; BuildTable only reads the
  // state (its scratch space is the batch's own), so this snapshot is left as it was.
  Batch batch(const_cast<EngineState&>(*this), nullptr, /*validated=*/true);
  return batch.NetworkPolicyTable(key);
}

bool EngineState::PeerClassHasSelector(uint32_t peer_class, uint32_t selector) const {
  const PeerClassKey& key = peer_classes[peer_class];
  for (uint32_t part : {key.label_part, key.ipblock_part}) {
    const std::vector<uint32_t>& list = IdList(part);
    if (std::binary_search(list.begin(), list.end(), selector)) return true;
  }
  return false;
}

}  // namespace np::internal
