/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: packet parsing into a flow tuple. */
#ifndef MOAT_PARSE_H
#define MOAT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "moat.h"

#define PARSE_OK 0
#define PARSE_PASS 1      /* not policied: non-IP, neighbour discovery */
#define PARSE_MALFORMED 2
#define PARSE_UNSUPPORTED 3 /* an IPv6 extension header chain we do not follow to its end */

#define ICMP_ECHOREPLY_ 0
#define ICMP_ECHO_ 8
#define ICMPV6_ECHO_REQUEST_ 128
#define ICMPV6_ECHO_REPLY_ 129

struct pkt {
	struct ct_key key;   /* the packet's tuple; direction/endpoint set by the caller */
	struct ct_key inner; /* ICMP errors: the tuple of the quoted packet */
	__u32 len;
	__u16 policy_port; /* host order: destination port, or the ICMP type */
	__u8 family;       /* 4 or 6 */
	__u8 tcp_flags;
	__u8 icmp_error;
	__u8 fragment;   /* a non-first fragment: no L4 header, no ports */
	__u8 frag_first; /* the first fragment of a fragmented datagram */
	__u8 frag_recalled; /* a later fragment whose ports frag_recall found */
	__u32 frag_id;   /* the IP identification of a fragment */
};

/* frag describes the fragment parse_l3 found, if any. */
struct frag {
	__u32 id;
	__u8 later; /* offset > 0: no L4 header */
	__u8 first; /* offset 0 with more fragments to come */
};

/*
 * load copies len bytes at off: straight from the linear packet data when
 * they are there (no helper call), else through bpf_skb_load_bytes.
 */
