/* np/backends/ebpf/bpf/np_abi.h — the layout of every map the eBPF backend shares between
 * the tc programs (np_policy.c) and the C++ loader (np/backends/ebpf/maps.h).
 *
 * Both sides include this file: it uses only fixed-width <linux/types.h> fields, every struct
 * is padded explicitly (the kernel compares hash and LPM keys byte by byte, so padding must
 * be zero and must be visible), and each size is asserted below.
 *
 * How a packet is decided (one generation of maps, read once per packet):
 *   np_endpoints_if[ifindex]            the endpoint whose host-side veth the program runs on
 *   np_endpoints_addr[family, address]  the other end, when it is also a pod of this node
 *   np_endpoint_states[endpoint id]     each of those endpoints' table, selection and its
 *                                       addresses' identity, in the bank
 *                                       np_config.generation & 1 names
 *   np_ident_hosts, np_ident_hosts6     single address (/32, /128: pod IPs) -> identity (an
 *                                       address that is no endpoint's of this node), else
 *     (hash; IPv4, IPv6)
 *   np_ident4 / np_ident6 (LPM)         address -> identity (every address has exactly one)
 *   np_table_slots[NP_TABLE_SLOT]       the endpoint's table -> where its entries are now
 *                                       (the bank np_config.generation & 1 names)
 *   np_tables[table]                    per direction: NetworkPolicy isolation, tier lists
 *   np_tiers (LPM)                      (table, direction, tier, protocol, destination port)
 *                                       -> list id of the Admin or Baseline tier rules
 *                                       matching that port piece
 *   np_tier_lists[list]                 that ordered (action, peer set) list
 *   np_ports (LPM)                      (table, direction, protocol, destination port) ->
 *                                       peer set; port ranges are stored as port prefixes
 *   np_members (hash)                   (peer set, identity) present = in the set
 * A side (a direction of a selected endpoint) is decided as proto/compiled.proto's "Policy
 * tiers" says: the admin list (first match decides; Pass goes on), NetworkPolicy when
 * isolated (np_ports), the baseline list, then allowed.
 * Replies and established flows pass through np_ct (LRU, shared by all generations).
 */
#ifndef NP_BACKENDS_EBPF_BPF_NP_ABI_H_
#define NP_BACKENDS_EBPF_BPF_NP_ABI_H_

#include <linux/types.h>

/* Where a program runs: np_from_ep and np_to_ep of np_policy.c. */
#define NP_HOOK_FROM_ENDPOINT 1 /* tc ingress of the host veth: packets the pod sends */
#define NP_HOOK_TO_ENDPOINT 2   /* tc egress of the host veth: packets delivered to the pod */

/* Policy directions, as indices of np_table.isolated and values of np_port_key.direction. */
#define NP_DIR_INGRESS 0
#define NP_DIR_EGRESS 1

#define NP_FAMILY_V4 4
#define NP_FAMILY_V6 6

/* An address that no np_ident* entry covers (a malformed IR): matches no peer set. */
#define NP_IDENTITY_NONE 0xffffffffu

/* np_config: one entry (key 0) per generation. */
#define NP_CONFIG_ALLOW_SELF 0x1 /* traffic from an endpoint to itself always passes */
struct np_config {
	__u32 generation; /* moves on with every Apply and every in-place edit (maps.h
			   * NextGeneration: +1, past NP_ANY_GENERATION, always to the other
			   * parity); read once per run, it stamps np_ct entries
			   * (np_policy.c np_decide), and its low bit picks the bank of
			   * np_table_slots and np_endpoint_states the run reads */
	__u32 flags;      /* NP_CONFIG_* */
};
/* Not a generation: what np_policy.c ct_fresh is asked for when an np_ct entry of ANY
 * generation counts (TCP, replies). A live generation never takes this number (maps.h
 * NextGeneration skips it), else a connectionless flow recorded under any earlier
 * generation would pass without being decided again while it is live. */
#define NP_ANY_GENERATION 0xffffffffu

