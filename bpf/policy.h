/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: ipcache and policy lookups. */
#ifndef MOAT_POLICY_H
#define MOAT_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "moat.h"
#include "maps.h"

/*
 * ipcache_identity resolves an address (IPv4-mapped for IPv4); world by
 * default. A host entry (the longest prefix there is) answers from the
 * exact-match map; the trie holds the shorter prefixes.
 */
static __always_inline __u32 ipcache_identity(const __u8 *addr)
{
	struct ipcache_key k = {.prefixlen = 128};
	struct ipcache_val *v;

	v = bpf_map_lookup_elem(&moat_ipcache_h, addr);
	if (v)
		return v->identity;
	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&moat_ipcache, &k);
	if (!v)
		return ID_WORLD;
	return v->identity;
}

struct policy_res {
	__u32 rule;
	__u16 proxy_port;
	__u8 verdict;
	__u8 l7;
	__u8 match;
};

/* policy_take keeps v when it beats the verdict so far (ties: the earlier, more specific lookup). */
static __always_inline void policy_take(const struct policy_val *v, __u8 match, struct policy_res *res)
{
	if (v->verdict <= res->verdict)
		return;
	res->verdict = v->verdict;
	res->l7 = v->l7;
	res->proxy_port = v->proxy_port;
	res->rule = v->rule;
	res->match = match;
}

/*
 * policy_shape looks up the entry of one shape that covers the packet: the
 * entry for its port, else (when the direction has any) the range block
 * holding its port, else the entry for every port. Entries of one shape do
 * not overlap, so the first found is the only one. port < 0: a packet
 * without ports, which only an every-port entry covers.
 */
static __always_inline void policy_shape(struct policy_hkey *k, int port, int ranges, __u8 match,
					 struct policy_res *res)
{
	struct policy_val *v;

	if (port >= 0 && k->proto != 0) {
		k->dport = bpf_htons(port);
		k->all_ports = 0;
		v = bpf_map_lookup_elem(&moat_policy_h, k);
		if (v) {
			policy_take(v, match, res);
			return;
		}
		if (ranges) {
			struct policy_key t = {
				.prefixlen = POLICY_PREFIX_FULL,
				.endpoint = k->endpoint,
				.identity = k->identity,
				.direction = k->direction,
				.proto = k->proto,
				.dport = k->dport,
			};
			v = bpf_map_lookup_elem(&moat_policy, &t);
			if (v) {
				policy_take(v, match, res);
				return;
			}
		}
	}
	k->dport = 0;
	k->all_ports = 1;
	v = bpf_map_lookup_elem(&moat_policy_h, k);
	if (v)
		policy_take(v, match, res);
}

/* policy_query is what policy_lookup decides. */
struct policy_query {
	__u32 ep;
	__u32 remote; /* identity, host order */
	__u32 shapes; /* SHAPE_* bits of the direction's entries */
	__s32 port;   /* destination port or ICMP type; < 0: a packet without ports */
	__u8 dir;
	__u8 proto;
	__u8 ranges; /* the direction has port-range entries (in the trie) */
	__u8 pad;
};

/*
 * policy_lookup looks up the (at most) four shapes of entry that can cover
 * a packet, (identity|any) x (proto|any), and keeps the highest verdict in
 * res; ties go to the more specific shape. q->shapes skips the shapes that
 * no entry of the endpoint's direction has.
 *
 * It is a global function, which the verifier checks once on its own
 * rather than at every call in every path of the programs: that keeps the
 * programs' verification well inside the kernel's instruction budget.
 */
__noinline int policy_lookup(const struct policy_query *q, struct policy_res *res)
{
	if (!q || !res)
		return 0;

	struct policy_hkey k = {
		.endpoint = q->ep,
		.identity = bpf_htonl(q->remote),
		.direction = q->dir,
		.proto = q->proto,
	};
	int port = q->port, ranges = q->ranges;
	__u32 shapes = q->shapes;

	if (shapes & SHAPE_L3_L4)
		policy_shape(&k, port, ranges, MATCH_L3_L4, res);
	k.proto = 0;
	if (shapes & SHAPE_L3_ONLY)
		policy_shape(&k, port, ranges, MATCH_L3_ONLY, res);
	k.identity = 0;
	k.proto = q->proto;
	if (shapes & SHAPE_L4_ONLY)
		policy_shape(&k, port, ranges, MATCH_L4_ONLY, res);
	k.proto = 0;
	if (shapes & SHAPE_ALL)
		policy_shape(&k, port, ranges, MATCH_ALL, res);
	return 0;
}

/* policy_eval decides a packet with a destination port (or ICMP type). */
static __always_inline void policy_eval(__u32 ep, __u8 dir, __u32 remote, __u8 proto, __u16 port, __u32 shapes,
					int ranges, struct policy_res *res)
{
	struct policy_query q = {
		.ep = ep, .remote = remote, .shapes = shapes, .port = port,
		.dir = dir, .proto = proto, .ranges = !!ranges,
	};

	policy_lookup(&q, res);
}

/*
 * policy_eval_any_port decides a packet that has no port (a non-first
 * fragment): only entries for all ports of its protocol, or for any
 * protocol, can match it; port-specific allows and denies cannot.
 */
static __always_inline void policy_eval_any_port(__u32 ep, __u8 dir, __u32 remote, __u8 proto, __u32 shapes,
						 struct policy_res *res)
{
	struct policy_query q = {
		.ep = ep, .remote = remote, .shapes = shapes, .port = -1,
		.dir = dir, .proto = proto,
	};

	policy_lookup(&q, res);
}

#endif /* MOAT_POLICY_H */
