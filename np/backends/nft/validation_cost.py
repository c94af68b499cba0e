#!/usr/bin/env python3
"""What an nf_tables element commit costs, by map kind, and which commits the kernel
validates (nft.h "Why pod events still validate"; netlink.h MarksTableForValidation).

Run as root: `python3 np/backends/nft/validation_cost.py [--tables 200] [--identities 400]
[--addresses 10000] [--rounds 100]`. It makes a scratch network namespace (np-valcost-<pid>),
and in it one table per map kind, each with the same np-shaped chains (T table chains of 12
rules reached through a dispatch vmap of min(P, 1000) jump elements, I identity chains) and
one map of P addresses looked up by the forward chain:
  ivj  interval map, address -> jump id_<n>   (np's identity4 today)
  sid  ivj's map and identity chains alone in a table of their own (no dispatch, no table
       chains), looked up by two base chains as np's forward chain looks identity4 up twice
  hvj  hash map,     address -> jump id_<n>
  ivd  interval map, address -> mark value    (a data map: no verdict)
  hvd  hash map,     address -> mark value
Then, per round and kind, one commit adding an address and one deleting it, sent as raw
nf_tables netlink batches (no libnftables: its cache fetch would dwarf the commit), timed
from send to the last ack. A commit that adds a jump element makes the kernel walk the whole
table (nft_table_validate); the others do not (`perf record -g` on this script shows
nft_table_validate under the jump adds only).
Last it checks the two-stage forms nft's text cannot write (a map lookup into a register
feeding a vmap lookup; a register OR into the mark): whether the kernel takes them, and
whether `nft list` can print the table afterwards. The namespace is deleted at the end.

With `--listing FILE` (what `nft list table inet np` prints on a node, or in a benchmark's
namespace) it measures np's own program instead: the table loaded as listed ("one"), and
split in two ("split": the identity maps and identity chains in a table of their own with
two base chains doing the identity lookups, the dispatch maps, table chains and peer sets in
another with two base chains doing the dispatch), and per round one commit retargeting a
single-address identity element to another identity chain and one back — an other-node
pod event's commit — in each; and per round one commit adding that address to egress4 as a
jump to a table chain and one deleting it — a node-0 pod's dispatch entry, its table there —
in the one table and in the split's policy table (which the dispatch maps and table chains
must share: a jump names a chain of its own table).
"""
import argparse, os, socket, struct, subprocess, sys, time

NETLINK_NETFILTER, SUBSYS = 12, 10
NEWRULE, NEWSETELEM, DELSETELEM = 6, 12, 14
BATCH_BEGIN, BATCH_END = 0x10, 0x11
F_REQUEST, F_ACK, F_CREATE, F_APPEND = 1, 4, 0x400, 0x800
NFPROTO_INET, NFT_JUMP = 1, 0xFFFFFFFD


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def nest(kind, *parts):
    return attr(kind | 0x8000, b"".join(parts))


def string(kind, value):
    return attr(kind, value.encode() + b"\0")


def be32(kind, value):
    return attr(kind, struct.pack(">I", value))


def expr(name, *attrs):
    return nest(1, string(1, name), nest(2, *attrs))  # NFTA_LIST_ELEM { NAME, DATA }


class Netlink:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.seq = int(time.time())

    def _message(self, kind, flags, body, family=NFPROTO_INET, res_id=0):
        self.seq += 1
        body = struct.pack("BBH", family, 0, socket.htons(res_id)) + body
        return struct.pack("IHHII", 16 + len(body), kind, flags, self.seq, 0) + body

    def commit(self, messages):
        """One transaction of (type, flags, body); seconds from send to the last ack."""
        out = self._message(BATCH_BEGIN, F_REQUEST, b"", 0, SUBSYS)
        pending = set()
        for kind, flags, body in messages:
            out += self._message((SUBSYS << 8) | kind, F_REQUEST | F_ACK | flags, body)
            pending.add(self.seq)
        out += self._message(BATCH_END, F_REQUEST, b"", 0, SUBSYS)
        start = time.perf_counter()
        self.sock.send(out)
        while pending:
            data, off = self.sock.recv(1 << 16), 0
            while off < len(data):
                n, kind, _, seq, _ = struct.unpack_from("IHHII", data, off)
                if kind == 2:  # NLMSG_ERROR: an ack (0) or a refusal
                    err = struct.unpack_from("i", data, off + 16)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    pending.discard(seq)
                off += (n + 3) & ~3
        return time.perf_counter() - start


