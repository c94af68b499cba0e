// ApplyDelta and DiffPrograms (np/backends/util.h): hand-made deltas with the result written
// out from the delta's definition, refusals that leave the program untouched, and round trips
// on random pairs of programs (NP_DELTA_SEED replays one).
#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "np/backends/util.h"
#include "proto/compiled.pb.h"

namespace np::backends {
namespace {

using google::protobuf::util::MessageDifferencer;

std::string V4(uint32_t a) {
  return std::string{static_cast<char>(a >> 24), static_cast<char>(a >> 16),
                     static_cast<char>(a >> 8), static_cast<char>(a)};
}

void AddRange(ir::CompiledPolicy& p, uint32_t first, uint32_t last, uint32_t identity,
              const std::string& pod = "") {
  ir::AddressRange* r = p.add_ipv4();
  r->set_first(V4(first));
  r->set_last(V4(last));
  r->set_identity(identity);
  r->set_pod(pod);
}

ir::RangeSliceEdit* AddRangeEdit(ir::CompiledPolicyDelta& d, uint32_t begin, uint32_t end) {
  ir::RangeSliceEdit* e = d.add_ipv4();
  e->set_begin(begin);
  e->set_end(end);
  return e;
}

void AddEdited(ir::RangeSliceEdit* e, uint32_t first, uint32_t last, uint32_t identity,
               const std::string& pod = "") {
  ir::AddressRange* r = e->add_ranges();
  r->set_first(V4(first));
  r->set_last(V4(last));
  r->set_identity(identity);
  r->set_pod(pod);
}

ir::Endpoint MakeEndpoint(const std::string& name, const std::string& ip) {
  ir::Endpoint e;
  e.set_namespace_("ns");
  e.set_name(name);
  e.add_ips(ip);
  return e;
}

// Identities 0 (external), 1 and 2 (pods); IPv4 10.0.0.0/24 cut around two pods; one IPv6
// range; endpoints a and c; one table and one peer set.
ir::CompiledPolicy Program() {
  ir::CompiledPolicy p;
  p.set_node("node-1");
  for (uint32_t i = 0; i < 3; ++i) {
    ir::Identity* id = p.add_identities();
    id->set_id(i);
    id->set_external(i == 0);
  }
  p.mutable_identities(1)->add_pods("ns/a");
  p.mutable_identities(2)->add_pods("ns/c");
  AddRange(p, 0x00000000, 0x0a000004, 0);
  AddRange(p, 0x0a000005, 0x0a000005, 1, "ns/a");
  AddRange(p, 0x0a000006, 0x0a000009, 0);
  AddRange(p, 0x0a00000a, 0x0a00000a, 2, "ns/c");
  AddRange(p, 0x0a00000b, 0xffffffff, 0);
  ir::AddressRange* v6 = p.add_ipv6();
  v6->set_first(std::string(16, '\0'));
  v6->set_last(std::string(16, '\xff'));
  v6->set_identity(0);
  *p.add_endpoints() = MakeEndpoint("a", "10.0.0.5");
  *p.add_endpoints() = MakeEndpoint("c", "10.0.0.10");
  ir::PeerSet* set = p.add_peer_sets();
  set->set_id(0);
  set->add_identities(1);
  ir::Table* t = p.add_tables();
  t->set_id(0);
  t->mutable_ingress()->set_isolated(true);
  return p;
}

TEST(ApplyDelta, SplitsAndMergesRangesAndEditsEndpointsAndPods) {
  ir::CompiledPolicy p = Program();
  ir::CompiledPolicyDelta d;
  // Pod b appears at 10.0.0.7 (identity 1): the external range 6-9 splits in three.
  ir::RangeSliceEdit* split = AddRangeEdit(d, 2, 3);
  AddEdited(split, 0x0a000006, 0x0a000006, 0);
  AddEdited(split, 0x0a000007, 0x0a000007, 1, "ns/b");
  AddEdited(split, 0x0a000008, 0x0a000009, 0);
  // Pod c leaves: 10.0.0.10 merges back with the external ranges around it.
  AddEdited(AddRangeEdit(d, 3, 5), 0x0a00000a, 0xffffffff, 0);
  ir::EndpointSliceEdit* insert = d.add_endpoints();
  insert->set_begin(1);
  insert->set_end(1);
  *insert->add_endpoints() = MakeEndpoint("b", "10.0.0.7");
  ir::EndpointSliceEdit* remove = d.add_endpoints();
  remove->set_begin(1);
  remove->set_end(2);
  // Identity 1 gains b (a stays, unnamed); identity 2 loses c, its only pod.
  ir::IdentityPodsEdit* pods1 = d.add_identity_pods();
  pods1->set_identity(1);
  pods1->add_added("ns/b");
  ir::IdentityPodsEdit* pods2 = d.add_identity_pods();
  pods2->set_identity(2);
  pods2->add_removed("ns/c");

  ir::CompiledPolicy expected = Program();
  expected.clear_ipv4();
  AddRange(expected, 0x00000000, 0x0a000004, 0);
  AddRange(expected, 0x0a000005, 0x0a000005, 1, "ns/a");
  AddRange(expected, 0x0a000006, 0x0a000006, 0);
  AddRange(expected, 0x0a000007, 0x0a000007, 1, "ns/b");
  AddRange(expected, 0x0a000008, 0x0a000009, 0);
  AddRange(expected, 0x0a00000a, 0xffffffff, 0);
  expected.clear_endpoints();
  *expected.add_endpoints() = MakeEndpoint("a", "10.0.0.5");
  *expected.add_endpoints() = MakeEndpoint("b", "10.0.0.7");
  expected.mutable_identities(1)->add_pods("ns/b");
  expected.mutable_identities(2)->clear_pods();

  ASSERT_TRUE(ApplyDelta(d, &p).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(p, expected)) << p.DebugString();
  ASSERT_TRUE(CheckIr(p).ok());
}

TEST(ApplyDelta, RefusesBadDeltasAndLeavesTheProgramAsItWas) {
  struct Case {
    const char* what;
    ir::CompiledPolicyDelta delta;
  };
  std::vector<Case> cases;
  auto add = [&](const char* what) -> ir::CompiledPolicyDelta& {
    cases.push_back({what, {}});
    return cases.back().delta;
  };
  AddEdited(AddRangeEdit(add("slice past the end"), 4, 6), 0x0a00000b, 0xffffffff, 0);
  AddRangeEdit(add("no ranges"), 1, 2);
  AddEdited(AddRangeEdit(add("empty slice"), 2, 2), 0x0a000006, 0x0a000009, 0);
  AddEdited(AddRangeEdit(add("covers less"), 2, 3), 0x0a000006, 0x0a000008, 0);
  AddEdited(AddRangeEdit(add("starts elsewhere"), 2, 3), 0x0a000007, 0x0a000009, 0);
  {
    ir::RangeSliceEdit* gap = AddRangeEdit(add("gap inside"), 2, 3);
    AddEdited(gap, 0x0a000006, 0x0a000006, 0);
    AddEdited(gap, 0x0a000008, 0x0a000009, 0);
  }
  AddEdited(AddRangeEdit(add("unknown identity"), 2, 3), 0x0a000006, 0x0a000009, 7);
  {
    ir::CompiledPolicyDelta& d = add("overlapping edits");
    AddEdited(AddRangeEdit(d, 2, 4), 0x0a000006, 0x0a00000a, 0);
    AddEdited(AddRangeEdit(d, 3, 4), 0x0a00000a, 0x0a00000a, 0);
  }
  {
    ir::CompiledPolicyDelta& d = add("unsorted edits");
    AddEdited(AddRangeEdit(d, 3, 4), 0x0a00000a, 0x0a00000a, 0);
    AddEdited(AddRangeEdit(d, 2, 3), 0x0a000006, 0x0a000009, 0);
  }
  {
    ir::EndpointSliceEdit* e = add("endpoint slice past the end").add_endpoints();
    e->set_begin(2);
    e->set_end(3);
  }
  {
    ir::EndpointSliceEdit* e = add("endpoint of an unknown table").add_endpoints();
    e->set_begin(0);
    e->set_end(1);
    ir::Endpoint* x = e->add_endpoints();
    *x = MakeEndpoint("a", "10.0.0.5");
    x->set_selected(true);
    x->set_table(3);
  }
  add("unknown identity's pods").add_identity_pods()->set_identity(3);
  {
    ir::CompiledPolicyDelta& d = add("identity edits out of order");
    d.add_identity_pods()->set_identity(2);
    d.mutable_identity_pods(0)->add_removed("ns/c");
    d.add_identity_pods()->set_identity(1);
    d.mutable_identity_pods(1)->add_added("ns/x");
  }
  {
    // Peer set 1 would be appended, but the table names peer set 2, which would not exist.
    ir::CompiledPolicyDelta& d = add("table naming a peer set that does not exist after");
    d.add_peer_sets()->set_id(1);
    ir::Table* t = d.add_tables();
    t->set_id(0);
    t->mutable_ingress()->set_isolated(true);
    AddPortRule(t->mutable_ingress(), ir::TCP, 80, 80, 2);
  }
  {
    ir::CompiledPolicyDelta& d = add("appended table leaving a gap");
    d.add_tables()->set_id(2);
  }
  {
    ir::CompiledPolicyDelta& d = add("peer sets out of order");
    d.add_peer_sets()->set_id(1);
    d.add_peer_sets()->set_id(0);
  }
  {
    ir::CompiledPolicyDelta& d = add("peer set of an unknown identity");
    d.add_peer_sets()->set_id(0);
    d.mutable_peer_sets(0)->add_identities(5);
  }
  {
    ir::CompiledPolicyDelta& d = add("table rules overlapping");
    ir::Table* t = d.add_tables();
    t->set_id(0);
    AddPortRule(t->mutable_egress(), ir::TCP, 80, 90, 0);
    AddPortRule(t->mutable_egress(), ir::TCP, 85, 95, 0);
  }
  {
    ir::EndpointSliceEdit* e = add("endpoint of a table past the appended ones").add_endpoints();
    e->set_begin(0);
    e->set_end(1);
    ir::Endpoint* x = e->add_endpoints();
    *x = MakeEndpoint("a", "10.0.0.5");
    x->set_selected(true);
    x->set_table(1);
  }
  {
    // A valid first edit, an invalid second: nothing of the first may be applied.
    ir::CompiledPolicyDelta& d = add("valid edit then an invalid one");
    AddEdited(AddRangeEdit(d, 0, 1), 0x00000000, 0x0a000004, 0);
    AddEdited(AddRangeEdit(d, 2, 3), 0x0a000006, 0x0a000009, 9);
  }
  for (const Case& c : cases) {
    ir::CompiledPolicy p = Program();
    absl::Status s = ApplyDelta(c.delta, &p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << s;
    EXPECT_TRUE(MessageDifferencer::Equals(p, Program())) << c.what;
  }
}

// A policy event's shape: a table replaced, a peer set and a table appended, an endpoint moved
// onto the new table — the program written out from the fields' definition.
TEST(ApplyDelta, ReplacesAndAppendsTablesAndPeerSetsById) {
  ir::CompiledPolicy p = Program();
  ir::CompiledPolicyDelta d;
  ir::PeerSet* set = d.add_peer_sets();
  set->set_id(1);
  set->add_identities(0);
  set->add_identities(2);
  ir::Table* replaced = d.add_tables();
  replaced->set_id(0);
  replaced->mutable_egress()->set_isolated(true);
  AddPortRule(replaced->mutable_egress(), ir::UDP, 53, 53, 1);
  ir::Table* appended = d.add_tables();
  appended->set_id(1);
  appended->mutable_ingress()->set_isolated(true);
  AddPortRule(appended->mutable_ingress(), ir::TCP, 80, 81, 0);
  appended->add_policies("ns/web");
  ir::EndpointSliceEdit* moved = d.add_endpoints();
  moved->set_begin(1);
  moved->set_end(2);
  ir::Endpoint* c = moved->add_endpoints();
  *c = MakeEndpoint("c", "10.0.0.10");
  c->set_selected(true);
  c->set_table(1);

  ir::CompiledPolicy expected = Program();
  ir::PeerSet* e_set = expected.add_peer_sets();
  e_set->set_id(1);
  e_set->add_identities(0);
  e_set->add_identities(2);
  ir::Table* t0 = expected.mutable_tables(0);
  t0->clear_ingress();
  t0->mutable_egress()->set_isolated(true);
  ir::PortRule* r0 = t0->mutable_egress()->add_rules();
  r0->set_protocol(ir::UDP);
  r0->set_first_port(53);
  r0->set_last_port(53);
  r0->set_peer_set(1);
  ir::Table* t1 = expected.add_tables();
  t1->set_id(1);
  t1->mutable_ingress()->set_isolated(true);
  ir::PortRule* r1 = t1->mutable_ingress()->add_rules();
  r1->set_protocol(ir::TCP);
  r1->set_first_port(80);
  r1->set_last_port(81);
  r1->set_peer_set(0);
  t1->add_policies("ns/web");
  expected.mutable_endpoints(1)->set_selected(true);
  expected.mutable_endpoints(1)->set_table(1);

  ASSERT_TRUE(ApplyDelta(d, &p).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(p, expected)) << p.DebugString();
  ASSERT_TRUE(CheckIr(p).ok());
  // And DiffPrograms finds the same items (and only them) from the two programs.
  std::optional<ir::CompiledPolicyDelta> found = DiffPrograms(Program(), expected);
  ASSERT_TRUE(found.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*found, d)) << found->DebugString();
}

// A relabel's shape: identities 3 and 4 appended (pod b in a class new to the program, and
// one for pod c's class, whose old identity 2 becomes unused); a range, a peer set and an
// identity pod edit of the same delta name them. The program written out from the fields'
// definition.
TEST(ApplyDelta, AppendsIdentitiesThatTheSameDeltaNames) {
  ir::CompiledPolicy p = Program();
  ir::CompiledPolicyDelta d;
  ir::Identity* b = d.add_identities();
  b->set_id(3);
  b->add_pods("ns/b");
  ir::Identity* c = d.add_identities();
  c->set_id(4);
  ir::RangeSliceEdit* split = AddRangeEdit(d, 2, 4);
  AddEdited(split, 0x0a000006, 0x0a000006, 0);
  AddEdited(split, 0x0a000007, 0x0a000007, 3, "ns/b");
  AddEdited(split, 0x0a000008, 0x0a000009, 0);
  AddEdited(split, 0x0a00000a, 0x0a00000a, 4, "ns/c");
  ir::IdentityPodsEdit* pods2 = d.add_identity_pods();
  pods2->set_identity(2);
  pods2->add_removed("ns/c");
  // An identity the delta appends without pods, given its pod by an edit.
  ir::IdentityPodsEdit* pods4 = d.add_identity_pods();
  pods4->set_identity(4);
  pods4->add_added("ns/c");
  ir::PeerSet* set = d.add_peer_sets();
  set->set_id(0);
  set->add_identities(1);
  set->add_identities(4);
  ir::CompiledPolicy expected = Program();
  expected.clear_ipv4();
  AddRange(expected, 0x00000000, 0x0a000004, 0);
  AddRange(expected, 0x0a000005, 0x0a000005, 1, "ns/a");
  AddRange(expected, 0x0a000006, 0x0a000006, 0);
  AddRange(expected, 0x0a000007, 0x0a000007, 3, "ns/b");
  AddRange(expected, 0x0a000008, 0x0a000009, 0);
  AddRange(expected, 0x0a00000a, 0x0a00000a, 4, "ns/c");
  AddRange(expected, 0x0a00000b, 0xffffffff, 0);
  expected.mutable_identities(2)->clear_pods();
  ir::Identity* e3 = expected.add_identities();
  e3->set_id(3);
  e3->add_pods("ns/b");
  ir::Identity* e4 = expected.add_identities();
  e4->set_id(4);
  e4->add_pods("ns/c");
  expected.mutable_peer_sets(0)->add_identities(4);

  ASSERT_TRUE(ApplyDelta(d, &p).ok()) << ApplyDelta(d, &p);
  EXPECT_TRUE(MessageDifferencer::Equals(p, expected)) << p.DebugString();
  ASSERT_TRUE(CheckIr(p).ok()) << CheckIr(p);
  // DiffPrograms gives a delta that makes the same program (its identity 4 carries its pods
  // itself rather than through an identity pod edit).
  std::optional<ir::CompiledPolicyDelta> found = DiffPrograms(Program(), expected);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->identities_size(), 2);
  ir::CompiledPolicy patched = Program();
  ASSERT_TRUE(ApplyDelta(*found, &patched).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(patched, expected)) << found->DebugString();
}

// A delta ApplyDelta must refuse, and the field path its error must name.
struct FieldCase {
  const char* what;
  const char* field;
  ir::CompiledPolicyDelta delta;
};

// Each case refused (InvalidArgument naming "<field>:"), Program() left as it was.
void ExpectRefusedNamingTheField(const std::vector<FieldCase>& cases) {
  for (const FieldCase& c : cases) {
    ir::CompiledPolicy p = Program();
    absl::Status s = ApplyDelta(c.delta, &p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << s;
    EXPECT_NE(s.message().find(std::string(c.field) + ":"), absl::string_view::npos)
        << c.what << ": " << s;
    EXPECT_TRUE(MessageDifferencer::Equals(p, Program())) << c.what;
  }
}

TEST(ApplyDelta, RefusesBadAppendedIdentitiesNamingTheField) {
  std::vector<FieldCase> cases;
  auto add = [&](const char* what, const char* field) -> ir::CompiledPolicyDelta& {
    cases.push_back({what, field, {}});
    return cases.back().delta;
  };
  add("gap after the program's identities", "identities[0]").add_identities()->set_id(4);
  {
    ir::CompiledPolicyDelta& d = add("gap between appended identities", "identities[1]");
    d.add_identities()->set_id(3);
    d.add_identities()->set_id(5);
  }
  add("an existing id", "identities[0]").add_identities()->set_id(2);
  {
    ir::Identity* i = add("external", "identities[0]").add_identities();
    i->set_id(3);
    i->set_external(true);
  }
  {
    ir::Identity* i = add("unsorted pods", "identities[0].pods").add_identities();
    i->set_id(3);
    i->add_pods("ns/z");
    i->add_pods("ns/b");
  }
  {
    ir::CompiledPolicyDelta& d = add("a range naming an id past the appended ones", "ipv4[0].ranges[0]");
    d.add_identities()->set_id(3);
    AddEdited(AddRangeEdit(d, 2, 3), 0x0a000006, 0x0a000009, 4);
  }
  {
    ir::CompiledPolicyDelta& d = add("a peer set naming an id past the appended ones",
                                     "peer_sets[0]");
    d.add_identities()->set_id(3);
    ir::PeerSet* set = d.add_peer_sets();
    set->set_id(0);
    set->add_identities(4);
  }
  {
    ir::CompiledPolicyDelta& d = add("pods of an id past the appended ones", "identity_pods[0]");
    d.add_identities()->set_id(3);
    d.add_identity_pods()->set_identity(4);
  }
  ExpectRefusedNamingTheField(cases);
}

// Malformed identity pod edits (compiled.proto IdentityPodsEdit): each refused with the path
// of the offending field, the program left as it was. Program(): identity 1 has ns/a,
// identity 2 ns/c.
TEST(ApplyDelta, RefusesBadIdentityPodEditsNamingTheField) {
  std::vector<FieldCase> cases;
  auto edit = [&](const char* what, const char* field, uint32_t identity,
                  std::vector<std::string> added,
                  std::vector<std::string> removed) -> ir::CompiledPolicyDelta& {
    cases.push_back({what, field, {}});
    ir::IdentityPodsEdit* e = cases.back().delta.add_identity_pods();
    e->set_identity(identity);
    for (const std::string& name : added) e->add_added(name);
    for (const std::string& name : removed) e->add_removed(name);
    return cases.back().delta;
  };
  edit("removing a name not there", "identity_pods[0].removed[0]", 1, {}, {"ns/b"});
  edit("removing another identity's pod", "identity_pods[0].removed[0]", 1, {}, {"ns/c"});
  edit("adding a name there already", "identity_pods[0].added[0]", 1, {"ns/a"}, {});
  edit("adding a name twice", "identity_pods[0].added[1]", 1, {"ns/b", "ns/b"}, {});
  edit("removing a name twice", "identity_pods[0].removed[1]", 1, {}, {"ns/a", "ns/a"});
  edit("added unsorted", "identity_pods[0].added[1]", 1, {"ns/z", "ns/b"}, {});
  edit("a name both added and removed", "identity_pods[0].added[0]", 1, {"ns/a"}, {"ns/a"});
  edit("unknown identity", "identity_pods[0]", 3, {"ns/b"}, {});
  edit("no name", "identity_pods[0]", 1, {}, {});
  {
    ir::CompiledPolicyDelta& d =
        edit("second edit of an identity", "identity_pods[1]", 1, {"ns/b"}, {});
    d.add_identity_pods()->set_identity(1);
    d.mutable_identity_pods(1)->add_added("ns/d");
  }
  {
    ir::CompiledPolicyDelta& d =
        edit("good edit, then a bad one", "identity_pods[1].removed[0]", 1, {"ns/b"}, {});
    d.add_identity_pods()->set_identity(2);
    d.mutable_identity_pods(1)->add_removed("ns/a");
  }
  {
    // The appended identity 3 has ns/b only: removing ns/c is removing a name not there.
    ir::CompiledPolicyDelta& d =
        edit("removing from an appended identity", "identity_pods[0].removed[0]", 3, {}, {"ns/c"});
    ir::Identity* appended = d.add_identities();
    appended->set_id(3);
    appended->add_pods("ns/b");
  }
  ExpectRefusedNamingTheField(cases);
  for (const FieldCase& c : cases) {  // the backends' check is the same
    EXPECT_EQ(CheckIdentityPodsEdits(Program(), c.delta).code(),
              absl::StatusCode::kInvalidArgument)
        << c.what;
  }
}

// Pod edits on long lists: DiffPrograms names the names that come and go, ApplyDelta gives
// exactly the next list (built from a set, not from the code under test), PodsAfterEdit its
// size. NP_DELTA_SEED replays one run.
TEST(ApplyDelta, EditsLongPodListsByName) {
  const char* env = std::getenv("NP_DELTA_SEED");
  const uint32_t seed = env != nullptr ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10))
                                       : 20261202u;
  std::mt19937 rng(seed);
  auto random_pods = [&](int universe, int percent) {
    std::set<std::string> names;
    for (int i = 0; i < universe; ++i) {
      if (static_cast<int>(rng() % 100) < percent) names.insert(absl::StrCat("ns/p", i));
    }
    return names;
  };
  int edited = 0;
  for (int step = 0; step < 300; ++step) {
    const std::string where = absl::StrCat("seed ", seed, " step ", step);
    const int universe = 1 + static_cast<int>(rng() % 300);
    const std::set<std::string> before = random_pods(universe, static_cast<int>(rng() % 101));
    // Mostly a few names changed (a pod event), sometimes a whole new list (a split).
    std::set<std::string> after = before;
    if (rng() % 4 == 0) {
      after = random_pods(universe, static_cast<int>(rng() % 101));
    } else {
      for (int k = static_cast<int>(rng() % 4); k > 0; --k) {
        const std::string name = absl::StrCat("ns/p", rng() % (universe + 2));
        if (!after.erase(name)) after.insert(name);
      }
    }
    ir::CompiledPolicy a = Program(), b = Program();
    a.mutable_identities(1)->clear_pods();
    b.mutable_identities(1)->clear_pods();
    for (const std::string& name : before) a.mutable_identities(1)->add_pods(name);
    for (const std::string& name : after) b.mutable_identities(1)->add_pods(name);
    std::optional<ir::CompiledPolicyDelta> d = DiffPrograms(a, b);
    ASSERT_TRUE(d.has_value()) << where;
    if (before == after) {
      EXPECT_EQ(d->identity_pods_size(), 0) << where;
      continue;
    }
    ++edited;
    ASSERT_EQ(d->identity_pods_size(), 1) << where;
    const ir::IdentityPodsEdit& e = d->identity_pods(0);
    std::vector<std::string> added, removed;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                        std::back_inserter(added));
    std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                        std::back_inserter(removed));
    EXPECT_TRUE(std::equal(e.added().begin(), e.added().end(), added.begin(), added.end()))
        << where;
    EXPECT_TRUE(std::equal(e.removed().begin(), e.removed().end(), removed.begin(), removed.end()))
        << where;
    EXPECT_EQ(PodsAfterEdit(a, *d, e), static_cast<int>(after.size())) << where;
    ir::CompiledPolicy patched = a;
    ASSERT_TRUE(ApplyDelta(*d, &patched).ok()) << where << ": " << ApplyDelta(*d, &patched);
    ASSERT_TRUE(MessageDifferencer::Equals(patched, b)) << where << "\n" << d->DebugString();
  }
  EXPECT_GT(edited, 200) << "the random lists must differ";
}

