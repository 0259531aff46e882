// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * moat XDP prefilter: drops packets whose source address is in the CIDR deny
 * list (moat_prefilter, LPM trie, IPv4 and IPv6) before the stack sees them,
 * counting drops per prefix and in total (moat_pf_stats, per CPU). Anything
 * else, including non-IP frames and frames too short to parse, passes.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "prefilter.h"

char __license[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct prefilter_key);
	__type(value, struct prefilter_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_prefilter SEC(".maps");

/* Counters per slot; slot 0 counts every drop. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct prefilter_stats);
	__uint(max_entries, 65537);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_pf_stats SEC(".maps");

static __always_inline void count(__u32 slot, __u64 len)
{
	struct prefilter_stats *s = bpf_map_lookup_elem(&moat_pf_stats, &slot);

	if (!s) {
		struct prefilter_stats zero = {};

		bpf_map_update_elem(&moat_pf_stats, &slot, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&moat_pf_stats, &slot);
		if (!s)
			return;
	}
	s->packets++;
	s->bytes += len;
}

SEC("xdp")
int moat_xdp_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct prefilter_key key = {};
	struct prefilter_val *v;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		key.prefixlen = 128;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->saddr, 4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		key.prefixlen = 128;
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
	} else {
		return XDP_PASS;
	}
	v = bpf_map_lookup_elem(&moat_prefilter, &key);
	if (!v)
		return XDP_PASS;
	count(PREFILTER_SLOT_TOTAL, end - data);
	if (v->slot != PREFILTER_SLOT_TOTAL)
		count(v->slot, end - data);
	return XDP_DROP;
}