def element(table, name, key, end=None, jump=None, data=None, add=True):
    """An add (or delete) of one address; `end`: the interval's end element (first + 1)."""
    parts = [nest(1, attr(1, key))]  # NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }
    if add and jump is not None:
        parts.append(nest(2, nest(2, be32(1, NFT_JUMP), string(2, jump))))
    elif add and data is not None:
        parts.append(nest(2, attr(1, data)))
    elements = [nest(1, *parts)]
    if end is not None:
        elements.append(nest(1, nest(1, attr(1, end)), be32(3, 1)))  # NFT_SET_ELEM_INTERVAL_END
    body = string(1, table) + string(2, name) + nest(3, *elements)
    return (NEWSETELEM, F_CREATE, body) if add else (DELSETELEM, 0, body)


def rule(table, chain, *exprs):
    return (NEWRULE, F_CREATE | F_APPEND, string(1, table) + string(2, chain) + nest(4, *exprs))


def ipv4_daddr_to(reg):
    return [expr("meta", be32(1, 1), be32(2, 15)),  # meta nfproto -> reg 1
            expr("cmp", be32(1, 1), be32(2, 0), nest(3, attr(1, bytes([2])))),
            expr("payload", be32(1, reg), be32(2, 1), be32(3, 16), be32(4, 4))]


def address(n):
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def identity_chains(out, identities):
    for i in range(identities):
        out.append(f"  chain id_{i} {{ meta mark set meta mark & 0x0000ffff | {i << 16:#x}; }}")