TEST(DiffPrograms, RefusesWhatADeltaCannotSay) {
  const ir::CompiledPolicy base = Program();
  EXPECT_TRUE(DiffPrograms(base, base).has_value());
  EXPECT_EQ(DiffPrograms(base, base)->ByteSizeLong(), 0u) << "equal programs: an empty delta";
  ir::CompiledPolicy p = base;
  p.mutable_peer_sets(0)->add_identities(2);
  ASSERT_TRUE(DiffPrograms(base, p).has_value()) << "peer set changed";
  EXPECT_EQ(DiffPrograms(base, p)->peer_sets_size(), 1);
  EXPECT_EQ(DiffPrograms(base, p)->tables_size(), 0);
  p = base;
  p.mutable_tables(0)->mutable_egress()->set_isolated(true);
  ASSERT_TRUE(DiffPrograms(base, p).has_value()) << "table changed";
  EXPECT_EQ(DiffPrograms(base, p)->tables_size(), 1);
  EXPECT_EQ(DiffPrograms(base, p)->peer_sets_size(), 0);
  p = base;
  p.clear_tables();
  p.clear_peer_sets();
  EXPECT_FALSE(DiffPrograms(base, p).has_value()) << "tables and peer sets removed";
  p = base;
  p.add_identities()->set_id(3);
  p.mutable_identities(3)->add_pods("ns/z");
  ASSERT_TRUE(DiffPrograms(base, p).has_value()) << "identity appended";
  ASSERT_EQ(DiffPrograms(base, p)->identities_size(), 1);
  EXPECT_TRUE(MessageDifferencer::Equals(DiffPrograms(base, p)->identities(0), p.identities(3)));
  p.mutable_identities(3)->set_external(true);
  EXPECT_FALSE(DiffPrograms(base, p).has_value()) << "external identity appended";
  EXPECT_FALSE(DiffPrograms(p, base).has_value()) << "identity removed";
  p = base;
  p.mutable_identities(1)->set_external(true);
  EXPECT_FALSE(DiffPrograms(base, p).has_value()) << "identity's external changed";
  p = base;
  p.set_always_allow_self(true);
  EXPECT_FALSE(DiffPrograms(base, p).has_value()) << "always_allow_self changed";
}

