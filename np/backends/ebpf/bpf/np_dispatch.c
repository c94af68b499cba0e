/* np/backends/ebpf/bpf/np_dispatch.c — the programs attached to the host-side veth of each
 * endpoint. They never change: each records which hook it runs at in skb->cb[0] and tail
 * calls the live generation (np_policy.c) in np_gen_progs[NP_GEN_SLOT]. Replacing that one
 * slot switches every interface, every map and the program logic to a new generation in a
 * single map update. An empty slot (no generation loaded) drops: fail closed.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_helpers.h>

#include "np_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} np_gen_progs SEC(".maps");

/* tc ingress of the host veth: what the pod sends. */
SEC("tc")
int np_from_ep(struct __sk_buff *skb)
{
	skb->cb[0] = NP_HOOK_FROM_ENDPOINT;
	bpf_tail_call(skb, &np_gen_progs, NP_GEN_SLOT);
	return TC_ACT_SHOT;
}

/* tc egress of the host veth: what is delivered to the pod. */
SEC("tc")
int np_to_ep(struct __sk_buff *skb)
{
	skb->cb[0] = NP_HOOK_TO_ENDPOINT;
	bpf_tail_call(skb, &np_gen_progs, NP_GEN_SLOT);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
