/* np/backends/ebpf/bpf/np_policy.c — one generation of the NetworkPolicy datapath: two tc
 * (clsact) programs attached to the host-side veth of each endpoint, np_from_ep on tc ingress
 * (what the pod sends) and np_to_ep on tc egress (what it receives), with maps filled from
 * one CompiledPolicy (proto/compiled.proto). The map layouts are in np_abi.h. A new
 * generation is a new load of this object; the loader replaces each interface's filters
 * with it (np/backends/ebpf/loader.h).
 *
 * Verdict at a hook:
 *   - "self" is the endpoint of the interface (np_endpoints_if[skb->ifindex]); an interface
 *     without an entry drops everything; one marked NP_ENDPOINT_OUTSIDE (its pod is not an
 *     endpoint of this generation) passes everything, recorded in np_ct like an allowed flow.
 *   - the packet passes when it belongs to a flow this interface already allowed (np_ct),
 *     or when the policy allows it: self's side (egress when self sends, ingress when it
 *     receives) AND, when the other address is also a pod of this node, that pod's side.
 *     Deciding both local sides at each hook keeps every hook's verdict a function of a
 *     single generation: a flow that two generations deny cannot slip through while the
 *     loader switches between them.
 *   - a side allows when its endpoint is not selected, or its table restricts nothing in
 *     that direction (np_tables: not isolated, no tier lists), or the policy tiers allow
 *     it in order (proto/compiled.proto, "Policy tiers"): the admin list of np_tiers (the
 *     first rule matching protocol, port and peer identity decides; Pass goes on), then,
 *     when isolated, np_ports/np_members (allowed iff a rule matches; nothing after), then
 *     the baseline list, then allowed.
 *
 * Protocols: TCP, UDP and SCTP are decided by port. Every other IP protocol (ICMP, ICMPv6
 * echo, ESP, ...) is decided by the tier rules for every protocol (PROTOCOL_UNSPECIFIED),
 * and is denied by NetworkPolicy isolation — NetworkPolicy cannot name them, and an isolated
 * pod is closed to what no rule allows. Exceptions that keep
 * networking alive: ARP and IPv6 neighbour discovery (ICMPv6 133-137) always pass; ICMP and
 * ICMPv6 errors pass when they refer to a flow in np_ct (so PMTU discovery and port
 * unreachable work for allowed flows); echo replies pass as replies (np_ct keyed by echo
 * id). Other ethertypes (e.g. VLAN tags) pass only when self's direction of the hook is not
 * restricted at all.
 *
 * IPv6 extension headers: hop-by-hop, routing, destination options, fragment and AH are
 * skipped (at most NP_MAX_EXT_HEADERS); ESP and unknown headers end the chain and the packet
 * is decided as "other protocol". Fragments: the first fragment is decided with its ports
 * and, when it passes, recorded in np_frag; later fragments pass if their datagram was
 * recorded, else they are decided without ports (TCP, UDP and SCTP ones pass only where no
 * side is restricted; other protocols by the every-protocol tier rules, as always).
 * Malformed or truncated headers are decided the same way: never allowed by a port rule.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "np_abi.h"

/* Sizes are set by the loader from the IR before the object is loaded; 1 is a placeholder. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct np_config);
} np_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct np_endpoint_addr_key);
	__type(value, struct np_identity_value);
} np_ident_hosts SEC(".maps");

/* The IPv6 host keys. Apart from np_ident_hosts (IPv4) so that an in-place edit, which
 * changes the identity of at most one address per family, replaces at most one element of
 * each hash map: the kernel reuses a replaced element for that map's next allocation at
 * once, and a reader that found it just before must not read another key's value there
 * (loader.cc EditIdentities). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct np_endpoint_addr_key);
	__type(value, struct np_identity_value);
} np_ident_hosts6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct np_lpm4_key);
	__type(value, struct np_identity_value);
} np_ident4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct np_lpm6_key);
	__type(value, struct np_identity_value);
} np_ident6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct np_endpoint);
} np_endpoints_if SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct np_endpoint_addr_key);
	__type(value, struct np_endpoint);
} np_endpoints_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct np_endpoint_states);
} np_endpoint_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} np_table_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct np_table);
} np_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct np_port_key);
	__type(value, struct np_port_value);
} np_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct np_tier_key);
	__type(value, struct np_tier_ref);
} np_tiers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct np_tier_value);
} np_tier_lists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct np_member_key);
	__type(value, __u8);
} np_members SEC(".maps");

/* Runs in progress by the generation they read (np_abi.h np_runs): the loader's wait
 * between two in-place edits. One per generation of maps, like np_config. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct np_runs);
} np_runs SEC(".maps");

/* Shared by all generations: the loader hands the live maps to each new generation.
 * Sizing rule: the kernel's LRU is approximate (per-CPU free and pending lists, a second
 * chance for referenced entries), and a full np_ct keeps the entry of a request whose answer
 * has not come yet only while fewer than about max_entries / 3 newer requests are
 * unanswered, all CPUs together (measured with a thread per CPU, bpf_test
 * ConntrackEvictionMeasurement, bench/RESULTS.md: 65,536 entries kept 20,000 and lost ~half
 * of 40,000; 131,072 keep 40,000). 131,072 entries (~14 MiB, preallocated) put that margin
 * at ~40,000 requests in flight. BPF_F_NO_COMMON_LRU (an LRU list of max_entries / CPUs
 * per CPU) kept a little more with the load spread evenly over the CPUs (28,000 a CPU of
 * 65,536-entry lists; the same losses as this one at 65,536 entries), but a CPU's flows
 * could only use its share: a node whose traffic lands on few of many CPUs would keep far
 * fewer. Not used. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct np_ct_key);
	__type(value, struct np_ct_value);
} np_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct np_frag_key);
	__type(value, __u64);
} np_frag SEC(".maps");

/* The verdicts, the same on both attachments (np/backends/ebpf/loader.h). "Allowed" is no
 * objection: the next program decides. Under tcx (Linux 6.6+) -1 is TCX_NEXT: the hook's
 * later tcx programs (a CNI's) and then its legacy tc filters still run; TCX_PASS (0,
 * TC_ACT_OK) would end the chain and skip them. As a tc filter (direct action) -1 is
 * TC_ACT_UNSPEC: the next filter, or the stack. A drop (2: TCX_DROP, TC_ACT_SHOT) is final
 * on both. */
