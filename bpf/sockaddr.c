// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * moat Service translation: cgroup sock_addr programs that turn a
 * ClusterIP (VIP:port/proto) into one of its backends when a socket
 * connects to it or sends a datagram to it, so that every packet already
 * carries the backend's address when it leaves the socket. The tc
 * programs on the endpoint's veth then judge egress policy against the
 * backend's identity, never the VIP's.
 *
 *   connect4/6     TCP and UDP connect(): VIP -> backend (random slot);
 *                  the socket remembers the VIP (moat_svc_sk) for
 *                  getpeername, and a UDP socket also gets a reverse entry.
 *   sendmsg4/6     unconnected UDP sendto(): VIP -> backend (the slot is a
 *                  hash of the socket cookie, so one socket keeps talking to
 *                  one backend while the backend set is unchanged); a
 *                  reverse entry (moat_svc_rnat) maps (socket, backend) back.
 *   recvmsg4/6     UDP recvfrom(): a datagram from a backend the socket
 *                  sent to through a VIP appears to come from the VIP.
 *   getpeername4/6 a translated connected socket's peer is the VIP.
 *
 * Scope: the programs are attached to a cgroup v2 directory that may hold
 * every socket of the host (a controller-less hierarchy's root). They only
 * translate sockets whose network namespace is in moat_svc_ns (the local
 * endpoints' netns cookies, written by the agent); the host's own sockets
 * and other agents' endpoints are untouched (kube-proxy serves them).
 *
 * A VIP with no ready backend (count 0) refuses connect() and sendmsg()
 * with ECONNREFUSED. Session affinity is not implemented.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "svc.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keeps the shared types in BTF for bpf2go -type; never read. */
const struct svc_key *const moat_svc_key_type __attribute__((unused)) = 0;
const struct svc_val *const moat_svc_val_type __attribute__((unused)) = 0;
const struct svc_be_key *const moat_svc_be_key_type __attribute__((unused)) = 0;
const struct svc_addr *const moat_svc_addr_type __attribute__((unused)) = 0;
const struct svc_rnat_key *const moat_svc_rnat_key_type __attribute__((unused)) = 0;
const struct svc_stats *const moat_svc_stats_type __attribute__((unused)) = 0;

#define ECONNREFUSED 111

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	__uint(max_entries, 16384);
	/* Updated in place: RCU-freed elements, so a reader never sees a
	 * value half overwritten. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_be_key);
	__type(value, struct svc_addr);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_svc_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct svc_rnat_key);
	__type(value, struct svc_addr);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_svc_rnat SEC(".maps");

/* Network namespace cookies of the sockets to translate -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_svc_ns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct svc_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_svc_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct svc_stats);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_svc_stats SEC(".maps");

static __always_inline struct svc_stats *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&moat_svc_stats, &zero);
}

static __always_inline int in_scope(struct bpf_sock_addr *ctx)
{
	__u64 ns = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&moat_svc_ns, &ns) != 0;
}

static __always_inline void v4_mapped(__u32 *addr, __u32 ip4)
{
	addr[0] = 0;
	addr[1] = 0;
	addr[2] = bpf_htonl(0xffff);
	addr[3] = ip4;
}

static __always_inline int is_v4_mapped(const __u32 *addr)
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff);
}

static __always_inline void read_ctx_addr(struct bpf_sock_addr *ctx, int v6, __u32 *addr)
{
	if (!v6) {
		v4_mapped(addr, ctx->user_ip4);
		return;
	}
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
}

/* write_ctx_addr returns 0 when the address does not fit the family (an
 * IPv6 backend behind an IPv4 VIP: the agent never writes that). */
static __always_inline int write_ctx_addr(struct bpf_sock_addr *ctx, int v6, const struct svc_addr *a)
{
	if (!v6) {
		if (!is_v4_mapped(a->addr))
			return 0;
		ctx->user_ip4 = a->addr[3];
	} else {
		ctx->user_ip6[0] = a->addr[0];
		ctx->user_ip6[1] = a->addr[1];
		ctx->user_ip6[2] = a->addr[2];
		ctx->user_ip6[3] = a->addr[3];
	}
	ctx->user_port = (__u32)a->port;
	return 1;
}

static __always_inline int same_addr(const struct svc_addr *a, const __u32 *addr, __u16 port)
{
	return a->port == port && a->addr[0] == addr[0] && a->addr[1] == addr[1] && a->addr[2] == addr[2] &&
	       a->addr[3] == addr[3];
}

/*
 * pick looks up the frontend the context addresses and picks a backend:
 * slot random (connect) or hashed from the socket cookie (sendmsg). It
 * returns 1 with *be set, 0 when the destination is no frontend, -1 when
 * the frontend has no backend.
 */
static __always_inline int pick(struct bpf_sock_addr *ctx, int v6, int hashed, struct svc_addr *vip,
				struct svc_addr *be, struct svc_stats *st)
{
	struct svc_key key = {};
	struct svc_be_key bk = {};
	struct svc_val *sv;
	struct svc_addr *b;
	__u32 sel;
	int i;

	read_ctx_addr(ctx, v6, key.addr);
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)ctx->protocol;
	sv = bpf_map_lookup_elem(&moat_svc, &key);
	if (!sv)
		return 0;
	__builtin_memcpy(vip->addr, key.addr, sizeof(key.addr));
	vip->port = key.port;
	vip->pad = 0;
	sel = hashed ? (__u32)bpf_get_socket_cookie(ctx) : bpf_get_prandom_u32();
	/* Twice: a concurrent shrink may remove the slot between reading the
	 * count and reading the slot; the second look reads the new count. */
	for (i = 0; i < 2; i++) {
		__u16 count = sv->count;

		if (count == 0) {
			if (st)
				st->refused++;
			return -1;
		}
		bk.id = sv->id;
		bk.slot = sel % count;
		b = bpf_map_lookup_elem(&moat_svc_be, &bk);
		if (b) {
			*be = *b;
			return 1;
		}
		if (st)
			st->missing_slot++;
		sv = bpf_map_lookup_elem(&moat_svc, &key);
		if (!sv)
			return 0;
	}
	return 0;
}

static __always_inline void remember_rnat(struct bpf_sock_addr *ctx, const struct svc_addr *vip,
					  const struct svc_addr *be)
{
	struct svc_rnat_key rk = {};
	struct svc_addr *cur;

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, sizeof(rk.addr));
	rk.port = be->port;
	cur = bpf_map_lookup_elem(&moat_svc_rnat, &rk);
	if (cur && same_addr(cur, vip->addr, vip->port))
		return; /* the common case of a UDP socket sending again */
	bpf_map_update_elem(&moat_svc_rnat, &rk, vip, BPF_ANY);
}

