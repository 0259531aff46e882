// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * moat TCP health: a cgroup sock_ops program that watches the TCP sockets of
 * the cgroup it is attached to (and its descendants) and reports, through
 * the moat_tcp_events ringbuf (token bucket per CPU, like moat_events):
 *
 *   SYN_TIMEOUT  an active open whose SYN went unanswered for syn_timeout_ns:
 *                reported once, on the first SYN RTO past the timeout or
 *                when the socket closes still in SYN_SENT.
 *   REFUSED      an active open that closed from SYN_SENT before the
 *                timeout (in practice: an RST answered the SYN).
 *   RETRANSMIT   retransmissions of an established flow; at most one event
 *                per retrans_interval_ns per socket.
 *   RTT          an RTT sample of a synchronized connection; at most one
 *                per rtt_interval_ns per socket (the handshake's RTT is in
 *                the ESTABLISHED event).
 *   RESET        an established connection went to CLOSE without the FIN
 *                handshake (ESTABLISHED, SYN_RECV or CLOSE_WAIT -> CLOSE):
 *                an RST was received, or the socket was aborted (SO_LINGER
 *                0, or the kernel gave up retransmitting). The sock_ops
 *                interface does not say which side sent the RST.
 *   ESTABLISHED  the handshake completed (active or passive).
 *   CLOSED       an established connection closed normally, with duration,
 *                bytes and retransmissions.
 *
 * Per-socket state lives in socket-local storage (moat_tcp_sk), freed with
 * the socket. The program never changes a socket's behaviour: it returns 1
 * and sets no reply.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "tcp.h"
#include "ratelimit.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keeps struct tcp_event in BTF for bpf2go -type; never read. */
const struct tcp_event *const moat_tcp_event_type __attribute__((unused)) = 0;

/* Load-time configuration, set through CollectionSpec.Variables. */
volatile const __u32 tcp_events_rate = 1000; /* events per second per CPU; 0 = unlimited */
volatile const __u32 tcp_events_burst = 200;
volatile const __u64 syn_timeout_ns = 1000000000ULL;
volatile const __u64 rtt_interval_ns = 1000000000ULL;
volatile const __u64 retrans_interval_ns = 1000000000ULL;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcp_sock_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_tcp_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_tcp_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct token_bucket);
	__uint(max_entries, 1);
} moat_tcp_limit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct tcp_event_stats);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_tcp_stats SEC(".maps");

static __always_inline int tcp_event_allowed(struct tcp_event_stats *st, __u64 now)
{
	__u32 zero = 0;
	struct token_bucket *b;

	if (tcp_events_rate == 0)
		return 1;
	b = bpf_map_lookup_elem(&moat_tcp_limit, &zero);
	if (!b)
		return 0;
	if (token_take(b, now, tcp_events_rate, tcp_events_burst))
		return 1;
	if (st)
		st->rate_limited++;
	return 0;
}

static __always_inline void set_addr(__u8 *dst, __u32 family, __u32 v4, const __u32 *v6)
{
	if (family == 2 /* AF_INET */) {
		__builtin_memset(dst, 0, 10);
		dst[10] = 0xff;
		dst[11] = 0xff;
		__builtin_memcpy(dst + 12, &v4, 4);
		return;
	}
	__builtin_memcpy(dst, v6, 16);
}

static __always_inline void emit(struct bpf_sock_ops *skops, struct tcp_sock_state *s, __u8 kind, __u64 now,
				 __u64 since, __u32 rtt_us, __u8 old_state, __u8 new_state)
{
	__u32 zero = 0;
	struct tcp_event_stats *st;
	struct tcp_event *ev;
	__u32 family = skops->family;
	__u32 v6[4];

	st = bpf_map_lookup_elem(&moat_tcp_stats, &zero);
	if (!tcp_event_allowed(st, now))
		return;
	ev = bpf_ringbuf_reserve(&moat_tcp_events, sizeof(*ev), 0);
	if (!ev) {
		if (st)
			st->ringbuf_full++;
		return;
	}
	ev->timestamp_ns = now;
	ev->cookie = bpf_get_socket_cookie(skops);
	ev->duration_ns = since && now > since ? now - since : 0;
	ev->bytes_acked = skops->bytes_acked;
	ev->bytes_received = skops->bytes_received;
	ev->srtt_us = skops->srtt_us >> 3;
	ev->rtt_us = rtt_us;
	ev->total_retrans = skops->total_retrans;
	ev->rtos = s ? s->rtos : 0;
	ev->segs_in = skops->segs_in;
	ev->segs_out = skops->segs_out;
	v6[0] = skops->local_ip6[0];
	v6[1] = skops->local_ip6[1];
	v6[2] = skops->local_ip6[2];
	v6[3] = skops->local_ip6[3];
	set_addr(ev->saddr, family, skops->local_ip4, v6);
	v6[0] = skops->remote_ip6[0];
	v6[1] = skops->remote_ip6[1];
	v6[2] = skops->remote_ip6[2];
	v6[3] = skops->remote_ip6[3];
	set_addr(ev->daddr, family, skops->remote_ip4, v6);
	ev->sport = skops->local_port;
	ev->dport = bpf_ntohl(skops->remote_port);
	ev->kind = kind;
	ev->family = family == 2 ? 4 : 6;
	ev->old_state = old_state;
	ev->new_state = new_state;
	ev->flags = s && s->active ? TCP_EVF_ACTIVE : 0;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	bpf_ringbuf_submit(ev, 0);
	if (st)
		st->emitted++;
}