#define NP_PASS TC_ACT_UNSPEC
#define NP_DROP TC_ACT_SHOT

#define NP_MAX_EXT_HEADERS 8
#define NP_IPPROTO_ICMPV6 58

#define NP_L4_PORTS 1   /* TCP, UDP or SCTP with both ports read */
#define NP_L4_NOPORTS 2 /* anything else, or ports unknown (later fragment, truncated) */

#define NP_FRAG_NONE 0
#define NP_FRAG_FIRST 1
#define NP_FRAG_LATER 2

#define NP_ICMP_NONE 0
#define NP_ICMP_ECHO 1  /* request or reply: ports are the echo identifier */
#define NP_ICMP_ERROR 2 /* carries the header of the packet it is about */
#define NP_ICMP_ND 3    /* IPv6 router/neighbour solicitation/advertisement, redirect */

#define NP_TCP_SYN 0x02
#define NP_TCP_ACK 0x10

struct np_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 pad[3];
};

struct np_pkt {
	struct np_tuple t;
	struct np_tuple inner; /* ICMP errors: the packet the error is about */
	__u32 frag_id;
	__u8 family;
	__u8 l4;
	__u8 frag;
	__u8 icmp;
	__u8 tcp_flags;
	__u8 inner_ok;
	__u8 pad[2];
};

#define NP_PARSE_IP 0
#define NP_PARSE_ARP 1
#define NP_PARSE_NON_IP 2

static __always_inline int is_port_protocol(__u8 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_SCTP;
}

/* Reads the ports of a TCP/UDP/SCTP header at off into t (and the TCP flags). */
static __always_inline int load_ports(struct __sk_buff *skb, __u32 off, struct np_tuple *t,
				      __u8 *tcp_flags)
{
	__be16 ports[2];
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return -1;
	t->sport = ports[0];
	t->dport = ports[1];
	if (tcp_flags && t->protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, off + 13, tcp_flags, 1) < 0)
			return -1;
	}
	return 0;
}

static __always_inline int icmp_is_echo(__u8 family, __u8 type)
{
	if (family == NP_FAMILY_V4)
		return type == 8 || type == 0;
	return type == 128 || type == 129;
}