static __always_inline int refuse(struct bpf_sock_addr *ctx)
{
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

static __always_inline int do_connect(struct bpf_sock_addr *ctx, int v6)
{
	struct svc_stats *st;
	struct svc_addr vip, be;
	struct svc_sock *ss;
	struct bpf_sock *sk;
	int r;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	if (!in_scope(ctx))
		return 1;
	st = stats();
	r = pick(ctx, v6, 0, &vip, &be, st);
	if (r == 0)
		return 1;
	if (r < 0)
		return refuse(ctx);
	if (!write_ctx_addr(ctx, v6, &be))
		return 1;
	if (st)
		st->translated++;
	sk = ctx->sk;
	if (sk) {
		ss = bpf_sk_storage_get(&moat_svc_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (ss) {
			ss->vip = vip;
			ss->backend = be;
		}
	}
	if (ctx->protocol == IPPROTO_UDP)
		remember_rnat(ctx, &vip, &be);
	return 1;
}

static __always_inline int do_sendmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct svc_stats *st;
	struct svc_addr vip, be;
	int r;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	if (!in_scope(ctx))
		return 1;
	st = stats();
	r = pick(ctx, v6, 1, &vip, &be, st);
	if (r == 0)
		return 1;
	if (r < 0)
		return refuse(ctx);
	if (!write_ctx_addr(ctx, v6, &be))
		return 1;
	if (st)
		st->translated++;
	remember_rnat(ctx, &vip, &be);
	return 1;
}

static __always_inline int do_recvmsg(struct bpf_sock_addr *ctx, int v6)
{
	struct svc_rnat_key rk = {};
	struct svc_stats *st;
	struct svc_addr *vip;

	if (!in_scope(ctx))
		return 1;
	rk.cookie = bpf_get_socket_cookie(ctx);
	read_ctx_addr(ctx, v6, rk.addr);
	rk.port = (__u16)ctx->user_port;
	vip = bpf_map_lookup_elem(&moat_svc_rnat, &rk);
	if (!vip)
		return 1;
	if (!write_ctx_addr(ctx, v6, vip))
		return 1;
	st = stats();
	if (st)
		st->rev_nat++;
	return 1;
}

static __always_inline int do_getpeername(struct bpf_sock_addr *ctx, int v6)
{
	struct svc_stats *st;
	struct svc_sock *ss;
	struct bpf_sock *sk;
	__u32 addr[4];

	sk = ctx->sk;
	if (!sk)
		return 1;
	ss = bpf_sk_storage_get(&moat_svc_sk, sk, 0, 0);
	if (!ss)
		return 1;
	read_ctx_addr(ctx, v6, addr);
	if (!same_addr(&ss->backend, addr, (__u16)ctx->user_port))
		return 1; /* reconnected elsewhere since */
	if (!write_ctx_addr(ctx, v6, &ss->vip))
		return 1;
	st = stats();
	if (st)
		st->peer++;
	return 1;
}

SEC("cgroup/connect4")
int moat_connect4(struct bpf_sock_addr *ctx) { return do_connect(ctx, 0); }

SEC("cgroup/connect6")
int moat_connect6(struct bpf_sock_addr *ctx) { return do_connect(ctx, 1); }

SEC("cgroup/sendmsg4")
int moat_sendmsg4(struct bpf_sock_addr *ctx) { return do_sendmsg(ctx, 0); }

SEC("cgroup/sendmsg6")
int moat_sendmsg6(struct bpf_sock_addr *ctx) { return do_sendmsg(ctx, 1); }

SEC("cgroup/recvmsg4")
int moat_recvmsg4(struct bpf_sock_addr *ctx) { return do_recvmsg(ctx, 0); }

SEC("cgroup/recvmsg6")
int moat_recvmsg6(struct bpf_sock_addr *ctx) { return do_recvmsg(ctx, 1); }

SEC("cgroup/getpeername4")
int moat_getpeer4(struct bpf_sock_addr *ctx) { return do_getpeername(ctx, 0); }

SEC("cgroup/getpeername6")
int moat_getpeer6(struct bpf_sock_addr *ctx) { return do_getpeername(ctx, 1); }
