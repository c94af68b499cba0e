// np/probe/agent.h — the probe agent: the small program that runs inside each pod's network
// namespace of the probe harness (np/probe/harness.h). It serves the pod's ports and, on
// request, probes other addresses with real connections, many at once, each bounded in time.
// No netcat, no socat: one process per pod, one epoll loop, no threads.
//
//   probe_agent serve [--listen tcp:80,udp:80,tcp:81] [--control]
//       Serves: TCP (accept, then close), UDP (echo each datagram back), SCTP where the
//       kernel has it (accept, then close). With --control it also reads commands on stdin
//       (below) and exits when stdin closes; without, it serves until killed.
//   probe_agent connect [--timeout-ms 1000] tcp:10.1.0.2:80 udp:[fd00:10:1::2]:81 ...
//       Probes each target concurrently; prints one result line per target; exit status 0
//       when every target answered.
//
// Control protocol (serve --control), one command per line on stdin; answers on stdout:
//   probe ID PROTO ADDRESS PORT TIMEOUT_MS [SOURCE] [once[:WATCH_MS]]
//                                           -> result ID STATUS MILLIS DETAIL   (asynchronous;
//                                              SOURCE: the local address to send from;
//                                              once: one packet only, see below)
//   listen PROTO PORT                       -> listening PROTO PORT | error listen ...: why
//   ping                                    -> pong   (answered after every earlier line)
//   quit                                    -> the agent exits
// On start the agent prints "ready" once its --listen sockets are bound (or "error ..." and
// exits 1). PROTO is tcp, udp or sctp. STATUS is:
//   ok           TCP/SCTP: the handshake completed; UDP: our datagram came back, byte for byte
//   timeout      no answer within TIMEOUT_MS (what a dropping firewall looks like)
//   refused      TCP RST or ICMP port unreachable (nothing listening, or a rejecting firewall)
//   unreachable  ICMP host/net unreachable or administratively prohibited, no route
//   error        a local failure (socket(), bad address, ...): the probe says nothing
// and, for `once:WATCH_MS` probes only (below):
//   late         the answer to the one packet came after TIMEOUT_MS, within WATCH_MS more:
//                nothing was dropped, the machine (or this process) was slow
//   resent       TCP: the handshake completed only through a re-sent SYN or SYN-ACK
//                (tcpi_total_retrans > 0, or a handshake RTT of the 1 s initial RTO): a
//                packet was dropped, however fast the machine was
// A UDP request is sent three times within its timeout (at 0, 1/3 and 2/3) so that one lost
// datagram does not read as "denied". With `once` it is sent one time, and a TCP probe's
// timeout must be under the kernel's initial SYN retransmission timeout (1 s): then a
// probe that fails had its one packet dropped (or answered later than its timeout) —
// nothing re-sent it past a momentary drop. The update test uses this. With `once:WATCH_MS`
// an unanswered probe keeps its socket WATCH_MS past its timeout, so that an answer that
// comes late (UDP: the echo of the one datagram; TCP: a handshake the kernel completed with
// no re-send) reads `late`, not `timeout`: a stalled agent at either end is not a drop. Probes run concurrently (at most 1024 in flight; more
// wait in a queue, and their time starts when they are sent).
//
// Thread safety: AgentMain owns the process; call it from main() only.
#ifndef NP_PROBE_AGENT_H_
#define NP_PROBE_AGENT_H_

namespace np::probe {

// The agent's main(): argv[0] is ignored, argv[1] is "serve" or "connect".
int AgentMain(int argc, char** argv);

}  // namespace np::probe

#endif  // NP_PROBE_AGENT_H_