static __always_inline int icmp_is_error(__u8 family, __u8 type)
{
	if (family == NP_FAMILY_V4)
		return type == 3 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/* The header embedded in an ICMP error at off: addresses, protocol and ports. Only
 * TCP/UDP/SCTP and echo are recognised (an IPv6 inner header must be followed directly by
 * the transport header). */
static __always_inline void parse_inner(struct __sk_buff *skb, __u32 off, struct np_pkt *p)
{
	__u8 first;
	if (bpf_skb_load_bytes(skb, off, &first, 1) < 0)
		return;
	__u32 l4off;
	if (p->family == NP_FAMILY_V4) {
		if ((first >> 4) != 4 || (first & 0xf) < 5)
			return;
		__u8 hdr[20];
		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
			return;
		p->inner.protocol = hdr[9];
		__builtin_memcpy(p->inner.saddr, &hdr[12], 4);
		__builtin_memcpy(p->inner.daddr, &hdr[16], 4);
		l4off = off + (first & 0xf) * 4;
	} else {
		if ((first >> 4) != 6)
			return;
		__u8 hdr[40];
		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
			return;
		p->inner.protocol = hdr[6];
		__builtin_memcpy(p->inner.saddr, &hdr[8], 16);
		__builtin_memcpy(p->inner.daddr, &hdr[24], 16);
		l4off = off + 40;
	}
	if (is_port_protocol(p->inner.protocol)) {
		if (load_ports(skb, l4off, &p->inner, 0) < 0)
			return;
		p->inner_ok = 1;
		return;
	}
	if (p->inner.protocol == (p->family == NP_FAMILY_V4 ? IPPROTO_ICMP : NP_IPPROTO_ICMPV6)) {
		__u8 icmp[6];
		if (bpf_skb_load_bytes(skb, l4off, icmp, sizeof(icmp)) < 0)
			return;
		if (!icmp_is_echo(p->family, icmp[0]))
			return;
		__builtin_memcpy(&p->inner.sport, &icmp[4], 2);
		p->inner.dport = p->inner.sport;
		p->inner_ok = 1;
	}
}

/* The transport header at off; p->t.protocol is set. */
static __always_inline void parse_l4(struct __sk_buff *skb, __u32 off, struct np_pkt *p)
{
	__u8 protocol = p->t.protocol;
	if (is_port_protocol(protocol)) {
		if (load_ports(skb, off, &p->t, &p->tcp_flags) == 0)
			p->l4 = NP_L4_PORTS;
		return;
	}
	if (protocol != (p->family == NP_FAMILY_V4 ? IPPROTO_ICMP : NP_IPPROTO_ICMPV6))
		return;
	__u8 icmp[6];
	if (bpf_skb_load_bytes(skb, off, icmp, sizeof(icmp)) < 0)
		return;
	__u8 type = icmp[0];
	if (p->family == NP_FAMILY_V6 && type >= 133 && type <= 137) {
		p->icmp = NP_ICMP_ND;
	} else if (icmp_is_echo(p->family, type)) {
		p->icmp = NP_ICMP_ECHO;
		__builtin_memcpy(&p->t.sport, &icmp[4], 2);
		p->t.dport = p->t.sport;
	} else if (icmp_is_error(p->family, type)) {
		p->icmp = NP_ICMP_ERROR;
		parse_inner(skb, off + 8, p);
	}
}

static __always_inline int parse(struct __sk_buff *skb, struct np_pkt *p)
{
	__be16 ethertype;
	if (bpf_skb_load_bytes(skb, 12, &ethertype, sizeof(ethertype)) < 0)
		return NP_PARSE_NON_IP;
	if (ethertype == bpf_htons(ETH_P_ARP))
		return NP_PARSE_ARP;
	p->l4 = NP_L4_NOPORTS;
	if (ethertype == bpf_htons(ETH_P_IP)) {
		p->family = NP_FAMILY_V4;
		__u8 hdr[20];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, hdr, sizeof(hdr)) < 0)
			return NP_PARSE_IP; /* truncated: addresses unknown, decided as such */
		__builtin_memcpy(p->t.saddr, &hdr[12], 4);
		__builtin_memcpy(p->t.daddr, &hdr[16], 4);
		p->t.protocol = hdr[9];
		if ((hdr[0] >> 4) != 4 || (hdr[0] & 0xf) < 5)
			return NP_PARSE_IP;
		__u16 frag = ((__u16)hdr[6] << 8) | hdr[7];
		if (frag & 0x1fff)
			p->frag = NP_FRAG_LATER;
		else if (frag & 0x2000)
			p->frag = NP_FRAG_FIRST;
		p->frag_id = ((__u32)hdr[4] << 8) | hdr[5];
		if (p->frag != NP_FRAG_LATER)
			parse_l4(skb, ETH_HLEN + (hdr[0] & 0xf) * 4, p);
		return NP_PARSE_IP;
	}
	if (ethertype == bpf_htons(ETH_P_IPV6)) {
		p->family = NP_FAMILY_V6;
		__u8 hdr[40];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, hdr, sizeof(hdr)) < 0)
			return NP_PARSE_IP;
		__builtin_memcpy(p->t.saddr, &hdr[8], 16);
		__builtin_memcpy(p->t.daddr, &hdr[24], 16);
		if ((hdr[0] >> 4) != 6)
			return NP_PARSE_IP;
		__u8 next = hdr[6];
		__u32 off = ETH_HLEN + 40;
		int i;
		for (i = 0; i < NP_MAX_EXT_HEADERS; i++) {
			__u8 ext[8];
			if (next == 0 || next == 43 || next == 60) { /* hop-by-hop, routing, dstopts */
				if (bpf_skb_load_bytes(skb, off, ext, 2) < 0)
					break;
				next = ext[0];
				off += ((__u32)ext[1] + 1) * 8;
			} else if (next == 51) { /* AH */
				if (bpf_skb_load_bytes(skb, off, ext, 2) < 0)
					break;
				next = ext[0];
				off += ((__u32)ext[1] + 2) * 4;
			} else if (next == 44) { /* fragment */
				if (bpf_skb_load_bytes(skb, off, ext, 8) < 0)
					break;
				next = ext[0];
				off += 8;
				__u16 frag = ((__u16)ext[2] << 8) | ext[3];
				if (frag & 0xfff8)
					p->frag = NP_FRAG_LATER;
				else if (frag & 1)
					p->frag = NP_FRAG_FIRST;
				p->frag_id = ((__u32)ext[4] << 24) | ((__u32)ext[5] << 16) |
					     ((__u32)ext[6] << 8) | ext[7];
				if (p->frag == NP_FRAG_LATER)
					break;
			} else {
				break;
			}
		}
		p->t.protocol = next;
		if (i < NP_MAX_EXT_HEADERS && p->frag != NP_FRAG_LATER &&
		    next != 0 && next != 43 && next != 60 && next != 51 && next != 44)
			parse_l4(skb, off, p);
		return NP_PARSE_IP;
	}
	return NP_PARSE_NON_IP;
}

