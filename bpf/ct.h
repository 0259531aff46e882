/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: connection tracking. */
#ifndef MOAT_CT_H
#define MOAT_CT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "moat.h"
#include "maps.h"

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* now_sec reads the clock once per packet (the coarse clock: CT lifetimes are seconds). */
static __always_inline __u64 now_sec(void)
{
	return bpf_ktime_get_coarse_ns() / 1000000000ULL;
}

/* generation returns the maps' current generation (see moat_generation). */
static __always_inline __u32 generation(void)
{
	__u32 zero = 0, *g = bpf_map_lookup_elem(&moat_generation, &zero);

	return g ? *g : 0;
}

static __always_inline void ct_reverse(const struct ct_key *k, struct ct_key *r, __u8 dir)
{
	__builtin_memcpy(r->saddr, k->daddr, 16);
	__builtin_memcpy(r->daddr, k->saddr, 16);
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
	r->direction = dir;
	r->pad = 0;
	r->endpoint = k->endpoint;
}

static __always_inline __u32 ct_lifetime(const struct ct_entry *e, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return ct_lifetime_other;
	if (e->flags & CT_F_CLOSING)
		return ct_lifetime_closing;
	if (e->flags & CT_F_REPLY_SEEN)
		return ct_lifetime_tcp;
	return ct_lifetime_syn;
}

/* ct_touch records a packet of the flow and extends its life. */
static __always_inline void ct_touch(struct ct_entry *e, __u8 proto, __u8 tcp_flags, int reply, __u64 now)
{
	__u8 flags = e->flags;
	__u64 expires;

	if (reply)
		flags |= CT_F_REPLY_SEEN;
	if (proto == IPPROTO_TCP && (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		flags |= CT_F_CLOSING;
	if (flags != e->flags)
		e->flags = flags;
	expires = now + ct_lifetime(e, proto);
	if (expires != e->expires)
		e->expires = expires;
}

/* ct_live returns the entry for k when it exists and has not expired. */
static __always_inline struct ct_entry *ct_live(struct ct_key *k, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&moat_ct, k);

	if (!e || e->expires < now)
		return 0;
	return e;
}

#endif /* MOAT_CT_H */