def ruleset(tables, identities, addresses):
    out = []
    kinds = [("ivj", "verdict", True, lambda p: f"jump id_{p % identities}", "ip daddr vmap @m"),
             ("hvj", "verdict", False, lambda p: f"jump id_{p % identities}", "ip daddr vmap @m"),
             ("ivd", "mark", True, lambda p: str(p % identities), "meta mark set ip daddr map @m"),
             ("hvd", "mark", False, lambda p: str(p % identities), "meta mark set ip daddr map @m")]
    # sid: ivj's identity map and identity chains alone in a table (the dispatch maps and
    # table chains in another): what a jump add validates when the table holds nothing else.
    out.append("table inet sid {")
    identity_chains(out, identities)
    elements = ", ".join(f"{address(0x10000 + p)} : jump id_{p % identities}" for p in range(addresses))
    out.append(f"  map m {{ type ipv4_addr : verdict; flags interval; elements = {{ {elements} }} }}")
    out.append("  chain forward { type filter hook forward priority filter - 2; policy accept; ip daddr vmap @m; }")
    out.append("  chain forward_src { type filter hook forward priority filter; policy accept; ip saddr vmap @m; }")
    out.append("}")
    for name, data, interval, value, lookup in kinds:
        out.append(f"table inet {name} {{")
        identity_chains(out, identities)
        for t in range(tables):
            rules = "; ".join(f"meta l4proto tcp th dport {80 + r} meta mark {r << 16:#x}-{(r << 16) | 0xffff:#x} return"
                              for r in range(12))
            out.append(f"  chain t{t}_egress {{ {rules}; drop; }}")
        flags = "flags interval; " if interval else ""
        elements = ", ".join(f"{address(0x10000 + p)} : {value(p)}" for p in range(addresses))
        out.append(f"  map m {{ type ipv4_addr : {data}; {flags}elements = {{ {elements} }} }}")
        elements = ", ".join(f"{address(0x10000 + p)} : jump t{p % tables}_egress"
                             for p in range(min(addresses, 1000)))
        out.append(f"  map e {{ type ipv4_addr : verdict; elements = {{ {elements} }} }}")
        out.append("  map chains { type mark : verdict; elements = { 5 : jump id_5 } }")
        out.append("  chain forward { type filter hook forward priority filter; policy accept; "
                   f"{lookup}; ip saddr vmap @e; }}")
        out.append("}")
    return "\n".join(out) + "\n"


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def inside(args):
    subprocess.run(["nft", "-f", "-"], input=ruleset(args.tables, args.identities, args.addresses),
                   text=True, check=True)
    nl = Netlink()
    key, end = socket.inet_aton("10.250.0.1"), socket.inet_aton("10.250.0.2")
    value = {"ivj": dict(jump="id_5"), "sid": dict(jump="id_5"), "hvj": dict(jump="id_5"),
             "ivd": dict(data=struct.pack("=I", 5)), "hvd": dict(data=struct.pack("=I", 5))}
    times = {k: ([], []) for k in value}
    for _ in range(args.rounds):
        for kind, v in value.items():
            e = end if kind[0] in "is" else None
            times[kind][0].append(nl.commit([element(kind, "m", key, e, **v)]) * 1e3)
            times[kind][1].append(nl.commit([element(kind, "m", key, e, add=False)]) * 1e3)
    print(f"commit ms, {args.addresses} addresses, {args.tables} table chains, "
          f"{args.identities} identity chains, {args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
    print("kind  add p50  add p90  delete p50  delete p90")
    for kind, (adds, deletes) in times.items():
        print(f"{kind}   {quantile(adds, .5):7.3f}  {quantile(adds, .9):7.3f}  "
              f"{quantile(deletes, .5):10.3f}  {quantile(deletes, .9):10.3f}")
    # The two-stage forms, in tables of their own (nft aborts listing them).
    two_stage = [  # ip daddr map @m (into reg 2) vmap @chains (keyed by reg 2)
        *ipv4_daddr_to(1),
        expr("lookup", string(1, "m"), be32(2, 1), be32(3, 2)),
        expr("lookup", string(1, "chains"), be32(2, 2), be32(3, 0))]
    register_or = [  # meta mark set meta mark & 0xffff | (ip daddr map @m)
        expr("meta", be32(1, 3), be32(2, 3)),  # meta mark -> reg 3
        expr("bitwise", be32(1, 3), be32(2, 3), be32(3, 4), be32(6, 0),
             nest(4, attr(1, struct.pack("=I", 0xFFFF))), nest(5, attr(1, struct.pack("=I", 0)))),
        *ipv4_daddr_to(1),
        expr("lookup", string(1, "m"), be32(2, 1), be32(3, 2)),
        expr("bitwise", be32(1, 3), be32(8, 2), be32(2, 3), be32(3, 4), be32(6, 4)),  # NFT_BITWISE_OR
        expr("meta", be32(2, 3), be32(3, 3))]  # meta mark set reg 3
    for what, table, exprs in (("map lookup feeding a vmap", "hvd", two_stage),
                               ("register OR into the mark", "ivd", register_or)):
        try:
            nl.commit([rule(table, "forward", *exprs)])
            taken = "the kernel takes it"
        except OSError as e:
            taken = f"the kernel refuses it ({e.strerror})"
        listing = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True, text=True)
        status = "nft lists the table" if listing.returncode == 0 else \
            f"nft list fails (exit {listing.returncode}: {listing.stderr.strip().splitlines()[-1:]})"
        print(f"{what}: {taken}; {status}")


def blocks_of(table_text):
    """The top-level `chain`/`map`/`set` blocks of one listed table, as text."""
    body = table_text[table_text.index("{") + 1: table_text.rindex("}")]
    blocks, depth, start = [], 0, 0
    for i, c in enumerate(body):
        if c == "{":
            if depth == 0:
                start = body.rfind("\n", 0, i) + 1
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                blocks.append(body[start:i + 1])
    return blocks


