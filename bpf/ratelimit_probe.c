// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test probe for ratelimit.h (datapath tests only, never attached): runs
 * token_take on a bucket state carried in the test packet, so that a
 * BPF_PROG_TEST_RUN checks the arithmetic the programs run, including
 * clock values that a real test could not wait for.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ratelimit.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The packet: input, then token_take's result and the bucket after it. */
struct ratelimit_case {
	__u64 last_ns;
	__u64 tokens;
	__u64 now;
	__u32 rate;
	__u32 burst;
	__u64 taken;
};

/* Keeps struct ratelimit_case in BTF for bpf2go -type; never read. */
const struct ratelimit_case *const moat_ratelimit_case_type __attribute__((unused)) = 0;

SEC("tc")
int ratelimit_probe(struct __sk_buff *skb)
{
	struct ratelimit_case p;
	struct token_bucket b;

	if (bpf_skb_load_bytes(skb, 0, &p, sizeof(p)) < 0)
		return 1;
	b.last_ns = p.last_ns;
	b.tokens = p.tokens;
	p.taken = token_take(&b, p.now, p.rate, p.burst);
	p.last_ns = b.last_ns;
	p.tokens = b.tokens;
	if (bpf_skb_store_bytes(skb, 0, &p, sizeof(p), 0) < 0)
		return 1;
	return 0;
}