/* np_runs: one entry (key 0), per CPU. active[g & 1] counts the runs on that CPU that read
 * generation g (with g's parity) and have not finished: a run adds 1 (an atomic add, a full
 * barrier on x86) after reading np_config.generation, reads the generation again and, when
 * it moved, takes its 1 back and starts over (a bounded number of tries, then it drops the
 * packet: np_policy.c np_run); it takes the 1 back as its last act. Once the loader has bumped np_config.generation past g, a sum of
 * active[g & 1] of 0 over every CPU means no run that read g or earlier is left (loader.cc
 * WaitForRuns): what a grace period guarantees, in one map read instead of a synchronize_rcu
 * (10-20 ms on the reference VM). */
struct np_runs {
	__u64 active[2];
};

/* The IR's AddressRanges of one family are disjoint and cover the space. Those of one
 * address (pod IPs, mostly) go to np_ident_hosts (IPv4) and np_ident_hosts6 (IPv6),
 * BPF_MAP_TYPE_HASH keyed by np_endpoint_addr_key, looked up first; np_ident4 / np_ident6,
 * BPF_MAP_TYPE_LPM_TRIE (prefixlen counts bits of addr), looked up when the hash misses,
 * tile the space with the CIDRs of segments: runs of ranges whose multi-address ranges
 * have one identity, the single-address ones between them included (maps.cc
 * AppendSegments), so that a pod that comes or goes writes its host key, not the prefixes
 * of the range around it. */
struct np_lpm4_key {
	__u32 prefixlen;
	__u8 addr[4]; /* network order */
};
struct np_lpm6_key {
	__u32 prefixlen;
	__u8 addr[16]; /* network order */
};
struct np_identity_value {
	__u32 identity; /* index into CompiledPolicy.identities */
};

/* np_endpoints_if (key: __u32 ifindex) and np_endpoints_addr (key below) -> np_endpoint.
 * An interface the program is attached to but that has no entry drops everything
 * (fail closed); an address with no entry is not a pod of this node. */
#define NP_ENDPOINT_SELECTED 0x1 /* some policy selects it: np_tables[table] applies */
/* np_endpoints_if only: the interface's pod is not an endpoint of this generation (deleted
 * from the API before its veth went, not yet known): what crosses it passes there and is
 * recorded in np_ct, and is judged by address at the other end, as the IR calls its
 * addresses outside the cluster. Recording keeps its connections' replies flowing when a
 * later generation makes it an endpoint. */
#define NP_ENDPOINT_OUTSIDE 0x2
struct np_endpoint {
	__u32 id;    /* the endpoint's id in this generation: its np_endpoint_states index, and
		      * what tells self traffic (NP_CONFIG_ALLOW_SELF). The index into
		      * CompiledPolicy.endpoints when the generation is loaded; an endpoint added
		      * in place gets an id no live endpoint has and no run still holds (a deleted
		      * endpoint's, from the edit after the one that deleted it: ebpf_backend.cc
		      * free_endpoint_ids_), and ids are never renumbered, so the entries of the
		      * endpoints left keep theirs */
	__u32 table; /* the C++ side's copy of np_endpoint_states' table (maps.h); zero in the
		      * kernel, where the program never reads it */
	__u8 flags;  /* NP_ENDPOINT_*; in the kernel only NP_ENDPOINT_OUTSIDE (SELECTED lives
		      * in np_endpoint_states, as table does) */
	__u8 pad[3];
};

/* np_endpoint_states: BPF_MAP_TYPE_ARRAY indexed by np_endpoint.id: what an endpoint's
 * policy is, twice, one bank per parity of np_config.generation (a run reads the bank of
 * the generation it read once). Why banks: a pod of this node relabelled changes its table
 * and its addresses' identity together, and a run reads both (its side, and the identity
 * the other end's side judges it by). Two entries that no single write changes together
 * could be met one old and one new, a mix that can admit a flow both programs deny; and a
 * hash entry replaced in place is a new element, the old one reused at once for the next
 * write. So the loader writes the bank the NEXT generation number names (no run reads it),
 * bumps np_config.generation (the one write that moves every run from the old states to
 * the new ones, as np_table_slots' banks do for the policy maps), and once no run of the
 * old number is left (a grace period) writes the other bank too, so that both banks are
 * equal before the next bump. An array write copies the value in place: the bank runs read
 * gets its own bytes again, which no reader can tell from the old ones.
 * The identity of an address of a pod of this node is read here, never in np_ident*: the
 * program looks the address up in np_endpoints_addr and takes identity[family] of that
 * endpoint's bank. NP_IDENTITY_BY_ADDRESS (an endpoint whose addresses of a family have
 * different identities: shared addresses) sends the lookup on to np_ident*. */