/* The identity of an address: its host key (np_ident_hosts, np_ident_hosts6), else the
 * LPM trie of its family. When both miss, the host key is looked up again: an in-place edit
 * that moves an address from an LPM key to a host key (a pod added into a range) adds the
 * host key before it deletes the LPM key, so a run that missed the host key before the add
 * and the LPM key after the delete finds the host key the second time (the loader's
 * writes are seen in the order it made them: loader.cc EditIdentities says where that
 * holds). A valid program covers every address, so the second lookup costs nothing on
 * the common path. */
/* A global function (verified once, not at each call site): the address is passed as its
 * four 32-bit words as they lie in memory. */
__noinline __u32 np_identity_of(__u32 family, __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	struct np_endpoint_addr_key hk = {.family = family};
	__u32 words[4] = {a0, a1, a2, a3};
	__builtin_memcpy(hk.addr, words, 16); /* IPv4: addr[4..15] are zero in np_pkt */
	struct np_identity_value *v;
	if (family == NP_FAMILY_V4) {
		v = bpf_map_lookup_elem(&np_ident_hosts, &hk);
		if (v)
			return v->identity;
		struct np_lpm4_key k = {.prefixlen = 32};
		__builtin_memcpy(k.addr, words, 4);
		v = bpf_map_lookup_elem(&np_ident4, &k);
		if (v)
			return v->identity;
		v = bpf_map_lookup_elem(&np_ident_hosts, &hk);
	} else {
		v = bpf_map_lookup_elem(&np_ident_hosts6, &hk);
		if (v)
			return v->identity;
		struct np_lpm6_key k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, words, 16);
		v = bpf_map_lookup_elem(&np_ident6, &k);
		if (v)
			return v->identity;
		v = bpf_map_lookup_elem(&np_ident_hosts6, &hk);
	}
	return v ? v->identity : NP_IDENTITY_NONE;
}

static __always_inline __u32 identity_of(__u8 family, const __u8 *addr)
{
	__u32 w[4];
	__builtin_memcpy(w, addr, 16);
	return np_identity_of(family, w[0], w[1], w[2], w[3]);
}

/* An identity not looked up yet (side_allows looks up lazily). */
#define NP_IDENTITY_UNREAD 0xfffffffeu

/* `ep`'s state in the bank of `generation` (np_abi.h np_endpoint_states), or NULL: the
 * caller denies (an endpoint without a state is a broken map). */
static __always_inline const struct np_endpoint_state *state_of(const struct np_endpoint *ep,
								  __u32 generation)
{
	__u32 id = ep->id;
	struct np_endpoint_states *v = bpf_map_lookup_elem(&np_endpoint_states, &id);
	if (!v)
		return 0;
	return &v->bank[generation & 1];
}

/* The identity of `addr` as a run of `generation` reads it: a pod of this node's from its
 * endpoint's state (np_abi.h np_endpoint_states: the same bank as its table, so that a
 * relabel, which changes both, is met whole or not at all), any other address's from the
 * identity maps. `ep`: the address's np_endpoints_addr entry when the caller found it, else
 * NULL and it is looked up here. */
