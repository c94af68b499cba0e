#include "np/backends/util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "np/types.h"

namespace np::backends {

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv_in,
                                       absl::string_view input, absl::string_view netns) {
  std::vector<std::string> argv;
  if (!netns.empty()) argv = {"ip", "netns", "exec", std::string(netns)};
  argv.insert(argv.end(), argv_in.begin(), argv_in.end());
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe(in_pipe) != 0 || pipe(out_pipe) != 0 || pipe(err_pipe) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) {
      close(fd);
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Feed stdin and drain stdout/stderr together, so large inputs and outputs never block.
  signal(SIGPIPE, SIG_IGN);
  fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  std::string out, err;
  size_t written = 0;
  bool in_open = true;
  if (input.empty()) {
    close(in_pipe[1]);
    in_open = false;
  }
  bool out_open = true, err_open = true;
  char buffer[65536];
  while (out_open || err_open) {
    pollfd fds[3];
    int n = 0;
    int in_idx = -1, out_idx = -1, err_idx = -1;
    if (in_open) { fds[n] = {in_pipe[1], POLLOUT, 0}; in_idx = n++; }
    if (out_open) { fds[n] = {out_pipe[0], POLLIN, 0}; out_idx = n++; }
    if (err_open) { fds[n] = {err_pipe[0], POLLIN, 0}; err_idx = n++; }
    if (poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (in_idx >= 0 && fds[in_idx].revents) {
      ssize_t w = write(in_pipe[1], input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN) written = input.size();
      if (written >= input.size()) {
        close(in_pipe[1]);
        in_open = false;
      }
    }
    auto drain = [&](int idx, int fd, std::string& sink, bool& open) {
      if (idx < 0 || fds[idx].revents == 0) return;
      ssize_t r = read(fd, buffer, sizeof(buffer));
      if (r > 0) {
        sink.append(buffer, static_cast<size_t>(r));
      } else {
        close(fd);
        open = false;
      }
    };
    drain(out_idx, out_pipe[0], out, out_open);
    drain(err_idx, err_pipe[0], err, err_open);
  }
  if (in_open) close(in_pipe[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(
        absl::StrJoin(argv, " "), " failed (",
        WIFEXITED(status) ? absl::StrCat("exit ", WEXITSTATUS(status)) : "killed", "): ",
        absl::StripAsciiWhitespace(err)));
  }
  return out;
}

std::string AddressText(absl::string_view bytes) {
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() == 4) {
    return IpAddress::V4((uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) |
                         b[3])
        .ToString();
  }
  if (bytes.size() == 16) return IpAddress::V6Bytes(b).ToString();
  return "?";
}

absl::StatusOr<std::string> AddressBytes(absl::string_view text) {
  absl::StatusOr<IpAddress> a = IpAddress::Parse(text);
  if (!a.ok()) return a.status();
  uint8_t b[16];
  a->ToBytes(b);
  return std::string(reinterpret_cast<char*>(b), a->is_v4() ? 4 : 16);
}

absl::StatusOr<FlowAddresses> ParseFlowAddresses(const FlowQuery& flow) {
  absl::StatusOr<std::string> source = AddressBytes(flow.source);
  if (!source.ok()) return source.status();
  absl::StatusOr<std::string> destination = AddressBytes(flow.destination);
  if (!destination.ok()) return destination.status();
  if (source->size() != destination->size()) {
    return absl::InvalidArgumentError("source and destination are of different families");
  }
  return FlowAddresses{*std::move(source), *std::move(destination)};
}

absl::StatusOr<uint32_t> IdentityOf(const ir::CompiledPolicy& ir, absl::string_view key) {
  const auto& ranges = key.size() == 4 ? ir.ipv4() : ir.ipv6();
  auto it = std::upper_bound(ranges.begin(), ranges.end(), key,
                             [](absl::string_view k, const ir::AddressRange& r) {
                               return k < absl::string_view(r.first());
                             });
  if (it == ranges.begin()) {
    return absl::InvalidArgumentError("the IR's address ranges do not cover this address");
  }
  --it;
  if (key > absl::string_view(it->last())) {
    return absl::InvalidArgumentError("the IR's address ranges do not cover this address");
  }
  return it->identity();
}

std::string ProtocolUpper(ir::Protocol protocol) {
  switch (protocol) {
    case ir::TCP:
      return "TCP";
    case ir::UDP:
      return "UDP";
    case ir::SCTP:
      return "SCTP";
    default:
      return "?";
  }
}

std::string ProtocolLower(ir::Protocol protocol) {
  return absl::AsciiStrToLower(ProtocolUpper(protocol));
}

}  // namespace np::backends
