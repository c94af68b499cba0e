// `netpol probe`: the backend's program on real packets, compared with the engine
// (np/probe/harness.h); `netpol probe-agent`: the agent that runs in each pod's namespace.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "np/cli/cli.h"
#include "np/probe/agent.h"
#include "np/probe/harness.h"
#include "np/testing/expectation.h"

ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, port);
ABSL_DECLARE_FLAG(std::string, protocol);
ABSL_DECLARE_FLAG(std::string, backend);
ABSL_FLAG(std::string, family, "4,6",
          "probe: address families to probe (4, 6 or 4,6); compile --explain: the first one "
          "picks a pod's address.");
ABSL_FLAG(bool, each, false,
          "probe: every -f file (every .yaml/.json file of a -f directory) is its own "
          "scenario; namespaces are reused while the pods stay the same.");
ABSL_FLAG(bool, cleanup, false,
          "probe: remove namespaces left by probe runs that are no longer running, then exit.");
ABSL_FLAG(int, timeout_ms, 250, "probe: time each probe waits for an answer (ms).");
ABSL_FLAG(int, retry_timeout_ms, 3000,
          "probe: a probe the engine allows that got no answer is retried once with this "
          "timeout (ms) before it counts as a mismatch.");
ABSL_FLAG(std::string, swap_with, "",
          "probe: the update test. FILE with a second policy set (pods may come, go, be "
          "relabelled or reuse an address): the backend's program is swapped between -f and "
          "FILE --swaps times while probing; a both-denied flow that connects or a "
          "both-allowed flow that is dropped fails it.");
ABSL_FLAG(int, swaps, 50, "probe --swap-with: how many times the program is replaced.");
ABSL_FLAG(std::string, external, "",
          "probe: addresses outside the cluster (comma-separated) to probe to and from every "
          "pod; the IP ends of the files' expectation flows are added.");
ABSL_FLAG(bool, sample_external, true,
          "probe: also probe one address of every non-pod address range of the compiled "
          "program (each CIDR class of the ipBlocks); --nosample-external turns it off.");
ABSL_FLAG(std::string, agent, "",
          "probe: the probe agent's binary (default: this netpol, as `netpol probe-agent`).");

namespace np::cli {
namespace {

int Fail(const absl::Status& s) {
  std::cerr << "netpol probe: " << s.message() << "\n";
  return kExitError;
}

bool Given(int argc, char** argv, absl::string_view flag) {
  for (int i = 2; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (a == "--") break;
    for (absl::string_view prefix : {"--", "-"}) {
      if (!absl::StartsWith(a, prefix)) continue;
      absl::string_view name = a.substr(prefix.size());
      name = name.substr(0, name.find('='));
      if (name == flag) return true;
    }
  }
  return false;
}

absl::StatusOr<std::vector<AddressFamily>> ParseFamilies(absl::string_view text) {
  std::vector<AddressFamily> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    AddressFamily f;
    if (part == "4" || part == "ipv4" || part == "IPv4") {
      f = AddressFamily::kIPv4;
    } else if (part == "6" || part == "ipv6" || part == "IPv6") {
      f = AddressFamily::kIPv6;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("bad --family \"", part, "\": 4, 6 or 4,6"));
    }
    if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  }
  if (out.empty()) return absl::InvalidArgumentError("--family: give 4, 6 or 4,6");
  return out;
}

