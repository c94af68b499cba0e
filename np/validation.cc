// Placeholder until the validation rules land; accepts everything.
#include "np/validation.h"

namespace np {
std::vector<Diagnostic> ValidateNetworkPolicy(const k8s::NetworkPolicy&) { return {}; }
std::vector<Diagnostic> ValidatePod(const k8s::Pod&) { return {}; }
std::vector<Diagnostic> ValidateNamespace(const k8s::Namespace&) { return {}; }
}  // namespace np
