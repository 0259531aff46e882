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

/*
 * CT_TICK_SHIFT: CT times count ticks of 2^30 ns (about 1.07 s) of the
 * coarse monotonic clock, a shift rather than a division per packet. The
 * agent gives the lifetimes in ticks (datapath.ctTicks).
 */
#define CT_TICK_SHIFT 30

/* ct_now reads the clock once per packet, in CT ticks. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns() >> CT_TICK_SHIFT;
}

/* tcp_bare_syn says whether a packet is a TCP SYN without ACK: a connection's first packet. */
static __always_inline int tcp_bare_syn(__u8 proto, __u8 tcp_flags)
{
	return proto == IPPROTO_TCP && (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* generation returns the maps' current generation (see moat_generation). */
static __always_inline __u32 generation(void)
{
	__u32 zero = 0, *g = bpf_map_lookup_elem(&moat_generation, &zero);

	return g ? *g : 0;
}

/*
 * ct_canon writes the moat_ct key of tuple t at endpoint ep: t in canonical
 * order (the lower (address, port) side first), direction 0. It returns
 * whether t's sender is the higher side (the sides were swapped).
 */
static __always_inline int ct_canon(const struct ct_key *t, __u32 ep, struct ct_key *k)
{
	__u64 s0, s1, d0, d1;
	int swapped;

	__builtin_memcpy(&s0, t->saddr, 8);
	__builtin_memcpy(&s1, t->saddr + 8, 8);
	__builtin_memcpy(&d0, t->daddr, 8);
	__builtin_memcpy(&d1, t->daddr + 8, 8);
	if (s0 != d0)
		swapped = s0 > d0;
	else if (s1 != d1)
		swapped = s1 > d1;
	else
		swapped = t->sport > t->dport;
	if (swapped) {
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
	k->proto = t->proto;
	k->direction = 0;
	k->pad = 0;
	k->endpoint = ep;
	return swapped;
}

/* ct_origin returns the CT_F_ORIG_* flags of a flow whose first packet is seen at dir, swapped as ct_canon said. */
static __always_inline __u8 ct_origin(__u8 dir, int swapped)
{
	return (dir == DIR_EGRESS ? CT_F_ORIG_EGRESS : 0) | (swapped ? CT_F_ORIG_SWAPPED : 0);
}

#define CT_FORWARD 1 /* a packet in the flow's own direction */
#define CT_REPLY 2   /* a packet in the opposite direction */
#define CT_OTHER 0   /* the tuple's entry, but a packet no flow of it sends */

/*
 * ct_relation tells how a packet seen at dir (swapped as ct_canon said)
 * relates to the flow of entry e: the same hook and sender side as the
 * first packet is the flow's direction, the other hook and the other side
 * a reply. A packet of the same tuple that fits neither (the endpoint
 * sending what it should receive) is no packet of the flow.
 */
static __always_inline int ct_relation(const struct ct_entry *e, __u8 dir, int swapped)
{
	__u8 now = ct_origin(dir, swapped), orig = e->flags & (CT_F_ORIG_EGRESS | CT_F_ORIG_SWAPPED);

	if (now == orig)
		return CT_FORWARD;
	if (now == (orig ^ (CT_F_ORIG_EGRESS | CT_F_ORIG_SWAPPED)))
		return CT_REPLY;
	return CT_OTHER;
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

/*
 * ct_flow returns the entry of the flow a packet belongs to: the live entry
 * for k, unless the packet is a SYN (without ACK) and that entry's flow is
 * closing. Then a client reuses the tuple of a connection that has ended
 * (its port, while the entry lives out its closing lifetime): the SYN opens
 * a new flow, to be decided afresh. ct_flow returns no entry and sets
 * *reopen to the old one, which the new flow's entry overwrites in place
 * (cheaper than replacing it in the LRU map).
 */
static __always_inline struct ct_entry *ct_flow(struct ct_key *k, __u64 now, __u8 proto, __u8 tcp_flags,
						struct ct_entry **reopen)
{
	struct ct_entry *e = ct_live(k, now);

	if (e && tcp_bare_syn(proto, tcp_flags) && (e->flags & CT_F_CLOSING)) {
		*reopen = e;
		return 0;
	}
	return e;
}

#endif /* MOAT_CT_H */