static __always_inline __u32 address_identity(__u8 family, const __u8 *addr,
					      const struct np_endpoint *ep, __u32 generation)
{
	if (!ep) {
		struct np_endpoint_addr_key ak = {.family = family};
		__builtin_memcpy(ak.addr, addr, 16);
		ep = bpf_map_lookup_elem(&np_endpoints_addr, &ak);
	}
	if (ep) {
		const struct np_endpoint_state *st = state_of(ep, generation);
		if (!st)
			return NP_IDENTITY_NONE;
		__u32 identity = st->identity[family == NP_FAMILY_V4 ? 0 : 1];
		if (identity != NP_IDENTITY_BY_ADDRESS)
			return identity;
	}
	return identity_of(family, addr);
}

/* The verdict of one tier's ordered list for (table, dir, tier) on a packet of `protocol`
 * (NP_TIER_PROTO_OTHER for every protocol but TCP/UDP/SCTP) to destination `port` (host
 * order) from/to a peer of `identity`: NP_TIER_ALLOW, NP_TIER_DENY, or 0 when no rule
 * matches or a Pass does. A global function: the verifier checks its loop once, not at
 * every call site. The fail-closed choices are listed in np_abi.h (np_tiers). */
__noinline int np_tier_verdict(__u32 table, __u32 dir, __u32 tier, __u32 protocol_port,
			       __u32 identity)
{
	struct np_tier_key k = {
		.prefixlen = NP_TIER_KEY_FULL_PREFIX,
		.table = table,
		.direction = dir,
		.tier = tier,
		.protocol = protocol_port >> 16,
		.port = bpf_htons(protocol_port & 0xffff),
	};
	struct np_tier_ref *ref = bpf_map_lookup_elem(&np_tiers, &k);
	if (!ref)
		return NP_TIER_DENY;
	__u32 list = ref->list;
	struct np_tier_value *v = bpf_map_lookup_elem(&np_tier_lists, &list);
	if (!v)
		return NP_TIER_DENY;
	__u32 count = v->count;
	if (count > NP_TIER_MAX_RULES)
		return NP_TIER_DENY;
	for (__u32 i = 0; i < NP_TIER_MAX_RULES; i++) {
		if (i >= count)
			break;
		struct np_tier_rule *r = &v->rules[i];
		if (!(r->flags & NP_PEERS_ALL)) {
			if (identity == NP_IDENTITY_NONE)
				return NP_TIER_DENY;
			struct np_member_key mk = {.peer_set = r->peer_set, .identity = identity};
			if (!bpf_map_lookup_elem(&np_members, &mk))
				continue;
		}
		if (r->action == NP_TIER_ALLOW)
			return NP_TIER_ALLOW;
		if (r->action == NP_TIER_PASS)
			return 0;
		return NP_TIER_DENY; /* NP_TIER_DENY, and any unknown action */
	}
	return 0;
}

/* np_tables' entry of the endpoint table `table` in the bank `generation` names, and its
 * physical number (np_abi.h np_table_slots), or NULL: the caller denies. */
static __always_inline struct np_table *table_of(__u32 table, __u32 generation, __u32 *physical)
{
	__u32 slot = NP_TABLE_SLOT(table, generation);
	__u32 *where = bpf_map_lookup_elem(&np_table_slots, &slot);
	if (!where)
		return 0;
	*physical = *where;
	return bpf_map_lookup_elem(&np_tables, physical);
}

/* Whether `ep`'s policy in `dir` allows the packet with the other end at `peer`:
 * proto/compiled.proto's "Policy tiers" order. */
/* `identity`: the peer's identity, NP_IDENTITY_UNREAD until side_allows needs it; shared by
 * both sides of a run when they have the same peer address, so that a run reads each
 * address's identity at most once (an in-place edit relies on it: maps.h IdentityEdit). */
/* `peer_ep`: the peer address's np_endpoints_addr entry when the caller found one (NULL:
 * address_identity looks it up). */
