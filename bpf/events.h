/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: rate-limited events to the ringbuf, and counters. */
#ifndef MOAT_EVENTS_H
#define MOAT_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "moat.h"
#include "maps.h"
#include "parse.h"
#include "ratelimit.h"

/* event_allowed takes a token from this CPU's bucket. */
static __always_inline int event_allowed(struct event_stats *st, __u64 now)
{
	__u32 zero = 0;
	struct token_bucket *b;

	if (events_rate == 0)
		return 1;
	b = bpf_map_lookup_elem(&moat_ev_limit, &zero);
	if (!b)
		return 0;
	if (token_take(b, now, events_rate, events_burst))
		return 1;
	if (st)
		st->rate_limited++;
	return 0;
}

struct event_info {
	__u32 endpoint;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule;
	__u16 proxy_port;
	__u8 kind;
	__u8 reason;
	__u8 direction;
	__u8 verdict;
	__u8 match;
	__u8 l7;
	__u8 flags;
};

static __always_inline void emit_event(const struct pkt *p, const struct event_info *info)
{
	__u32 zero = 0;
	struct event_stats *st;
	struct event *ev;
	__u64 now;

	if (!(events_mask & (1 << info->kind)))
		return;
	st = bpf_map_lookup_elem(&moat_ev_stats, &zero);
	now = bpf_ktime_get_ns();
	if (!event_allowed(st, now))
		return;
	ev = bpf_ringbuf_reserve(&moat_events, sizeof(*ev), 0);
	if (!ev) {
		if (st)
			st->ringbuf_full++;
		return;
	}
	ev->timestamp_ns = now;
	ev->endpoint = info->endpoint;
	ev->src_identity = info->src_identity;
	ev->dst_identity = info->dst_identity;
	ev->rule = info->rule;
	ev->length = p->len;
	__builtin_memcpy(ev->saddr, p->key.saddr, 16);
	__builtin_memcpy(ev->daddr, p->key.daddr, 16);
	ev->sport = bpf_ntohs(p->key.sport);
	ev->dport = bpf_ntohs(p->key.dport);
	ev->proxy_port = info->proxy_port;
	ev->kind = info->kind;
	ev->reason = info->reason;
	ev->direction = info->direction;
	ev->proto = p->key.proto;
	ev->family = p->family;
	ev->verdict = info->verdict;
	ev->match = info->match;
	ev->l7 = info->l7;
	ev->tcp_flags = p->tcp_flags;
	ev->flags = info->flags;
	ev->policy_port = p->policy_port;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
	if (st)
		st->emitted++;
}

#define STAT_ALLOWED 0
#define STAT_DROPPED 1
#define STAT_REDIRECTED 2

static __always_inline void count_endpoint(__u32 slot, __u8 dir, int what, __u32 len)
{
	__u32 idx = EP_STATS_INDEX(slot, dir);
	struct ep_stats *s = bpf_map_lookup_elem(&moat_ep_stats, &idx);

	if (!s)
		return;
	switch (what) {
	case STAT_ALLOWED:
		s->allowed_packets++;
		s->allowed_bytes += len;
		break;
	case STAT_DROPPED:
		s->dropped_packets++;
		s->dropped_bytes += len;
		break;
	default:
		s->redirected_packets++;
		s->redirected_bytes += len;
	}
}

static __always_inline void count_rule(__u32 rule, __u32 len)
{
	struct rule_stats *s;

	if (rule == 0)
		return;
	s = bpf_map_lookup_elem(&moat_rule_stats, &rule);
	if (!s)
		return;
	s->packets++;
	s->bytes += len;
}

#endif /* MOAT_EVENTS_H */
