// `netpol probe`: the backend's program on real packets, compared with the engine
// (np/probe/harness.h); `netpol probe-agent`: the agent that runs in each pod's namespace.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>

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

// The IP address ends of the ReachabilityExpectation flows of these files (np/testing).
std::vector<IpAddress> FlowAddresses(const std::vector<std::string>& files) {
  std::vector<IpAddress> out;
  for (const std::string& file : ScenarioFiles(files)) {
    absl::StatusOr<std::vector<np::testing::Expectation>> expectations =
        np::testing::ReadExpectations(file);
    if (!expectations.ok()) continue;  // not an expectation file: nothing to add
    for (const np::testing::Expectation& e : *expectations) {
      for (const np::testing::FlowExpectation& f : e.flows) {
        for (const std::string& end : {f.from, f.to}) {
          if (absl::StatusOr<IpAddress> a = IpAddress::Parse(end); a.ok()) out.push_back(*a);
        }
      }
    }
  }
  return out;
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
    std::vector<IpAddress> externals = given_externals;
    for (const IpAddress& a : FlowAddresses(args.files)) externals.push_back(a);
    harness.set_external_addresses(externals);
    absl::StatusOr<probe::ScenarioReport> report =
        harness.Probe(*cluster, args.files.size() == 1 ? args.files[0] : "");
    if (probe::Interrupted()) return OnInterrupt(harness);
    absl::Status closed = harness.Close();
    if (!report.ok()) return Fail(report.status());
    if (output == "json") {
      std::cout << probe::FormatJson(*report) << "\n";
      for (const std::string& note : report->notes) std::cerr << "note: " << note << "\n";
      if (report->mismatches > 0) {
        std::cerr << "netpol probe: " << report->mismatches << " of " << report->probes
                  << " probes differ from the engine (run without -o json to see them)\n";
      }
    } else {
      std::cout << probe::FormatText(*report);
    }
    if (!closed.ok()) return Fail(closed);
    return report->mismatches == 0 ? kExitOk : kExitNo;
  }

  // --each: one scenario per file.
  std::vector<std::string> files = ScenarioFiles(args.files);
  if (files.empty()) {
    return Fail(absl::InvalidArgumentError(
        "--each: no .yaml, .yml or .json file in the -f paths: there is no scenario to probe"));
  }
  int failed = 0, errors = 0, probes = 0;
  absl::Time start = absl::Now();
  for (const std::string& file : files) {
    if (probe::Interrupted()) return OnInterrupt(harness);
    Args one = args;
    one.files = {file};
    absl::StatusOr<Cluster> cluster = LoadCluster(one, /*print_warnings=*/false);
    std::vector<IpAddress> externals = given_externals;
    for (const IpAddress& a : FlowAddresses({file})) externals.push_back(a);
    harness.set_external_addresses(externals);
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
    if (report->mismatches > 0) ++failed;
    if (output == "json") {
      std::string json = probe::FormatJson(*report);
      std::cout << "{\"file\": " << JsonQuote(file) << ", " << json.substr(1) << "\n";
    } else if (report->mismatches > 0) {
      std::cout << probe::FormatText(*report);
    } else {
      std::cout << absl::StrFormat("PASS %s (%d probes, %.2fs)\n", DisplayText(file), report->probes,
                                   absl::ToDoubleSeconds(report->elapsed));
    }
    std::cout.flush();
  }
  absl::Status closed = harness.Close();
  std::string summary = absl::StrFormat(
      "%s: %d scenario(s), %d failed, %d error(s); %d probes with backend %s in %.1fs",
      failed + errors == 0 ? "PASS" : "FAIL", files.size(), failed, errors, probes,
      options.backend, absl::ToDoubleSeconds(absl::Now() - start));
  (output == "json" ? std::cerr : std::cout) << summary << "\n";
  if (!closed.ok()) return Fail(closed);
  if (errors > 0) return kExitError;
  return failed == 0 ? kExitOk : kExitNo;
}

}  // namespace np::cli