static __always_inline int side_allows(const struct np_endpoint *ep, __u8 dir,
				       const struct np_pkt *p, const __u8 *peer,
				       const struct np_endpoint *peer_ep, __u32 *identity_cache,
				       __u32 generation)
{
	const struct np_endpoint_state *st = state_of(ep, generation);
	if (!st)
		return 0;
	if (!(st->flags & NP_ENDPOINT_SELECTED))
		return 1;
	__u32 table;
	struct np_table *t = table_of(st->table, generation, &table);
	if (!t)
		return 0;
	__u8 isolated = t->isolated[dir & 1];
	__u8 tiers = t->tiers[dir & 1];
	if (!isolated && !tiers)
		return 1;
	int port_protocol = is_port_protocol(p->t.protocol);
	if (port_protocol && p->l4 != NP_L4_PORTS)
		return 0; /* ports unknown: no rule can be known to match or not */
	if (*identity_cache == NP_IDENTITY_UNREAD)
		*identity_cache = address_identity(p->family, peer, peer_ep, generation);
	__u32 identity = *identity_cache;
	/* Other protocols are looked up as NP_TIER_PROTO_OTHER, port 0. */
	__u32 protocol_port = port_protocol ? ((__u32)p->t.protocol << 16) | bpf_ntohs(p->t.dport)
					    : NP_TIER_PROTO_OTHER;
	if (tiers & NP_TABLE_HAS_ADMIN) {
		int v = np_tier_verdict(table, dir & 1, NP_TIER_ADMIN, protocol_port, identity);
		if (v != 0)
			return v == NP_TIER_ALLOW;
	}
	if (isolated) {
		if (!port_protocol)
			return 0;
		struct np_port_key pk = {
			.prefixlen = NP_PORT_KEY_FULL_PREFIX,
			.table = table,
			.direction = dir,
			.protocol = p->t.protocol,
			.port = p->t.dport,
		};
		struct np_port_value *pv = bpf_map_lookup_elem(&np_ports, &pk);
		if (!pv)
			return 0;
		if (pv->flags & NP_PEERS_ALL)
			return 1;
		struct np_member_key mk = {.peer_set = pv->peer_set, .identity = identity};
		return bpf_map_lookup_elem(&np_members, &mk) != 0;
	}
	if (tiers & NP_TABLE_HAS_BASELINE)
		return np_tier_verdict(table, dir & 1, NP_TIER_BASELINE, protocol_port, identity) !=
		       NP_TIER_DENY;
	return 1;
}

static __always_inline int policy_allows(__u32 hook, const struct np_pkt *p,
					 const struct np_endpoint *self, __u32 config_flags,
					 __u32 generation)
{
	const __u8 *self_peer, *other_peer;
	__u8 self_dir, other_dir;
	if (hook == NP_HOOK_FROM_ENDPOINT) {
		self_dir = NP_DIR_EGRESS;
		other_dir = NP_DIR_INGRESS;
		self_peer = p->t.daddr;
		other_peer = p->t.saddr;
	} else {
		self_dir = NP_DIR_INGRESS;
		other_dir = NP_DIR_EGRESS;
		self_peer = p->t.saddr;
		other_peer = p->t.daddr;
	}
	struct np_endpoint_addr_key ak = {.family = p->family};
	__builtin_memcpy(ak.addr, self_peer, 16);
	struct np_endpoint *other = bpf_map_lookup_elem(&np_endpoints_addr, &ak);
	if (other && other->id == self->id && (config_flags & NP_CONFIG_ALLOW_SELF))
		return 1;
	/* src == dst (a spoofed packet, or self traffic without ALLOW_SELF): one address, one
	 * identity lookup for both sides. */
	__u32 self_peer_identity = NP_IDENTITY_UNREAD, other_peer_identity = NP_IDENTITY_UNREAD;
	if (!side_allows(self, self_dir, p, self_peer, other, &self_peer_identity, generation))
		return 0;
	/* Looked up again when the first lookup missed, after self's side has read the other
	 * address's identity. An in-place edit adds a pod of this node as: its np_endpoints_addr
	 * entries, then its address's identity; and deletes one as: the identity, then the
	 * entries (loader.cc EditIdentities). Of the states such a run can see, the one that
	 * would let a flow through that both programs deny is "new identity, no endpoint entry"
	 * (self's side judged by the pod's identity without the pod's own side): on a pod
	 * added, the second lookup, made after the identity was read, finds the entry written
	 * before it; on a pod deleted, a first lookup that misses was made after the delete,
	 * hence after the identity write, which the identity read after it sees. A pod's state
	 * (np_endpoint_states: its identity as this node reads it) is written before its
	 * entries and never deleted within a generation, so an entry found names a state that
	 * says the new identity. */
	if (!other)
		other = bpf_map_lookup_elem(&np_endpoints_addr, &ak);
	if (!other)
		return 1;
	__u32 a[4], b[4];
	__builtin_memcpy(a, self_peer, 16);
	__builtin_memcpy(b, other_peer, 16);
	if (((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0)
		other_peer_identity = self_peer_identity; /* read, or still to be read, once */
	return side_allows(other, other_dir, p, other_peer, 0, &other_peer_identity, generation);
}

static __always_inline void ct_key_of(struct np_ct_key *k, const struct np_tuple *t,
				      const struct np_pkt *p, __u32 ifindex, __u8 hook,
				      int reverse)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (reverse) {
		__builtin_memcpy(k->saddr, t->daddr, 16);
		__builtin_memcpy(k->daddr, t->saddr, 16);
		k->sport = t->dport;
		k->dport = t->sport;
	} else {
		__builtin_memcpy(k->saddr, t->saddr, 16);
		__builtin_memcpy(k->daddr, t->daddr, 16);
		k->sport = t->sport;
		k->dport = t->dport;
	}
	k->ifindex = ifindex;
	k->protocol = t->protocol;
	k->family = p->family;
	k->hook = hook;
}

/* Whether k is in np_ct and not expired. With `generation` other than NP_ANY_GENERATION
 * (np_abi.h: no live generation is that number), an entry written by another generation
 * does not count. Only equality is asked, so a generation number from before the u32 wrap
 * is just another generation's; one reused after the wrap is 2^32 - 2 edits old, its
 * entries expired long before (NP_CT_TIMEOUT_OTHER_NS). */
static __always_inline int ct_fresh(const struct np_ct_key *k, __u64 now, __u32 generation)
{
	struct np_ct_value *v = bpf_map_lookup_elem(&np_ct, k);
	if (!v)
		return 0;
	if (generation != NP_ANY_GENERATION && v->generation != generation)
		return 0;
	__u64 timeout = k->protocol == IPPROTO_TCP ? NP_CT_TIMEOUT_TCP_NS : NP_CT_TIMEOUT_OTHER_NS;
	__s64 age = (__s64)(now - v->last_seen_ns);
	if (age > (__s64)timeout)
		return 0;
	if (age > 1000000000)
		v->last_seen_ns = now;
	return 1;
}

static __always_inline __u8 other_hook(__u32 hook)
{
	return hook == NP_HOOK_FROM_ENDPOINT ? NP_HOOK_TO_ENDPOINT : NP_HOOK_FROM_ENDPOINT;
}

static __always_inline void frag_key_of(struct np_frag_key *k, const struct np_pkt *p,
					__u32 ifindex, __u8 hook)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, p->t.saddr, 16);
	__builtin_memcpy(k->daddr, p->t.daddr, 16);
	k->id = p->frag_id;
	k->ifindex = ifindex;
	k->protocol = p->t.protocol;
	k->family = p->family;
	k->hook = hook;
}

