#!/usr/bin/env python3
"""The sender of the commit-window checks (set_commit_window.sh, split_commit_window.sh): UDP
to 127.0.0.1:9 as fast as one process can for SECONDS, counting sends that went through
(accepted) and sends the OUTPUT hook dropped (EPERM). Prints `mode MODE sent N accepted A
dropped D`; with --accepted-fails, exits 1 when any send went through (a flow both programs
deny must never pass).
Usage: udp_blast.py SECONDS MODE [--accepted-fails]"""
import socket, sys, time

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
accepted = dropped = 0
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        s.sendto(b"x", ("127.0.0.1", 9)); accepted += 1
    except PermissionError:
        dropped += 1
print("mode", sys.argv[2], "sent", accepted + dropped, "accepted", accepted, "dropped", dropped)
sys.exit(1 if "--accepted-fails" in sys.argv[3:] and accepted else 0)