#define NP_IDENTITY_BY_ADDRESS 0xfffffffdu
struct np_endpoint_state {
	__u32 table;       /* index into CompiledPolicy.tables (np_table_slots); meaningful
			    * when SELECTED */
	__u32 identity[2]; /* [0]: its IPv4 addresses' identity, [1]: IPv6 (NP_IDENTITY_NONE
			    * when it has none of the family) */
	__u8 flags;        /* NP_ENDPOINT_SELECTED */
	__u8 pad[3];
};
struct np_endpoint_states {
	struct np_endpoint_state bank[2]; /* [generation & 1] */
};
/* Also the key of np_ident_hosts. */
struct np_endpoint_addr_key {
	__u8 family; /* NP_FAMILY_V4 or NP_FAMILY_V6 */
	__u8 pad[3];
	__u8 addr[16]; /* network order; IPv4 uses addr[0..3], the rest is zero */
};

/* np_table_slots: BPF_MAP_TYPE_ARRAY, two entries per table of the IR (np_endpoint.table):
 * NP_TABLE_SLOT(table, generation) holds the "physical" table, the number np_tables,
 * np_ports and np_tiers key that table's entries by in the bank (generation & 1) a run
 * reads. A generation is loaded with physical == IR table in both banks. An in-place policy
 * edit (loader.h EditPolicy) writes a changed table's entries, and the members of a changed
 * peer set, under numbers no live entry uses, points the bank the next generation number
 * names at them, then bumps np_config.generation: the one write that moves every run from
 * the old data to the new (np_config is read once per run). A missing entry denies. */
#define NP_TABLE_SLOT(table, generation) ((table) * 2u + ((generation) & 1u))

/* np_tables: BPF_MAP_TYPE_ARRAY indexed by table id (physical: np_table_slots). A direction with isolated 0 and tiers 0
 * is not restricted: everything passes it. */
#define NP_TABLE_HAS_ADMIN 0x1    /* np_tiers holds the direction's NP_TIER_ADMIN list */
#define NP_TABLE_HAS_BASELINE 0x2 /* ... and its NP_TIER_BASELINE list */
struct np_table {
	__u8 isolated[2]; /* [NP_DIR_INGRESS], [NP_DIR_EGRESS]: 1 = NetworkPolicy default deny */
	__u8 tiers[2];    /* [NP_DIR_*]: NP_TABLE_HAS_* */
};

/* np_tiers: BPF_MAP_TYPE_LPM_TRIE holding the policy tiers' ordered rules. For each
 * (table, direction, tier) that has rules, the entries cover every protocol and port: the
 * TCP, UDP and SCTP port ranges are cut where some rule of the tier starts or ends, each
 * piece points at the list of the rules that match it in evaluation order (the protocol's
 * own and the every-protocol ones, PROTOCOL_UNSPECIFIED), and is stored as its fewest port
 * prefixes like np_ports; protocol NP_TIER_PROTO_OTHER with the wildcard port (prefixlen
 * NP_TIER_KEY_FIXED_PREFIX) holds the every-protocol rules, which decide every other IP
 * protocol (ICMP included). Pieces are disjoint; the program looks up with prefixlen
 * NP_TIER_KEY_FULL_PREFIX.
 * Fail closed (each a choice that a missing or unreadable entry never allows):
 *   - a direction whose np_tables flag names a list but whose lookup finds no entry, or an
 *     entry whose list id np_tier_lists lacks, denies (the entries cover everything, so a
 *     miss is a broken map, never "no rule");
 *   - a list with count > NP_TIER_MAX_RULES denies (Capacity refuses such a program anyway);
 *   - a peer whose address has no identity (NP_IDENTITY_NONE) denies as soon as the walk
 *     meets a rule whose peer set is not NP_PEERS_ALL (whether it matches is unknown);
 *   - TCP, UDP or SCTP packets whose ports are unknown (later fragments whose first fragment
 *     was not seen, truncated headers) are denied by every restricted side. */