/* `generation`: np_config's, as np_run read it and counted the run under it. */
static __noinline int np_decide(struct __sk_buff *skb, __u32 hook, __u32 generation)
{
	if (hook != NP_HOOK_FROM_ENDPOINT && hook != NP_HOOK_TO_ENDPOINT)
		return NP_DROP;
	__u32 ifindex = skb->ifindex;
	struct np_endpoint *self = bpf_map_lookup_elem(&np_endpoints_if, &ifindex);
	if (!self)
		return NP_DROP;
	__u32 zero = 0;
	struct np_config *cfg = bpf_map_lookup_elem(&np_config, &zero);
	if (!cfg)
		return NP_DROP;
	const __u32 flags = *(volatile __u32 *)&cfg->flags;

	int outside = (self->flags & NP_ENDPOINT_OUTSIDE) != 0;
	struct np_pkt p = {};
	int kind = parse(skb, &p);
	if (kind == NP_PARSE_ARP)
		return NP_PASS;
	if (kind == NP_PARSE_NON_IP) {
		if (outside)
			return NP_PASS;
		const struct np_endpoint_state *st = state_of(self, generation);
		if (!st)
			return NP_DROP;
		if (!(st->flags & NP_ENDPOINT_SELECTED))
			return NP_PASS;
		__u32 table;
		struct np_table *t = table_of(st->table, generation, &table);
		__u8 dir = hook == NP_HOOK_FROM_ENDPOINT ? NP_DIR_EGRESS : NP_DIR_INGRESS;
		return t && !t->isolated[dir] && !t->tiers[dir] ? NP_PASS : NP_DROP;
	}
	if (p.icmp == NP_ICMP_ND)
		return NP_PASS;

	struct np_frag_key fk;
	__u64 now = bpf_ktime_get_ns();
	const int later_fragment = p.frag == NP_FRAG_LATER;
	if (later_fragment) {
		frag_key_of(&fk, &p, ifindex, hook);
		__u64 *seen = bpf_map_lookup_elem(&np_frag, &fk);
		if (seen && (__s64)(now - *seen) <= (__s64)NP_FRAG_TIMEOUT_NS)
			return NP_PASS;
		/* else decided by policy alone, below (one call site of policy_allows: two
		 * inlined copies take more stack than a program has) */
	}

	struct np_ct_key ck;
	int syn_only = p.t.protocol == IPPROTO_TCP && p.l4 == NP_L4_PORTS &&
		       (p.tcp_flags & (NP_TCP_SYN | NP_TCP_ACK)) == NP_TCP_SYN;
	int allowed = 0;
	if (!later_fragment && !syn_only && p.icmp != NP_ICMP_ERROR) {
		/* A connection (TCP) keeps flowing across generations; a connectionless flow is
		 * authorised again by its first packet under a new generation. */
		ct_key_of(&ck, &p.t, &p, ifindex, hook, 0);
		allowed = ct_fresh(&ck, now, p.t.protocol == IPPROTO_TCP ? NP_ANY_GENERATION
									 : generation);
		if (!allowed) {
			ct_key_of(&ck, &p.t, &p, ifindex, other_hook(hook), 1);
			allowed = ct_fresh(&ck, now, NP_ANY_GENERATION);
		}
	}
	if (!later_fragment && !allowed && p.icmp == NP_ICMP_ERROR && p.inner_ok) {
		ct_key_of(&ck, &p.inner, &p, ifindex, other_hook(hook), 0);
		allowed = ct_fresh(&ck, now, NP_ANY_GENERATION);
		if (!allowed) {
			ct_key_of(&ck, &p.inner, &p, ifindex, hook, 1);
			allowed = ct_fresh(&ck, now, NP_ANY_GENERATION);
		}
	}
	if (!allowed) {
		if (!outside && !policy_allows(hook, &p, self, flags, generation))
			return NP_DROP;
		if (later_fragment)
			return NP_PASS; /* no ports: nothing for np_ct or np_frag */
		allowed = 1;
		if (p.icmp != NP_ICMP_ERROR) {
			ct_key_of(&ck, &p.t, &p, ifindex, hook, 0);
			struct np_ct_value *old = bpf_map_lookup_elem(&np_ct, &ck);
			if (old) { /* a retransmitted SYN, or a flow of an older generation */
				old->last_seen_ns = now;
				old->generation = generation;
			} else {
				struct np_ct_value v = {.last_seen_ns = now,
							.generation = generation};
				bpf_map_update_elem(&np_ct, &ck, &v, BPF_ANY);
				/* Referenced from birth: the kernel gives a new LRU entry no
				 * reference bit, and a full np_ct evicts such entries before
				 * those looked up once — the entry of a request whose answer
				 * has not come yet before entries of long-answered flows. */
				bpf_map_lookup_elem(&np_ct, &ck);
			}
		}
	}
	if (p.frag == NP_FRAG_FIRST) {
		frag_key_of(&fk, &p, ifindex, hook);
		bpf_map_update_elem(&np_frag, &fk, &now, BPF_ANY);
		/* Referenced from birth, as np_ct's new entries (above): a full np_frag must not
		 * evict a datagram whose later fragments are still on their way before entries
		 * that were looked up once. */
		bpf_map_lookup_elem(&np_frag, &fk);
	}
	return NP_PASS;
}