static __always_inline struct tcp_sock_state *sk_state(struct bpf_sock_ops *skops, int create)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return 0;
	return bpf_sk_storage_get(&moat_tcp_sk, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

static __always_inline void enable_callbacks(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
						 BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG |
						 BPF_SOCK_OPS_RTO_CB_FLAG);
}

static __always_inline void on_state(struct bpf_sock_ops *skops, __u64 now)
{
	__u32 old = skops->args[0], new = skops->args[1];
	struct tcp_sock_state *s;

	if (new != BPF_TCP_CLOSE)
		return;
	s = sk_state(skops, 0);
	if (!s)
		return; /* a socket we did not see open */
	switch (old) {
	case BPF_TCP_SYN_SENT:
		if (s->syn_timeout_sent)
			return;
		if (now - s->connect_ns >= syn_timeout_ns || s->rtos > 0)
			emit(skops, s, TCP_EV_SYN_TIMEOUT, now, s->connect_ns, 0, old, new);
		else
			emit(skops, s, TCP_EV_REFUSED, now, s->connect_ns, 0, old, new);
		return;
	case BPF_TCP_ESTABLISHED:
	case BPF_TCP_SYN_RECV:
	case BPF_TCP_CLOSE_WAIT:
		emit(skops, s, TCP_EV_RESET, now, s->established_ns, 0, old, new);
		return;
	default:
		if (s->established_ns)
			emit(skops, s, TCP_EV_CLOSED, now, s->established_ns, 0, old, new);
	}
}

SEC("sockops")
int moat_sockops(struct bpf_sock_ops *skops)
{
	__u64 now = bpf_ktime_get_ns();
	struct tcp_sock_state *s;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		s = sk_state(skops, 1);
		if (s) {
			s->connect_ns = now;
			s->active = 1;
		}
		enable_callbacks(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		s = sk_state(skops, 1);
		if (s) {
			s->established_ns = now;
			s->active = skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB;
		}
		enable_callbacks(skops);
		emit(skops, s, TCP_EV_ESTABLISHED, now, s ? s->connect_ns : 0, skops->srtt_us >> 3, 0, BPF_TCP_ESTABLISHED);
		break;
	case BPF_SOCK_OPS_RTO_CB:
		s = sk_state(skops, 0);
		if (!s)
			break;
		s->rtos++;
		if (skops->state == BPF_TCP_SYN_SENT && !s->syn_timeout_sent && s->connect_ns &&
		    now - s->connect_ns >= syn_timeout_ns) {
			s->syn_timeout_sent = 1;
			emit(skops, s, TCP_EV_SYN_TIMEOUT, now, s->connect_ns, 0, BPF_TCP_SYN_SENT, BPF_TCP_SYN_SENT);
		}
		break;
	case BPF_SOCK_OPS_RETRANS_CB:
		s = sk_state(skops, 0);
		if (!s)
			break;
		s->retransmits++;
		if (skops->state == BPF_TCP_SYN_SENT || skops->state == BPF_TCP_SYN_RECV)
			break; /* reported as SYN_TIMEOUT */
		if (s->last_retrans_ns && now - s->last_retrans_ns < retrans_interval_ns)
			break;
		s->last_retrans_ns = now;
		emit(skops, s, TCP_EV_RETRANSMIT, now, s->established_ns, 0, skops->state, skops->state);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		if (skops->state == BPF_TCP_SYN_SENT)
			break; /* the handshake RTT goes with ESTABLISHED */
		s = sk_state(skops, 0);
		if (!s)
			break;
		if (s->last_rtt_ns && now - s->last_rtt_ns < rtt_interval_ns)
			break;
		s->last_rtt_ns = now;
		emit(skops, s, TCP_EV_RTT, now, s->established_ns, skops->args[0], skops->state, skops->state);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		on_state(skops, now);
		break;
	}
	return 1;
}