#define NP_TIER_ADMIN 0
#define NP_TIER_BASELINE 1
#define NP_TIER_PROTO_OTHER 0 /* every protocol but TCP, UDP and SCTP */
#define NP_TIER_KEY_FIXED_PREFIX 64 /* table, direction, tier, protocol, pad */
#define NP_TIER_KEY_FULL_PREFIX 80
struct np_tier_key {
	__u32 prefixlen;
	__u32 table;    /* host order: always fully inside the prefix */
	__u8 direction; /* NP_DIR_* */
	__u8 tier;      /* NP_TIER_ADMIN or NP_TIER_BASELINE */
	__u8 protocol;  /* IANA 6, 17, 132, or NP_TIER_PROTO_OTHER */
	__u8 pad;       /* zero, inside the prefix */
	__be16 port;    /* network order, so that its high bits come first */
	__u8 pad2[2];   /* zero, past every prefix */
};
struct np_tier_ref {
	__u32 list; /* index into np_tier_lists */
};
/* np_tier_lists: BPF_MAP_TYPE_ARRAY of np_tier_value, each distinct list once (the pieces
 * of every table and direction share them). */
/* Actions: the values of proto/compiled.proto's TierAction. */
#define NP_TIER_ALLOW 1
#define NP_TIER_DENY 2
#define NP_TIER_PASS 3 /* ends the walk of this tier without a verdict */
/* The longest list an entry holds: the program walks it with a loop of this bound. */
#define NP_TIER_MAX_RULES 64
struct np_tier_rule {
	__u32 peer_set; /* index into CompiledPolicy.peer_sets */
	__u8 action;    /* NP_TIER_ALLOW, NP_TIER_DENY or NP_TIER_PASS */
	__u8 flags;     /* NP_PEERS_ALL: matches every peer, np_members is not consulted */
	__u8 pad[2];
};
struct np_tier_value {
	__u32 count; /* rules[0..count) in evaluation order; the first matching one decides */
	__u32 pad;
	struct np_tier_rule rules[NP_TIER_MAX_RULES];
};

/* np_ports: BPF_MAP_TYPE_LPM_TRIE. The first 48 bits (table, direction, protocol) are
 * always part of the prefix; the port contributes 0..16 more bits, so a port range is
 * stored as its fewest port prefixes (at most 30) and prefixlen 48 is the wildcard
 * "every port of this protocol". The rules of one (table, direction, protocol) are
 * disjoint, so a packet's port matches at most one prefix. The program looks up with
 * prefixlen NP_PORT_KEY_FULL_PREFIX. */
#define NP_PORT_KEY_FIXED_PREFIX 48
#define NP_PORT_KEY_FULL_PREFIX 64
struct np_port_key {
	__u32 prefixlen;
	__u32 table;     /* host order: always fully inside the prefix, so order is irrelevant */
	__u8 direction;  /* NP_DIR_* */
	__u8 protocol;   /* IANA: 6 TCP, 17 UDP, 132 SCTP */
	__be16 port;     /* network order, so that its high bits come first */
};
#define NP_PEERS_ALL 0x1 /* the peer set is every address: np_members is not consulted */
struct np_port_value {
	__u32 peer_set; /* index into CompiledPolicy.peer_sets */
	__u32 flags;    /* NP_PEERS_* */
};

/* np_members: BPF_MAP_TYPE_HASH; an entry means "identity is in peer_set". */
struct np_member_key {
	__u32 peer_set;
	__u32 identity;
};

/* np_ct: BPF_MAP_TYPE_LRU_HASH shared by every generation. An entry is written when a
 * packet that starts or continues a flow is allowed at a hook, keyed by the interface, the
 * hook and the packet's tuple as it travelled. A later packet passes when its own tuple is
 * there (the flow continues) or its reversed tuple is there under the other hook of the
 * same interface (a reply). TCP segments with SYN and without ACK are always decided by
 * policy, so a new connection never rides on an old entry; an established TCP connection
 * keeps flowing when the policy changes. Other flows (UDP, SCTP, ICMP echo, other
 * protocols) are authorised again by their first packet under a new generation: an entry
 * of another generation passes replies only. */
#define NP_CT_TIMEOUT_TCP_NS (2ull * 3600 * 1000000000ull)
#define NP_CT_TIMEOUT_OTHER_NS (120ull * 1000000000ull)
struct np_ct_key {
	__u8 saddr[16]; /* IPv4 in [0..3], rest zero */
	__u8 daddr[16];
	__u32 ifindex;
	__be16 sport;   /* TCP/UDP/SCTP ports; the echo identifier for ICMP echo; else 0 */
	__be16 dport;
	__u8 protocol;
	__u8 family;    /* NP_FAMILY_* */
	__u8 hook;      /* NP_HOOK_* where the entry was written */
	__u8 pad;
};
struct np_ct_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns(); refreshed at most once a second */
	__u32 generation;   /* the generation that allowed the flow, for people */
	__u32 pad;
};