def shapes(listed, hook="forward"):
    """The listed program as `nft -f` texts on `hook`: "one" (as listed, in table `one`) and
    "split" (tables split_id and split_policy, four base chains), with what the commits need."""
    import re
    blocks = blocks_of(listed)
    name = lambda b: b.split()[1]
    identity = [b for b in blocks if re.match(r"(identity[46]|id_)", name(b))]
    forward = [b for b in blocks if name(b) == "forward"]
    rest = [b for b in blocks if b not in identity and b not in forward]
    map4 = next(name(b) for b in identity if name(b).startswith("identity4"))
    map6 = map4.replace("identity4", "identity6")
    disp = {d: name(next(b for b in rest if name(b).startswith(d))) for d in ("egress4", "egress6", "ingress4", "ingress6")}
    ct = "ct state established,related accept; "
    miss = "meta mark set meta mark | 0xffff0000; "
    base = "type filter hook " + hook + " priority filter {}; policy accept; "
    one = "table inet one {\n" + "\n".join(blocks).replace("hook forward", "hook " + hook) + "\n}\n"
    split = "table inet split_id {\n" + "\n".join(identity) + "\n"
    split += f"chain fwd_dst {{ {base.format('- 2')}{ct}{miss}ip daddr vmap @{map4}; ip6 daddr vmap @{map6}; }}\n"
    split += f"chain fwd_src {{ {base.format('+ 0')}{ct}{miss}ip saddr vmap @{map4}; ip6 saddr vmap @{map6}; }}\n}}\n"
    split += "table inet split_policy {\n" + "\n".join(rest) + "\n"
    split += f"chain fwd_egress {{ {base.format('- 1')}{ct}ip saddr vmap @{disp['egress4']}; ip6 saddr vmap @{disp['egress6']}; }}\n"
    split += f"chain fwd_ingress {{ {base.format('+ 1')}{ct}ip daddr vmap @{disp['ingress4']}; ip6 daddr vmap @{disp['ingress6']}; }}\n}}\n"
    return dict(one=one, split=split, blocks=blocks, identity=identity, rest=rest, map4=map4,
                disp=disp, name=name)