// A random program over identities 0..identities-1 (0 external): pods at random addresses of
// 10.0.0.0/26, each either an endpoint of the node or not.
// `items` peer sets and tables of random content (the pairs differ in them by id too).
ir::CompiledPolicy RandomProgram(std::mt19937& rng, int items = 2, uint32_t identities = 4) {
  ir::CompiledPolicy p = Program();
  p.clear_ipv4();
  p.clear_endpoints();
  p.clear_peer_sets();
  p.clear_tables();
  for (uint32_t id = 3; id < identities; ++id) p.add_identities()->set_id(id);
  for (int i = 0; i < items; ++i) {
    ir::PeerSet* set = p.add_peer_sets();
    set->set_id(static_cast<uint32_t>(i));
    for (uint32_t id = 0; id < identities; ++id) {
      if (rng() % 2 == 0) set->add_identities(id);
    }
    ir::Table* t = p.add_tables();
    t->set_id(static_cast<uint32_t>(i));
    t->mutable_ingress()->set_isolated(rng() % 2 == 0);
    if (rng() % 2 == 0) {
      AddPortRule(t->mutable_ingress(), ir::TCP, 80, 80 + rng() % 3, rng() % items);
    }
  }
  for (ir::Identity& id : *p.mutable_identities()) id.clear_pods();
  std::vector<std::vector<std::string>> pods(identities);
  uint32_t cursor = 0;
  for (uint32_t a = 0x0a000000; a < 0x0a000040; ++a) {
    if (rng() % 4 != 0) continue;
    const uint32_t identity = 1 + rng() % (identities - 1);
    const std::string name = "p" + std::to_string(a & 0xff);
    if (a > cursor) AddRange(p, cursor, a - 1, 0);
    AddRange(p, a, a, identity, "ns/" + name);
    pods[identity].push_back("ns/" + name);
    if (rng() % 2 == 0) {
      ir::Endpoint* e = p.add_endpoints();
      *e = MakeEndpoint(name, "10.0.0." + std::to_string(a & 0xff));
      if (rng() % 2 == 0) {
        e->set_selected(true);
        e->set_table(rng() % items);
      }
    }
    cursor = a + 1;
  }
  AddRange(p, cursor, 0xffffffff, 0);
  for (uint32_t i = 1; i < identities; ++i) {
    std::sort(pods[i].begin(), pods[i].end());  // Identity.pods is sorted
    for (const std::string& pod : pods[i]) p.mutable_identities(static_cast<int>(i))->add_pods(pod);
  }
  return p;
}

