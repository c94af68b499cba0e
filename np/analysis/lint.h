// np/analysis/lint.h — findings about policies that validate but probably do not do what
// their author meant: selectors that match nothing of the input (the `app: postgress` typo),
// namespaces named but not defined, named ports no destination has, policies that change no
// connection, rules that admit everything, one-sided isolation, and ipBlocks that decide on
// pod addresses (or on addresses np invented for pods made from workloads).
//
//   np::analysis::LintOptions options;                     // pod CIDRs as the loader used them
//   absl::StatusOr<std::vector<np::analysis::Finding>> findings =
//       np::analysis::Lint(cluster, options);
//   for (const auto& f : *findings) std::cout << f.ToString() << "\n";
//   // policies.yaml:31: NP102 warning NetworkPolicy shop/db: spec.ingress[0].from[0].podSelector:
//   //   matches no pod in namespace shop
//
// "Of the input" is the point: lint reads the objects it is given (manifests as kept in git,
// or a cluster dump) and says what in them refers to nothing in them. A selector that is
// meant for pods deployed elsewhere is reported too; that is what the codes are for
// (filter on them).
//
// The findings (code, name, severity; the field path is in upstream's spelling):
//   NP101 selector-matches-nothing  warning  spec.podSelector selects no pod of the policy's
//         namespace. Such a policy also adds nothing (NP105 is not reported for it).
//   NP102 peer-matches-nothing      warning  a rule peer's namespaceSelector matches no
//         namespace, or its podSelector (with or without namespaceSelector) no pod; the
//         field is the selector that came up empty. Not reported for a peer whose only fault
//         is NP103's.
//   NP103 namespace-not-defined     warning  a namespaceSelector names a namespace
//         (kubernetes.io/metadata.name in matchLabels, or a value of an In expression on
//         that key) that the input does not define; a namespace that only pods or policies
//         imply counts as not defined.
//   NP104 named-port-undefined      warning  a rule's named port that no destination pod
//         defines for the port's protocol. Destinations: for ingress, the pods the policy
//         selects; for egress, the pods the rule's peers match (every pod when the rule has
//         no peers). Not reported when there is no destination pod (NP101, NP102 say why).
//   NP105 policy-adds-nothing       warning  removing the policy changes no connection of
//         any pod or outside address range on any port and protocol (np/analysis/
//         connections.h, DiffChanges): every flow it admits is admitted without it, and
//         the isolation it adds denies nothing that is not denied anyway. A default-deny
//         policy adds isolation that matters (removing it opens flows), so it is not
//         reported; an "allow everything" policy on pods nothing else isolates is. With
//         policy tiers the tiers count too: a NetworkPolicy whose flows an Admin rule
//         already allows (or denies) adds nothing.
//   NP106 rule-admits-all           info, or warning when the rule also has no ports (every
//         port of every protocol): a rule with no from/to (every peer, outside addresses
//         included), a peer `namespaceSelector: {}` with no or an empty podSelector (every
//         pod of every namespace), or an ipBlock 0.0.0.0/0 or ::/0 without except (every
//         address of that family, pods included unless ipBlocks are external only).
//   NP107 one-sided-isolation       info  pods isolated for ingress whose egress is open, or
//         the reverse: one finding per namespace and kind, naming up to kMaxPodsNamed pods.
//   NP108 ipblock-contains-pods     info  an ipBlock contains pod addresses, so it decides on
//         pods too (np's default reading; --ipblock-scope=external changes it). Not
//         reported where NP109 is, nor when ipBlocks are external only.
//   NP109 ipblock-splits-pod-cidr   warning  an ipBlock (cidr minus excepts) covers only part
//         of a pod CIDR from which np assigned addresses to pods made from workloads, so its
//         verdict on those pods depends on addresses np invented. (An except list that tiles
//         the pod CIDR exactly without one except containing it is taken as covering part.)
// No check reports errors: an input with errors is refused before lint (validation).
//
// Thread safety: pure functions of an immutable Cluster.
#ifndef NP_ANALYSIS_LINT_H_
#define NP_ANALYSIS_LINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "np/cluster.h"
#include "np/types.h"
#include "np/verdict.h"
#include "np/workloads.h"

namespace np::analysis {

struct Finding {
  enum class Severity : uint8_t { kError = 0, kWarning = 1, kInfo = 2 };
  std::string code;  // "NP102"
  std::string name;  // "peer-matches-nothing"
  Severity severity = Severity::kWarning;
  std::string kind;    // "NetworkPolicy", or "Namespace" for NP107
  std::string object;  // "namespace/name" ("name" for a Namespace)
  std::string field;   // "spec.ingress[0].from[1].podSelector"; empty: the whole object
  SourceLocation location;
  std::string message;

  // "file:line: NP102 warning NetworkPolicy shop/db: spec.ingress[0].from[0].podSelector:
  // matches no pod ...", with names printed as np::Diagnostic prints them (safe to print).
  std::string ToString() const;
};

// "error", "warning", "info".
absl::string_view SeverityName(Finding::Severity severity);
// The inverse of SeverityName.
absl::StatusOr<Finding::Severity> ParseSeverity(absl::string_view text);

struct LintOptions {
  // As the evaluation reads the policies (ipBlock scope decides NP106, NP108 and NP109).
  EvaluationOptions evaluation;
  // The pod CIDRs the loader assigned synthesized pods' addresses from (np/workloads.h).
  std::vector<IpPrefix> pod_cidrs = WorkloadOptions::DefaultPodCidrs();
};

// How many pods a finding names before it counts the rest ("... and 12 more").
inline constexpr int kMaxPodsNamed = 10;

// Every finding, in the order of the cluster's policies (and each policy's fields), then the
// per-namespace ones. Fails only when compiling the engine for NP105 fails (memory).
absl::StatusOr<std::vector<Finding>> Lint(const Cluster& cluster, const LintOptions& options = {});

// NP109 for one flow, for `explain`: for each end of `flow` that is a pod made from a
// workload, the ipBlocks of the policies that decide the other side (verdict's isolating
// policies) that split the pod CIDR the end's address came from — the verdict depends on an
// address np invented. Empty when none.
std::vector<Finding> InventedAddressFindings(const Cluster& cluster, const Flow& flow,
                                             const Verdict& verdict, const LintOptions& options);

// {"findings": [{"code", "name", "severity", "kind", "object", "field", "file", "line",
// "message"}], "counts": {"error": n, "warning": n, "info": n}}
std::string FindingsJson(const std::vector<Finding>& findings);

}  // namespace np::analysis

#endif  // NP_ANALYSIS_LINT_H_
