// libFuzzer target for np/loader.h: any bytes, read as a YAML/JSON file, must give objects or
// diagnostics with a line, never a crash, a hang, an abort or a sanitizer report.
// Built and run by np/fuzz_loader.sh (outside Bazel, with clang's -fsanitize=fuzzer,address).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "np/loader.h"

namespace {

void Check(bool ok, const char* what, const np::Diagnostic* d = nullptr) {
  if (ok) return;
  std::fprintf(stderr, "invariant broken: %s\n", what);
  if (d != nullptr) std::fprintf(stderr, "  %s\n", d->ToString().c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);

  np::ClusterLoader loader;
  const absl::Status status = loader.AddText(text, "fuzz.yaml");
  Check(loader.diagnostics().size() <= np::kMaxDiagnostics + 1, "an unbounded diagnostic list");
  for (const np::Diagnostic& d : loader.diagnostics()) {
    Check(!d.message.empty(), "a diagnostic without a message", &d);
    // What ToString prints is one line of printable text, whatever the input holds.
    const std::string line = d.ToString();
    for (unsigned char c : line) Check(c >= 0x20 && c != 0x7f, "a control byte in the output", &d);
    if (d.is_omission()) continue;  // counts what was left out: no file, no line
    Check(d.location.file == "fuzz.yaml", "diagnostic without the file name", &d);
    if (!d.is_error()) continue;
    Check(d.location.line > 0, "error without a line", &d);
  }
  Check(status.ok() == (np::CountErrors(loader.diagnostics()) == 0),
        "AddText's status disagrees with its diagnostics");
  for (const auto& policy : loader.objects().policies) {
    Check(policy.source.location.line > 0, "object without a line");
  }

  // Validation and indexing of whatever was read must not crash either.
  std::vector<np::Diagnostic> diagnostics;
  const absl::StatusOr<np::Cluster> cluster = loader.Build(&diagnostics);
  Check(cluster.ok() || !diagnostics.empty() || !cluster.status().message().empty(),
        "Build failed without saying why");

  const absl::StatusOr<np::Change> change = np::ParseChange(text, "fuzz.yaml");
  (void)change;
  return 0;
}