/* One run: np_config.generation read once, the run counted under it in np_runs while it
 * decides (np_abi.h np_runs), the verdict.
 *
 * The generation read is the one np_ct entries are checked against and stamped with and
 * whose bank the run reads. An in-place edit writes the identity maps, then generation + 1
 * (loader.cc EditIdentities): a run that read the old generation stamps what it allows
 * with it, and the bump has made that entry stale for connectionless flows; a run that
 * read the new one began after every write of the edit, so what it allows was decided on
 * the new identities. No grace period is needed before the bump. (volatile: one load each,
 * where written, not a reload after the lookups.)
 *
 * The count: the add is a full barrier (x86 lock add), and the loader reads np_runs after
 * its bump, so either the loader sees this run counted under the old generation (and
 * waits for it) or this run's second read sees the new generation (and counts itself
 * there). When the generation moved between the two reads (an edit's bump), the run takes
 * its 1 back and tries again from the first read: the try that counts itself under the
 * generation its second read still sees decides. Moving again on every one of
 * NP_RUN_TRIES tries (each a few instructions apart, each move a whole edit that waits for
 * this very count) is not a state a verdict can be read from: the run fails closed. */
#define NP_RUN_TRIES 4
static __always_inline int np_run(struct __sk_buff *skb, __u32 hook)
{
	__u32 zero = 0;
	struct np_config *cfg = bpf_map_lookup_elem(&np_config, &zero);
	struct np_runs *runs = bpf_map_lookup_elem(&np_runs, &zero);
	if (!cfg || !runs)
		return NP_DROP;
	for (int try = 0; try < NP_RUN_TRIES; try++) {
		const __u32 generation = *(volatile __u32 *)&cfg->generation;
		__sync_fetch_and_add(&runs->active[generation & 1], 1);
		if (*(volatile __u32 *)&cfg->generation == generation) {
			const int verdict = np_decide(skb, hook, generation);
			__sync_fetch_and_add(&runs->active[generation & 1], -1);
			return verdict;
		}
		__sync_fetch_and_add(&runs->active[generation & 1], -1);
	}
	return NP_DROP;
}

/* tc ingress of the host veth: what the pod sends (its egress policy). */
SEC("tc")
int np_from_ep(struct __sk_buff *skb)
{
	return np_run(skb, NP_HOOK_FROM_ENDPOINT);
}

/* tc egress of the host veth: what is delivered to the pod (its ingress policy). */
SEC("tc")
int np_to_ep(struct __sk_buff *skb)
{
	return np_run(skb, NP_HOOK_TO_ENDPOINT);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
