#include <cstdio>
#include <iostream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "np/cli/cli.h"
#include "np/loader.h"
#include "np/engine.h"
#include "np/reference.h"

ABSL_DECLARE_FLAG(std::string, engine);

namespace np::cli {

absl::StatusOr<Cluster> LoadCluster(const Args& args, bool print_warnings) {
  if (args.files.empty()) {
    return absl::InvalidArgumentError("no input: give at least one -f FILE (or -f - for stdin)");
  }
  ClusterLoader loader;
  for (const std::string& file : args.files) {
    // Read errors are recorded in the loader's diagnostics; Build reports them all.
    (void)loader.AddPath(file);
  }
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = loader.Build(&diagnostics);
  int errors = 0;
  for (const Diagnostic& d : diagnostics) {
    if (d.is_error()) ++errors;
    if (d.is_error() || print_warnings) std::cerr << d.ToString() << "\n";
  }
  if (!cluster.ok()) {
    if (errors == 0) std::cerr << cluster.status().message() << "\n";
    return absl::InvalidArgumentError(absl::StrCat("input rejected: ", errors, " error",
                                                   errors == 1 ? "" : "s"));
  }
  return cluster;
}

namespace {

class ReferenceEvaluator : public Evaluator {
 public:
  ReferenceEvaluator(const Cluster& cluster, const EvaluationOptions& options)
      : cluster_(cluster), options_(options) {}
  Verdict Evaluate(const Flow& flow) const override {
    return reference::Evaluate(cluster_, flow, options_);
  }

 private:
  const Cluster& cluster_;
  EvaluationOptions options_;
};

// The indexed engine. Engine pod ids of a fresh build follow the cluster's order, so the
// cluster's pod indexes translate by name once, here.
class EngineEvaluator : public Evaluator {
 public:
  EngineEvaluator(const Cluster& cluster, std::shared_ptr<const Engine> engine)
      : engine_(std::move(engine)) {
    for (int i = 0; i < cluster.pod_count(); ++i) {
      ids_.push_back(static_cast<int>(*engine_->FindPod(cluster.pod(i).Key())));
    }
  }
  Verdict Evaluate(const Flow& flow) const override {
    return engine_->Explain(Translate(flow.source), Translate(flow.destination), flow.protocol,
                            flow.port);
  }
  bool Allowed(const Flow& flow) const override {
    return engine_->Allowed(Translate(flow.source), Translate(flow.destination), flow.protocol,
                            flow.port);
  }

 private:
  Endpoint Translate(const Endpoint& e) const {
    return e.is_pod ? Endpoint::Pod(ids_[e.pod_index]) : e;
  }
  std::shared_ptr<const Engine> engine_;
  std::vector<int> ids_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Evaluator>> MakeEvaluator(const Cluster& cluster,
                                                         const EvaluationOptions& options) {
  std::string engine = absl::GetFlag(FLAGS_engine);
  if (engine == "reference") {
    return std::unique_ptr<Evaluator>(new ReferenceEvaluator(cluster, options));
  }
  if (engine == "engine") {
    EngineOptions engine_options;
    engine_options.evaluation = options;
    absl::StatusOr<std::shared_ptr<const Engine>> built = Engine::Build(cluster, engine_options);
    if (!built.ok()) return built.status();
    return std::unique_ptr<Evaluator>(new EngineEvaluator(cluster, *std::move(built)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--engine must be 'engine' or 'reference', not '", engine, "'"));
}

absl::StatusOr<Endpoint> ParseEndpoint(const Cluster& cluster, absl::string_view text) {
  if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(text); ip.ok()) {
    std::optional<int> pod = cluster.PodByIp(*ip);
    return pod ? Endpoint::Pod(*pod) : Endpoint::External(*ip);
  }
  std::string key(text);
  if (key.find('/') == std::string::npos) key = absl::StrCat("default/", key);
  std::optional<int> pod = cluster.FindPod(key);
  if (!pod) {
    return absl::NotFoundError(absl::StrCat("no pod \"", key,
                                            "\" in the input (write namespace/name, or an IP "
                                            "address for a peer outside the cluster)"));
  }
  return Endpoint::Pod(*pod);
}

absl::StatusOr<std::vector<uint16_t>> ParsePortList(absl::string_view text) {
  std::vector<uint16_t> ports;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int port;
    if (!absl::SimpleAtoi(part, &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad port \"", part, "\": must be a number from 1 to 65535"));
    }
    ports.push_back(static_cast<uint16_t>(port));
  }
  if (ports.empty()) return absl::InvalidArgumentError("no port given");
  return ports;
}

absl::StatusOr<std::vector<Protocol>> ParseProtocolList(absl::string_view text) {
  std::vector<Protocol> protocols;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    absl::StatusOr<Protocol> p = ParseProtocol(part, /*case_insensitive=*/true);
    if (!p.ok()) return p.status();
    protocols.push_back(*p);
  }
  if (protocols.empty()) return absl::InvalidArgumentError("no protocol given");
  return protocols;
}

}  // namespace np::cli
