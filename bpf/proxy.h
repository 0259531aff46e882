/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: handing a packet to a transparent proxy socket. */
#ifndef MOAT_PROXY_H
#define MOAT_PROXY_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "moat.h"
#include "parse.h"

#define BPF_TCP_TIME_WAIT_ 6
#define BPF_TCP_LISTEN_ 10

/*
 * CT flag (next to CT_F_* in moat.h): set on the source endpoint's egress
 * entry of a pod-to-pod flow that the destination's ingress policy sends to
 * the proxy (ct_entry.proxy_port holds the port). from_endpoint then assigns
 * the flow's later packets to the proxy socket at the source's veth: the host
 * stack would otherwise early-demux them to that socket (its tuple is the
 * flow's) and drop them on the forward path, so they never reach the
 * destination's veth.
 */
#define CT_F_TO_INGRESS_PROXY (1 << 3)

static __always_inline __u32 sock_tuple(const struct pkt *p, struct bpf_sock_tuple *t)
{
	if (p->family == 4) {
		__builtin_memcpy(&t->ipv4.saddr, p->key.saddr + 12, 4);
		__builtin_memcpy(&t->ipv4.daddr, p->key.daddr + 12, 4);
		t->ipv4.sport = p->key.sport;
		t->ipv4.dport = p->key.dport;
		return sizeof(t->ipv4);
	}
	__builtin_memcpy(t->ipv6.saddr, p->key.saddr, 16);
	__builtin_memcpy(t->ipv6.daddr, p->key.daddr, 16);
	t->ipv6.sport = p->key.sport;
	t->ipv6.dport = p->key.dport;
	return sizeof(t->ipv6);
}

static __always_inline void tuple_listener(const struct pkt *p, struct bpf_sock_tuple *t, __u16 port)
{
	if (p->family == 4) {
		t->ipv4.daddr = 0;
		t->ipv4.dport = bpf_htons(port);
	} else {
		__builtin_memset(t->ipv6.daddr, 0, 16);
		t->ipv6.dport = bpf_htons(port);
	}
}

/*
 * to_proxy assigns the packet to the proxy's socket: for TCP the established
 * socket of the flow first (skipping TIME_WAIT and listeners), then the
 * listener on the wildcard address and the proxy port. Only valid at tc
 * ingress. Returns 0 on success.
 */
static __always_inline int to_proxy(struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;
	long err;

	if (port == 0)
		return -1;
	len = sock_tuple(p, &t);
	if (p->key.proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			if (sk->state != BPF_TCP_LISTEN_ && sk->state != BPF_TCP_TIME_WAIT_)
				goto assign;
			bpf_sk_release(sk);
		}
		tuple_listener(p, &t, port);
		sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
		if (sk->state != BPF_TCP_LISTEN_) {
			bpf_sk_release(sk);
			return -1;
		}
	} else if (p->key.proto == IPPROTO_UDP) {
		tuple_listener(p, &t, port);
		sk = bpf_sk_lookup_udp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
	} else {
		return -1;
	}
assign:
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return -1;
	skb->mark = MARK_TO_PROXY | ((__u32)port << 16);
	return 0;
}

/*
 * proxy_listening reports whether the proxy has a listener on port for the
 * packet's protocol. Unlike to_proxy it works at tc egress too, so an ingress
 * redirect can fail closed (and say so) where the policy decided it.
 */
static __always_inline int proxy_listening(struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;
	int ok;

	if (port == 0)
		return 0;
	len = sock_tuple(p, &t);
	tuple_listener(p, &t, port);
	if (p->key.proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		ok = sk->state == BPF_TCP_LISTEN_;
	} else if (p->key.proto == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		ok = 1;
	} else {
		return 0;
	}
	bpf_sk_release(sk);
	return ok;
}

/*
 * proxy_return hands a reply of a proxy's upstream leg to the proxy's socket.
 *
 * The proxies dial upstream from the client's own address (a transparent
 * socket bound to it), so the server's replies are addressed to the client:
 * routed as usual they would go to the client pod, which has no such
 * connection. Only a socket of the host netns (where the programs' lookups
 * run, so a pod's sockets are never found) that is not a listener and whose
 * mark carries a from-proxy nibble takes the packet: that is a proxy's
 * upstream socket and nothing else. The to-proxy mark then makes the policy
 * routing rule deliver the packet locally. Only valid at tc ingress.
 * Returns 1 when assigned, 0 when no proxy socket owns the tuple (the
 * packet is routed as usual: an upstream leg from a node address needs no
 * help), -1 when the kernel refused the assignment.
 */
static __always_inline int proxy_return(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len, magic;
	long err;

	if (p->key.proto != IPPROTO_TCP)
		return 0;
	len = sock_tuple(p, &t);
	sk = bpf_sk_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	magic = sk->mark & MARK_MAGIC_MASK;
	if (sk->state == BPF_TCP_LISTEN_ || (magic != MARK_FROM_INGRESS_PROXY && magic != MARK_FROM_EGRESS_PROXY)) {
		bpf_sk_release(sk);
		return 0;
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return -1;
	skb->mark = MARK_TO_PROXY;
	return 1;
}

/* mark_identity unpacks the source identity of proxy-originated traffic. */
static __always_inline __u32 mark_identity(__u32 mark)
{
	return (mark >> 16) | ((mark & 0xff) << 16) | (((mark >> 12) & 0xf) << 24);
}

#endif /* MOAT_PROXY_H */
