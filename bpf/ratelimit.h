/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * moat: the per-CPU token bucket that rate-limits events (moat_events in
 * events.h, moat_tcp_events in sockops.c). A bucket starts empty with
 * last_ns = 0, so its first refill sees the whole uptime as elapsed time.
 */
#ifndef MOAT_RATELIMIT_H
#define MOAT_RATELIMIT_H

#include <linux/types.h>

#define RL_NSEC_PER_SEC 1000000000ULL

struct token_bucket {
	__u64 last_ns; /* bpf_ktime_get_ns of the last refill */
	__u64 tokens;
};

/*
 * token_refill returns the tokens that elapsed_ns earn at rate per second,
 * capped at burst. It never overflows: whole seconds count only while they
 * earn fewer than burst tokens (secs < burst, so secs * rate < 2^64), and
 * the sub-second part is below 10^9 * 2^32 < 2^64.
 */
static __always_inline __u64 token_refill(__u64 elapsed_ns, __u32 rate, __u32 burst)
{
	__u64 secs = elapsed_ns / RL_NSEC_PER_SEC, add;

	if (secs >= burst)
		return burst; /* rate >= 1: a second per token at least fills it */
	add = secs * rate;
	if (add >= burst)
		return burst;
	add += elapsed_ns % RL_NSEC_PER_SEC * rate / RL_NSEC_PER_SEC;
	return add < burst ? add : burst;
}

/*
 * token_take refills b for the time since its last refill and takes one
 * token; it returns 0 when the bucket is empty. rate 0 means unlimited.
 */
static __always_inline int token_take(struct token_bucket *b, __u64 now, __u32 rate, __u32 burst)
{
	__u64 add;

	if (rate == 0)
		return 1;
	add = token_refill(now - b->last_ns, rate, burst);
	if (add > 0) {
		b->tokens += add;
		if (b->tokens > burst)
			b->tokens = burst;
		b->last_ns = now;
	}
	if (b->tokens == 0)
		return 0;
	b->tokens--;
	return 1;
}

#endif /* MOAT_RATELIMIT_H */