def listing_cost(args):
    import re
    listed = open(args.listing).read()
    x = shapes(listed)
    blocks, identity, rest, map4, disp, name = (x[k] for k in ("blocks", "identity", "rest", "map4", "disp", "name"))
    text = x["one"] + x["split"]
    subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
    elements = re.search(map4 + r" \{.*?elements = \{(.*?)\}", listed, re.S).group(1)
    single = next(e for e in (x.strip() for x in elements.split(",")) if re.match(r"^[0-9.]+ : jump ", e))
    addr, old_chain = single.split(" : jump ")
    new_chain = next(name(b) for b in identity if name(b).startswith("id_") and name(b) != old_chain)
    key = socket.inet_aton(addr)
    end = struct.pack(">I", struct.unpack(">I", key)[0] + 1)
    # A node-0 pod's dispatch entry (its table there): `addr` (a remote pod's, so free in the
    # dispatch maps) added to egress4 as a jump to an existing egress table chain, then deleted.
    table_chain = next(name(b) for b in rest if re.match(r"t\d+_egress", name(b)))
    nl = Netlink()
    times = {"one": [], "split_id": []}
    dispatch = {"one": ([], []), "split_policy": ([], [])}
    for _ in range(args.rounds):
        for table in times:
            for to in (new_chain, old_chain):
                times[table].append(nl.commit([element(table, map4, key, end, add=False),
                                               element(table, map4, key, end, jump=to)]) * 1e3)
        for table, (adds, deletes) in dispatch.items():
            adds.append(nl.commit([element(table, disp["egress4"], key, jump=table_chain)]) * 1e3)
            deletes.append(nl.commit([element(table, disp["egress4"], key, add=False)]) * 1e3)
    print(f"{args.listing}: {len(blocks)} objects; {addr} retargeted {old_chain} <-> {new_chain}, "
          f"{args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
    for table, t in times.items():
        print(f"{table:12s} identity retarget commit ms p50 {quantile(t, .5):.3f} p90 {quantile(t, .9):.3f}")
    for table, (adds, deletes) in dispatch.items():
        print(f"{table:12s} dispatch add -> {table_chain} ms p50 {quantile(adds, .5):.3f} "
              f"p90 {quantile(adds, .9):.3f}; delete p50 {quantile(deletes, .5):.3f} "
              f"p90 {quantile(deletes, .9):.3f}")


def packet_cost(args):
    """Per-packet cost of the two shapes on the output hook: UDP from a local endpoint of the
    listing (its first egress4 element) to another (the second) out of a veth pair (the peer,
    in the same namespace, drops what it receives: no forwarding), `--packets` sends per run,
    runs alternated: no table (floor), one, split. Non-blocking: a send refused is counted
    and the run's figure says how many were."""
    import re
    listed = open(args.listing).read()
    x = shapes(listed, hook="output")
    first = re.search(x["disp"]["egress4"] + r" \{.*?elements = \{ ([0-9.]+) : jump [^,]+, ([0-9.]+) :", listed, re.S)
    src, dst = first.group(1), first.group(2)
    for cmd in (["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                ["ip", "addr", "add", src + "/32", "dev", "v0"], ["ip", "link", "set", "v0", "up"],
                ["ip", "link", "set", "v1", "up"],
                ["ip", "route", "add", dst + "/32", "dev", "v0"],
                # no ARP: the peer drops frames to a foreign MAC once they are through the hook
                ["ip", "neigh", "add", dst, "lladdr", "02:00:00:00:00:01", "dev", "v0", "nud", "permanent"]):
        subprocess.run(cmd, check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))

    refused = [0]

    def run():
        start = time.perf_counter()
        for _ in range(args.packets):
            try:
                sock.sendto(b"x", socket.MSG_DONTWAIT, (dst, 53))
            except OSError:
                refused[0] += 1
        return (time.perf_counter() - start) / args.packets * 1e9

    times = {"floor": [], "one": [], "split": []}
    for _ in range(args.rounds):
        for shape in times:
            if shape != "floor":
                subprocess.run(["nft", "-f", "-"], input=x[shape], text=True, check=True)
            times[shape].append(run())
            subprocess.run(["nft", "flush", "ruleset"], check=True)
    print(f"{args.listing}: UDP {src} -> {dst}:53 on the output hook, {args.packets} sends x "
          f"{args.rounds} rounds alternated; load {os.getloadavg()[0]:.2f}")
    for shape, t in times.items():
        print(f"{shape:6s} ns per send p50 {quantile(t, .5):.0f} (runs {', '.join(f'{v:.0f}' for v in t)})")
    paired = [b - a for a, b in zip(times["one"], times["split"])]  # same round: same load
    print(f"split - one, paired by round: p50 {quantile(paired, .5):+.0f} ns per packet "
          f"(min {min(paired):+.0f}, max {max(paired):+.0f}); "
          f"sends refused (the verdict's EPERM, or a full queue): {refused[0]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--identities", type=int, default=400)
    parser.add_argument("--addresses", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--listing", help="an `nft list table inet np` output to measure")
    parser.add_argument("--packets", type=int, default=0,
                        help="with --listing: time this many sends per run through each shape")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        if args.listing and args.packets:
            return packet_cost(args)
        return listing_cost(args) if args.listing else inside(args)
    netns = f"np-valcost-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        argv = sys.argv[1:]
        if args.listing:
            argv = [a if a != args.listing else os.path.abspath(a) for a in argv]
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, os.path.abspath(__file__),
                        "--inside"] + argv, check=True)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)


if __name__ == "__main__":
    main()