static __always_inline int load(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data, *end;

	/*
	 * Read data/data_end straight off the context pointer: in unrolled
	 * loops clang may otherwise hoist &skb->data into a register, and the
	 * verifier refuses a load through a modified context pointer.
	 */
	asm volatile("%0 = *(u32 *)(%2 + %3)\n\t"
		     "%1 = *(u32 *)(%2 + %4)"
		     : "=&r"(data), "=&r"(end)
		     : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, data)),
		       "i"(__builtin_offsetof(struct __sk_buff, data_end)));

	if (off < 512 && data + off + len <= end) {
		/*
		 * Copy in 32-bit words, not bytes: the cast tells clang the
		 * source may be read as words. Headers behind the 14-byte
		 * Ethernet header are only 2-byte aligned, which the verifier
		 * and the JIT accept on architectures with efficient unaligned
		 * access (every one moat supports).
		 */
		__builtin_memcpy(to, (const __u32 *)(data + off), len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline void set_v4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline int is_icmp_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/*
 * parse_ports fills the ports of key for the L4 header at off. For ICMP echo
 * the identifier is the source "port" of requests and the destination "port"
 * of replies, so that a reply's reversed tuple equals its request's tuple.
 * Returns the ICMP type (or -1 when not ICMP) through *icmp_type.
 */
static __always_inline int parse_ports(struct __sk_buff *skb, __u32 off, __u8 family, struct ct_key *key,
				       __u16 *policy_port, __u8 *tcp_flags, int *icmp_type)
{
	__u8 l4[14];

	*icmp_type = -1;
	switch (key->proto) {
	case IPPROTO_TCP:
		if (load(skb, off, l4, 14) < 0)
			return PARSE_MALFORMED;
		__builtin_memcpy(&key->sport, &l4[0], 2);
		__builtin_memcpy(&key->dport, &l4[2], 2);
		*policy_port = bpf_ntohs(key->dport);
		*tcp_flags = l4[13];
		return PARSE_OK;
	case IPPROTO_UDP:
		if (load(skb, off, l4, 4) < 0)
			return PARSE_MALFORMED;
		__builtin_memcpy(&key->sport, &l4[0], 2);
		__builtin_memcpy(&key->dport, &l4[2], 2);
		*policy_port = bpf_ntohs(key->dport);
		return PARSE_OK;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (load(skb, off, l4, 8) < 0)
			return PARSE_MALFORMED;
		*icmp_type = l4[0];
		*policy_port = l4[0];
		key->sport = 0;
		key->dport = 0;
		if (l4[0] == (family == 4 ? ICMP_ECHO_ : ICMPV6_ECHO_REQUEST_))
			__builtin_memcpy(&key->sport, &l4[4], 2);
		else if (l4[0] == (family == 4 ? ICMP_ECHOREPLY_ : ICMPV6_ECHO_REPLY_))
			__builtin_memcpy(&key->dport, &l4[4], 2);
		return PARSE_OK;
	}
	*policy_port = 0;
	return PARSE_OK;
}

/*
 * IPv6 extension headers that parse_l3 walks through, and how many it
 * follows: a chain that does not reach an upper-layer header within
 * IPV6_EXT_MAX is refused (PARSE_UNSUPPORTED) rather than policied as the
 * extension header's "protocol" without ports.
 */
#define IPV6_EXT_HOP 0
#define IPV6_EXT_ROUTING 43
#define IPV6_EXT_FRAGMENT 44
#define IPV6_EXT_AH 51
#define IPV6_EXT_DSTOPTS 60
#define IPV6_EXT_MAX 8

#define L3_MALFORMED -1
#define L3_UNSUPPORTED -2

/*
 * parse_l3 parses an IP header at off into key; returns the L4 offset or
 * L3_MALFORMED / L3_UNSUPPORTED. f->later is set for a non-first fragment
 * (offset > 0): key->proto is then the protocol its fragment header (or
 * IPv4 header) names, and there is no L4 header at the returned offset. A
 * first fragment (offset 0, including IPv6 atomic fragments) is parsed like
 * an unfragmented packet, ports and all; f->first says more fragments
 * follow it. f->id is the identification of either.
 */
static __always_inline int parse_l3(struct __sk_buff *skb, __u32 off, __u8 family, struct ct_key *key, struct frag *f)
{
	f->id = 0;
	f->later = 0;
	f->first = 0;
	if (family == 4) {
		struct iphdr ip;

		if (load(skb, off, &ip, sizeof(ip)) < 0)
			return L3_MALFORMED;
		if (ip.ihl < 5)
			return L3_MALFORMED;
		set_v4(key->saddr, ip.saddr);
		set_v4(key->daddr, ip.daddr);
		key->proto = ip.protocol;
		if (ip.frag_off & bpf_htons(0x1fff))
			f->later = 1;
		else if (ip.frag_off & bpf_htons(0x2000))
			f->first = 1;
		f->id = ip.id;
		return off + ip.ihl * 4;
	}
	struct ipv6hdr ip6;

	if (load(skb, off, &ip6, sizeof(ip6)) < 0)
		return L3_MALFORMED;
	__builtin_memcpy(key->saddr, &ip6.saddr, 16);
	__builtin_memcpy(key->daddr, &ip6.daddr, 16);
	key->proto = ip6.nexthdr;
	off += sizeof(ip6);
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 ext[4];

		switch (key->proto) {
		case IPV6_EXT_HOP:
		case IPV6_EXT_ROUTING:
		case IPV6_EXT_DSTOPTS:
			if (load(skb, off, ext, 2) < 0)
				return L3_MALFORMED;
			key->proto = ext[0];
			off += (ext[1] + 1) * 8;
			break;
		case IPV6_EXT_AH:
			if (load(skb, off, ext, 2) < 0)
				return L3_MALFORMED;
			key->proto = ext[0];
			off += (ext[1] + 2) * 4;
			break;
		case IPV6_EXT_FRAGMENT: {
			/* next header, reserved, offset (13 bits) | res | M, identification */
			__u8 fh[8];

			if (load(skb, off, fh, 8) < 0)
				return L3_MALFORMED;
			key->proto = fh[0];
			off += 8;
			__builtin_memcpy(&f->id, fh + 4, 4);
			if ((fh[2] << 8 | fh[3]) & 0xfff8) {
				/* The rest of the header chain is in the first fragment. */
				f->later = 1;
				return off;
			}
			f->first = fh[3] & 1;
			break; /* first or atomic fragment: carry on to the L4 header */
		}
		default:
			return off;
		}
	}
	switch (key->proto) {
	case IPV6_EXT_HOP:
	case IPV6_EXT_ROUTING:
	case IPV6_EXT_FRAGMENT:
	case IPV6_EXT_AH:
	case IPV6_EXT_DSTOPTS:
		return L3_UNSUPPORTED;
	}
	return off;
}

/*
 * parse_packet parses the packet into p (which the caller zeroed) and
 * returns PARSE_*. It is a global function, checked once by the verifier:
 * the many ways through the IPv6 header chain then end in one state of the
 * caller instead of each carrying its own through the rest of the program.
 */
__noinline int parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	if (!p)
		return PARSE_MALFORMED;

	__u16 proto = skb->protocol;
	struct frag f;
	int l4, icmp_type;

	p->len = skb->len;
	if (proto == bpf_htons(ETH_P_IP))
		p->family = 4;
	else if (proto == bpf_htons(ETH_P_IPV6))
		p->family = 6;
	else
		return PARSE_PASS;

	l4 = parse_l3(skb, ETH_HLEN, p->family, &p->key, &f);
	if (l4 == L3_UNSUPPORTED)
		return PARSE_UNSUPPORTED;
	if (l4 < 0)
		return PARSE_MALFORMED;
	p->frag_id = f.id;
	if (f.later) {
		/* Non-first fragments carry no ports (see frag_recall). */
		p->fragment = 1;
		p->policy_port = 0;
		return PARSE_OK;
	}
	p->frag_first = f.first;
	if (parse_ports(skb, l4, p->family, &p->key, &p->policy_port, &p->tcp_flags, &icmp_type) != PARSE_OK)
		return PARSE_MALFORMED;
	if (icmp_type < 0)
		return PARSE_OK;
	if (p->family == 6 && ((icmp_type >= 133 && icmp_type <= 137) || (icmp_type >= 130 && icmp_type <= 132) ||
			       icmp_type == 143))
		return PARSE_PASS; /* neighbour discovery and MLD */
	if (!is_icmp_error(p->family, icmp_type))
		return PARSE_OK;

	/* ICMP error: parse the quoted packet (IP header + 8 bytes of L4). */
	struct frag inner_frag;
	int inner_l4, inner_type;
	__u16 inner_port;
	__u8 inner_flags;

	inner_l4 = parse_l3(skb, l4 + 8, p->family, &p->inner, &inner_frag);
	if (inner_l4 < 0 || inner_frag.later)
		return PARSE_OK; /* treated as a plain ICMP packet */
	if (p->inner.proto == IPPROTO_TCP || p->inner.proto == IPPROTO_UDP) {
		__u16 ports[2];

		if (load(skb, inner_l4, ports, 4) < 0)
			return PARSE_OK;
		p->inner.sport = ports[0];
		p->inner.dport = ports[1];
	} else if (parse_ports(skb, inner_l4, p->family, &p->inner, &inner_port, &inner_flags, &inner_type) !=
		   PARSE_OK) {
		return PARSE_OK;
	}
	p->icmp_error = 1;
	return PARSE_OK;
}

#endif /* MOAT_PARSE_H */