// -f arguments as scenario files: directories expand to their .yaml/.yml/.json files.
std::vector<std::string> ScenarioFiles(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (!std::filesystem::is_directory(input, ec)) {
      files.push_back(input);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(input, ec)) {
      if (!entry.is_regular_file()) continue;
      std::string ext = entry.path().extension().string();
      if (ext == ".yaml" || ext == ".yml" || ext == ".json") found.push_back(entry.path().string());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

// The ReachabilityExpectation flows of these files (np/testing); files without any add none.
std::vector<np::testing::FlowExpectation> ExpectedFlows(const std::vector<std::string>& files) {
  std::vector<np::testing::FlowExpectation> out;
  for (const std::string& file : ScenarioFiles(files)) {
    absl::StatusOr<std::vector<np::testing::Expectation>> expectations =
        np::testing::ReadExpectations(file);
    if (!expectations.ok()) continue;  // not an expectation file: nothing to add
    for (const np::testing::Expectation& e : *expectations) {
      out.insert(out.end(), e.flows.begin(), e.flows.end());
    }
  }
  return out;
}

// Their IP address ends, probed as external addresses.
std::vector<IpAddress> FlowAddresses(const std::vector<np::testing::FlowExpectation>& flows) {
  std::vector<IpAddress> out;
  for (const np::testing::FlowExpectation& f : flows) {
    for (const std::string& end : {f.from, f.to}) {
      if (absl::StatusOr<IpAddress> a = IpAddress::Parse(end); a.ok()) out.push_back(*a);
    }
  }
  return out;
}

std::vector<uint16_t> FlowPorts(const std::vector<np::testing::FlowExpectation>& flows) {
  std::set<uint16_t> ports;
  for (const np::testing::FlowExpectation& f : flows) ports.insert(f.port);
  return std::vector<uint16_t>(ports.begin(), ports.end());
}

// The probe of an expected flow, if it was made: a pod pair on the pair's flow family (IPv4
// when both have it), or a pod and an external address. Null for a pod to itself (it never
// leaves the pod's namespace: no datapath sees it), two addresses, or a protocol, port or
// family not probed.
const probe::ProbeCell* CellOf(const probe::ScenarioReport& report,
                               const np::testing::FlowExpectation& flow) {
  auto pod_index = [&](const std::string& key) -> int {
    auto it = std::find(report.pods.begin(), report.pods.end(), key);
    return it == report.pods.end() ? -1 : static_cast<int>(it - report.pods.begin());
  };
  const int n = static_cast<int>(report.pods.size());
  const int from = pod_index(flow.from), to = pod_index(flow.to);
  auto has = [&](int pod, AddressFamily family) {
    const auto& ips = report.pod_ips[pod];
    return std::any_of(ips.begin(), ips.end(),
                       [&](const IpAddress& a) { return a.family() == family; });
  };
  if (from >= 0 && to >= 0) {
    if (from == to) return nullptr;
    AddressFamily family = has(from, AddressFamily::kIPv4) && has(to, AddressFamily::kIPv4)
                               ? AddressFamily::kIPv4
                               : AddressFamily::kIPv6;
    for (const probe::ProbeMatrix& m : report.matrices) {
      if (m.family == family && m.protocol == flow.protocol && m.port == flow.port) {
        const probe::ProbeCell& cell = m.cells[static_cast<size_t>(from) * n + to];
        return cell.probed ? &cell : nullptr;
      }
    }
    return nullptr;
  }
  const bool inbound = to >= 0;
  const int pod = inbound ? to : from;
  absl::StatusOr<IpAddress> address = IpAddress::Parse(inbound ? flow.from : flow.to);
  if (pod < 0 || !address.ok()) return nullptr;
  auto e = std::find(report.externals.begin(), report.externals.end(), *address);
  if (e == report.externals.end()) return nullptr;
  const size_t index = static_cast<size_t>(e - report.externals.begin()) * n + pod;
  for (const probe::ExternalMatrix& m : report.external_matrices) {
    if (m.protocol == flow.protocol && m.port == flow.port) {
      const probe::ProbeCell& cell = inbound ? m.inbound[index] : m.outbound[index];
      return cell.probed ? &cell : nullptr;
    }
  }
  return nullptr;
}

// The file's expected flows against what the packets did: upstream's expectations checked
// on the datapath directly, not only through the engine. Writes the differing ones to `out`.
struct FlowCounts {
  int checked = 0, not_probed = 0, differ = 0;
  std::string Text() const {
    return absl::StrCat("expected flows: ", checked, " checked on packets, ", differ,
                        " differ; ", not_probed,
                        " not probed (a pod to itself, or a protocol, port or family not probed)");
  }
};
FlowCounts CheckExpectedFlows(const probe::ScenarioReport& report,
                              const std::vector<np::testing::FlowExpectation>& flows,
                              std::ostream& out) {
  FlowCounts counts;
  int& checked = counts.checked;
  int& not_probed = counts.not_probed;
  int& differ = counts.differ;
  for (const np::testing::FlowExpectation& flow : flows) {
    const probe::ProbeCell* cell = CellOf(report, flow);
    if (cell == nullptr) {
      ++not_probed;
      continue;
    }
    ++checked;
    if (cell->observed == flow.allowed) continue;
    ++differ;
    out << "  expected flow (line " << flow.line << ") " << flow.from << " -> " << flow.to
              << " " << ProtocolName(flow.protocol) << "/" << flow.port << ": expected "
              << (flow.allowed ? "allowed" : "denied") << ", the packets "
              << (cell->observed ? "connected" : absl::StrCat("did not (", cell->status, ")"))
              << "\n";
  }
  return counts;
}

int OnInterrupt(probe::Harness& harness) {
  (void)harness.Close();
  std::cerr << "netpol probe: interrupted; namespaces removed\n";
  return 128 + probe::InterruptSignal();
}

}  // namespace

int RunProbeAgent(int argc, char** argv) { return probe::AgentMain(argc - 1, argv + 1); }

int RunProbe(const Args& args, int argc, char** argv) {
  if (geteuid() != 0) {
    return Fail(absl::PermissionDeniedError(
        "needs root: it creates network namespaces and applies the backend inside them"));
  }
  probe::InstallSignalHandlers();
  if (absl::GetFlag(FLAGS_cleanup)) {
    absl::StatusOr<std::vector<std::string>> removed = probe::CleanupLeftovers();
    if (!removed.ok()) return Fail(removed.status());
    for (const std::string& name : *removed) std::cout << "removed netns " << name << "\n";
    std::cout << removed->size() << " leftover namespace(s) removed\n";
    return kExitOk;
  }
  std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "json") {
    return Fail(absl::InvalidArgumentError("-o must be text or json"));
  }
  probe::HarnessOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  if (Given(argc, argv, "port")) {
    absl::StatusOr<std::vector<uint16_t>> ports = ParsePortList(absl::GetFlag(FLAGS_port));
    if (!ports.ok()) return Fail(ports.status());
    options.ports = *ports;
  }
  if (Given(argc, argv, "protocol")) {
    absl::StatusOr<std::vector<Protocol>> protocols =
        ParseProtocolList(absl::GetFlag(FLAGS_protocol));
    if (!protocols.ok()) return Fail(protocols.status());
    options.protocols = *protocols;
  }
  absl::StatusOr<std::vector<AddressFamily>> families = ParseFamilies(absl::GetFlag(FLAGS_family));
  if (!families.ok()) return Fail(families.status());
  options.families = *families;
  absl::StatusOr<EvaluationOptions> evaluation = OptionsFromFlags();
  if (!evaluation.ok()) return Fail(evaluation.status());
  options.evaluation = *evaluation;
  options.timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  options.retry_timeout_ms = absl::GetFlag(FLAGS_retry_timeout_ms);
  if (options.timeout_ms < 10 || options.timeout_ms > 60000 || options.retry_timeout_ms < 10 ||
      options.retry_timeout_ms > 60000) {
    return Fail(absl::InvalidArgumentError("--timeout-ms and --retry-timeout-ms: 10 to 60000"));
  }
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_external), ',', absl::SkipWhitespace())) {
    absl::StatusOr<IpAddress> a = IpAddress::Parse(part);
    if (!a.ok()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("bad --external address \"", part, "\"")));
    }
    options.external_addresses.push_back(*a);
  }
  options.sample_external = absl::GetFlag(FLAGS_sample_external);
  const std::vector<IpAddress> given_externals = options.external_addresses;
  std::string agent = absl::GetFlag(FLAGS_agent);
  options.agent_command = agent.empty() ? std::vector<std::string>{"/proc/self/exe", "probe-agent"}
                                        : std::vector<std::string>{agent};
  probe::Harness harness(options);

  // The update test.
  if (!absl::GetFlag(FLAGS_swap_with).empty()) {
    absl::StatusOr<Cluster> a = LoadCluster(args, /*print_warnings=*/false);
    if (!a.ok()) return Fail(a.status());
    Args other = args;  // the same cluster-only objects and options
    other.files = {absl::GetFlag(FLAGS_swap_with)};
    absl::StatusOr<Cluster> b = LoadCluster(other, /*print_warnings=*/false);
    if (!b.ok()) return Fail(b.status());
    int swaps = absl::GetFlag(FLAGS_swaps);
    if (swaps < 1 || swaps > 100000) {
      return Fail(absl::InvalidArgumentError("--swaps: 1 to 100000"));
    }
    absl::StatusOr<probe::UpdateReport> report = harness.UpdateTest(*a, *b, swaps);
    if (probe::Interrupted()) return OnInterrupt(harness);
    absl::Status closed = harness.Close();
    if (!report.ok()) return Fail(report.status());
    std::cout << probe::FormatUpdateReport(*report);
    if (!closed.ok()) return Fail(closed);
    return report->passed() ? kExitOk : kExitNo;
  }

  if (!absl::GetFlag(FLAGS_each)) {
    absl::StatusOr<Cluster> cluster = LoadCluster(args, /*print_warnings=*/false);
    if (!cluster.ok()) return Fail(cluster.status());
    const std::vector<np::testing::FlowExpectation> flows = ExpectedFlows(args.files);
    std::vector<IpAddress> externals = given_externals;
    for (const IpAddress& a : FlowAddresses(flows)) externals.push_back(a);
    harness.set_external_addresses(externals);
    harness.set_extra_ports(FlowPorts(flows));
    absl::StatusOr<probe::ScenarioReport> report =
        harness.Probe(*cluster, args.files.size() == 1 ? args.files[0] : "");
    if (probe::Interrupted()) return OnInterrupt(harness);
    absl::Status closed = harness.Close();
    if (!report.ok()) return Fail(report.status());
    int flows_differ = 0;
    if (output == "json") {
      std::cout << probe::FormatJson(*report) << "\n";
      for (const std::string& note : report->notes) std::cerr << "note: " << note << "\n";
      if (report->mismatches > 0) {
        std::cerr << "netpol probe: " << report->mismatches << " of " << report->probes
                  << " probes differ from the engine (run without -o json to see them)\n";
      }
    } else {
      std::cout << probe::FormatText(*report);
      FlowCounts counts = CheckExpectedFlows(*report, flows, std::cout);
      if (!flows.empty()) std::cout << counts.Text() << "\n";
      flows_differ = counts.differ;
    }
    if (!closed.ok()) return Fail(closed);
    return report->mismatches == 0 && flows_differ == 0 ? kExitOk : kExitNo;
  }

  // --each: one scenario per file.
  std::vector<std::string> files = ScenarioFiles(args.files);
  if (files.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--each: no .yaml, .yml or .json file in the -f paths: there is no scenario to probe"));
  }
  int failed = 0, errors = 0, probes = 0;
  FlowCounts all_flows;
  absl::Time start = absl::Now();
  for (const std::string& file : files) {
    if (probe::Interrupted()) return OnInterrupt(harness);
    Args one = args;
    one.files = {file};
    absl::StatusOr<Cluster> cluster = LoadCluster(one, /*print_warnings=*/false);
    const std::vector<np::testing::FlowExpectation> flows = ExpectedFlows({file});
    std::vector<IpAddress> externals = given_externals;
    for (const IpAddress& a : FlowAddresses(flows)) externals.push_back(a);
    harness.set_external_addresses(externals);
    harness.set_extra_ports(FlowPorts(flows));
    absl::StatusOr<probe::ScenarioReport> report =
        cluster.ok() ? harness.Probe(*cluster, file) : cluster.status();
    if (probe::Interrupted()) return OnInterrupt(harness);
    if (!report.ok()) {
      ++errors;
      std::cout << "ERROR " << DisplayText(file) << ": " << report.status().message() << "\n";
      // A broken network is not reused for the next scenario.
      (void)harness.Close();
      continue;
    }
    probes += report->probes;
    if (output == "json") {
      if (report->mismatches > 0) ++failed;
      std::string json = probe::FormatJson(*report);
      std::cout << "{\"file\": " << JsonQuote(file) << ", " << json.substr(1) << "\n";
    } else {
      if (report->mismatches > 0) std::cout << probe::FormatText(*report);
      std::ostringstream differences;
      const FlowCounts counts = CheckExpectedFlows(*report, flows, differences);
      const int differ = counts.differ;
      all_flows.checked += counts.checked;
      all_flows.not_probed += counts.not_probed;
      all_flows.differ += counts.differ;
      if (report->mismatches > 0 || differ > 0) {
        ++failed;
        std::cout << absl::StrFormat("FAIL %s: %d probes differ from the engine, %d expected "
                                     "flows differ from the packets\n%s",
                                     DisplayText(file), report->mismatches, differ,
                                     differences.str());
      } else {
        std::cout << absl::StrFormat("PASS %s (%d probes, %.2fs)\n", DisplayText(file),
                                     report->probes, absl::ToDoubleSeconds(report->elapsed));
      }
    }
    std::cout.flush();
  }
  absl::Status closed = harness.Close();
  std::string summary = absl::StrFormat(
      "%s: %d scenario(s), %d failed, %d error(s); %d probes with backend %s in %.1fs",
      failed + errors == 0 ? "PASS" : "FAIL", files.size(), failed, errors, probes,
      options.backend, absl::ToDoubleSeconds(absl::Now() - start));
  if (all_flows.checked + all_flows.not_probed > 0) {
    absl::StrAppend(&summary, "; ", all_flows.Text());
  }
  (output == "json" ? std::cerr : std::cout) << summary << "\n";
  if (!closed.ok()) return Fail(closed);
  if (errors > 0) return kExitError;
  return failed == 0 ? kExitOk : kExitNo;
}

}  // namespace np::cli