TEST(DiffPrograms, RoundTripsThroughApplyDeltaOnRandomPairs) {
  const char* env = std::getenv("NP_DELTA_SEED");
  const uint32_t seed = env != nullptr ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10))
                                       : 20261201u;
  std::mt19937 rng(seed);
  int changed = 0, appended = 0;
  for (int step = 0; step < 500; ++step) {
    const int items = 1 + static_cast<int>(rng() % 3);
    // b has as many identities as a or up to two more (appended, never removed).
    const uint32_t identities = 4 + rng() % 2;
    const ir::CompiledPolicy a = RandomProgram(rng, items, identities);
    const ir::CompiledPolicy b = RandomProgram(rng, items + static_cast<int>(rng() % 2),
                                               identities + rng() % 3);
    ASSERT_TRUE(CheckIr(a).ok() && CheckIr(b).ok());
    std::optional<ir::CompiledPolicyDelta> d = DiffPrograms(a, b);
    ASSERT_TRUE(d.has_value()) << "seed " << seed << " step " << step;
    if (d->ByteSizeLong() > 0) ++changed;
    if (d->identities_size() > 0) ++appended;
    ir::CompiledPolicy patched = a;
    ASSERT_TRUE(ApplyDelta(*d, &patched).ok()) << "seed " << seed << " step " << step;
    ASSERT_TRUE(MessageDifferencer::Equals(patched, b))
        << "seed " << seed << " step " << step << "\n" << d->DebugString();
  }
  EXPECT_GT(changed, 450) << "the random pairs must differ";
  EXPECT_GT(appended, 250) << "and often in their number of identities";
}

}  // namespace
}  // namespace np::backends
