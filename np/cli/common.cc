#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "np/cli/cli.h"
#include "np/loader.h"
#include "np/evaluator.h"

ABSL_DECLARE_FLAG(std::string, engine);

namespace np::cli {

absl::StatusOr<Cluster> LoadCluster(const Args& args, bool print_warnings, bool allow_empty) {
  if (args.files.empty() && !allow_empty) {
    return absl::InvalidArgumentError("no input: give at least one -f FILE (or -f - for stdin)");
  }
  ClusterLoader loader;
  if (absl::Status s = ConfigureLoader(args, &loader); !s.ok()) return s;
  for (const std::string& file : args.files) {
    // Read errors are recorded in the loader's diagnostics; Build reports them all.
    (void)loader.AddPath(file);
  }
  std::vector<Diagnostic> diagnostics;
  absl::StatusOr<Cluster> cluster = std::move(loader).Build(&diagnostics);
  PrintDiagnostics(std::cerr, diagnostics, print_warnings);
  if (MemoryBudgetRefused()) return absl::ResourceExhaustedError(OverBudgetMessage());
  if (!cluster.ok()) {
    const int64_t errors = CountErrors(diagnostics);
    if (errors == 0) std::cerr << cluster.status().message() << "\n";
    return absl::InvalidArgumentError(absl::StrCat("input rejected: ", errors, " error",
                                                   errors == 1 ? "" : "s"));
  }
  if (absl::Status s = RequirePods(*cluster, loader); !s.ok() && !allow_empty) return s;
  if (std::string skipped = SkippedSummary(loader, *cluster); !skipped.empty()) {
    std::cerr << "note: " << skipped << "\n";
  }
  return cluster;
}

void PrintDiagnostics(std::ostream& out, const std::vector<Diagnostic>& diagnostics,
                      bool warnings) {
  // One line may quote a long value; more than this of it helps nobody.
  constexpr size_t kMaxLineBytes = 16 << 10;
  size_t written = 0;
  int64_t left_errors = 0, left_warnings = 0;
  for (const Diagnostic& d : diagnostics) {
    if (d.is_omission()) {
      left_errors += d.omitted_errors;
      if (warnings) left_warnings += d.omitted_warnings;
      continue;
    }
    // Warnings that change verdicts (np's reading of an address, a quarantined pod) are
    // printed by every command.
    if (!d.is_error() && !warnings && !d.affects_verdicts) continue;
    std::string line = d.ToString();
    if (line.size() > kMaxLineBytes) {
      const size_t full = line.size();
      size_t cut = kMaxLineBytes;
      while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xc0) == 0x80) --cut;
      line.resize(cut);
      absl::StrAppend(&line, "... (", full, " bytes, cut)");
    }
    if (written + line.size() + 1 > kMaxDiagnosticOutputBytes) {
      ++(d.is_error() ? left_errors : left_warnings);
      continue;
    }
    out << line << "\n";
    written += line.size() + 1;
  }
  if (left_errors + left_warnings == 0) return;
  out << "... and ";
  if (left_errors > 0) out << left_errors << " more error" << (left_errors == 1 ? "" : "s");
  if (left_errors > 0 && left_warnings > 0) out << " and ";
  if (left_warnings > 0) {
    out << left_warnings << " more warning" << (left_warnings == 1 ? "" : "s");
  }
  out << " not shown\n";
}

int64_t InputBytes(const Args& args) {
  namespace fs = std::filesystem;
  int64_t total = 0;
  for (const std::string& path : args.files) {
    std::error_code ec;
    if (path == "-") continue;
    if (!fs::is_directory(path, ec)) {
      const uintmax_t size = fs::file_size(path, ec);
      if (!ec) total += static_cast<int64_t>(size);
      continue;
    }
    for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code size_ec;
      if (!it->is_regular_file(size_ec)) continue;
      const uintmax_t size = it->file_size(size_ec);
      if (!size_ec) total += static_cast<int64_t>(size);
    }
  }
  return total;
}

std::string OverBudgetMessage() {
  return absl::StrCat("the input needs more memory than the budget of ", MemoryBudget() >> 20,
                      " MiB (--memory-budget=MiB changes it)");
}

absl::Status WriteOutputFile(const std::string& path, absl::string_view text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", DisplayText(path)));
  }
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int write_error = errno;
  // fclose flushes what stdio still buffers: a full disk often shows only here.
  const bool closed = std::fclose(f) == 0;
  if (written && closed) return absl::OkStatus();
  return absl::ErrnoToStatus(written ? errno : write_error,
                             absl::StrCat("cannot write ", DisplayText(path)));
}

int FinishOutput(int exit_code) {
  errno = 0;
  std::cout.flush();
  bool out_failed = !std::cout || std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  int out_error = errno;
  if (!out_failed) {
    // Closing reports write errors that the file system deferred (NFS, quotas). A duplicate
    // is closed so that the stream stays valid for exit().
    const int fd = dup(STDOUT_FILENO);
    if (fd >= 0 && close(fd) != 0) {
      out_failed = true;
      out_error = errno;
    }
  }
  const bool err_failed = !std::cerr || std::fflush(stderr) != 0 || std::ferror(stderr) != 0;
  if (out_failed) {
    std::cerr << "netpol: cannot write standard output"
              << (out_error != 0 ? absl::StrCat(": ", std::strerror(out_error)) : "")
              << "; the output is incomplete\n";
  }
  return out_failed || err_failed ? kExitError : exit_code;
}

absl::StatusOr<ClusterEvaluator> MakeEvaluator(const Cluster& cluster,
                                               const EvaluationOptions& options) {
  std::string engine = absl::GetFlag(FLAGS_engine);
  if (engine == "reference") {
    return ClusterEvaluator::Create(cluster, ClusterEvaluator::Kind::kReference, options);
  }
  if (engine == "indexed" || engine == "engine") {  // "engine": its name before 'indexed'
    return ClusterEvaluator::Create(cluster, ClusterEvaluator::Kind::kEngine, options);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--engine must be 'indexed' or 'reference', not ", DisplayText(engine)));
}

absl::StatusOr<std::vector<uint16_t>> ParsePortList(absl::string_view text) {
  std::vector<uint16_t> ports;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int port;
    if (!absl::SimpleAtoi(part, &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad port ", DisplayText(part), ": must be a number from 1 to 65535"));
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