/* np_frag: BPF_MAP_TYPE_LRU_HASH shared by every generation. A first fragment that passes
 * records its datagram, so that the later fragments (which carry no ports) pass too. Later
 * fragments whose first fragment was not seen are decided without ports: they pass only
 * where no side is isolated. */
#define NP_FRAG_TIMEOUT_NS (30ull * 1000000000ull)
struct np_frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;       /* IPv4 identification (16 bits) or IPv6 fragment header id */
	__u32 ifindex;
	__u8 protocol;
	__u8 family;
	__u8 hook;
	__u8 pad;
};

#ifdef __cplusplus
static_assert(sizeof(struct np_config) == 8, "np_config");
static_assert(sizeof(struct np_runs) == 16, "np_runs");
static_assert(sizeof(struct np_lpm4_key) == 8, "np_lpm4_key");
static_assert(sizeof(struct np_lpm6_key) == 20, "np_lpm6_key");
static_assert(sizeof(struct np_endpoint) == 12, "np_endpoint");
static_assert(sizeof(struct np_endpoint_state) == 16, "np_endpoint_state");
static_assert(sizeof(struct np_endpoint_states) == 32, "np_endpoint_states");
static_assert(sizeof(struct np_endpoint_addr_key) == 20, "np_endpoint_addr_key");
static_assert(sizeof(struct np_table) == 4, "np_table");
static_assert(sizeof(struct np_port_key) == 12, "np_port_key");
static_assert(sizeof(struct np_tier_key) == 16, "np_tier_key");
static_assert(sizeof(struct np_tier_ref) == 4, "np_tier_ref");
static_assert(sizeof(struct np_tier_rule) == 8, "np_tier_rule");
static_assert(sizeof(struct np_tier_value) == 8 + 8 * NP_TIER_MAX_RULES, "np_tier_value");
static_assert(sizeof(struct np_port_value) == 8, "np_port_value");
static_assert(sizeof(struct np_member_key) == 8, "np_member_key");
static_assert(sizeof(struct np_ct_key) == 44, "np_ct_key");
static_assert(sizeof(struct np_ct_value) == 16, "np_ct_value");
static_assert(sizeof(struct np_frag_key) == 44, "np_frag_key");
#else
_Static_assert(sizeof(struct np_config) == 8, "np_config");
_Static_assert(sizeof(struct np_lpm4_key) == 8, "np_lpm4_key");
_Static_assert(sizeof(struct np_lpm6_key) == 20, "np_lpm6_key");
_Static_assert(sizeof(struct np_endpoint) == 12, "np_endpoint");
_Static_assert(sizeof(struct np_endpoint_state) == 16, "np_endpoint_state");
_Static_assert(sizeof(struct np_endpoint_states) == 32, "np_endpoint_states");
_Static_assert(sizeof(struct np_endpoint_addr_key) == 20, "np_endpoint_addr_key");
_Static_assert(sizeof(struct np_table) == 4, "np_table");
_Static_assert(sizeof(struct np_port_key) == 12, "np_port_key");
_Static_assert(sizeof(struct np_tier_key) == 16, "np_tier_key");
_Static_assert(sizeof(struct np_tier_ref) == 4, "np_tier_ref");
_Static_assert(sizeof(struct np_tier_rule) == 8, "np_tier_rule");
_Static_assert(sizeof(struct np_tier_value) == 8 + 8 * NP_TIER_MAX_RULES, "np_tier_value");
_Static_assert(sizeof(struct np_port_value) == 8, "np_port_value");
_Static_assert(sizeof(struct np_member_key) == 8, "np_member_key");
_Static_assert(sizeof(struct np_ct_key) == 44, "np_ct_key");
_Static_assert(sizeof(struct np_ct_value) == 16, "np_ct_value");
_Static_assert(sizeof(struct np_frag_key) == 44, "np_frag_key");
#endif

#endif /* NP_BACKENDS_EBPF_BPF_NP_ABI_H_ */
