/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * moat TCP health (sockops.c): types shared with the Go loader through
 * bpf2go. Laid out without implicit padding.
 */
#ifndef MOAT_TCP_H
#define MOAT_TCP_H

#include <linux/types.h>

/* TCP event kinds. */
#define TCP_EV_SYN_TIMEOUT 1 /* a SYN went unanswered for syn_timeout_ns */
#define TCP_EV_RETRANSMIT 2  /* retransmissions on a flow (sampled) */
#define TCP_EV_RTT 3         /* an RTT sample (sampled) */
#define TCP_EV_RESET 4       /* a connection was aborted (RST sent or received) */
#define TCP_EV_ESTABLISHED 5 /* the handshake completed */
#define TCP_EV_CLOSED 6      /* an established connection closed */
#define TCP_EV_REFUSED 7     /* a connect attempt was answered by an RST */

/* TCP event flags. */
#define TCP_EVF_ACTIVE (1 << 0) /* this host opened the connection */

/* Per-socket state, in socket-local storage. */
struct tcp_sock_state {
	__u64 connect_ns;     /* TCP_CONNECT_CB (active) */
	__u64 established_ns; /* handshake completed */
	__u64 last_rtt_ns;    /* last RTT event */
	__u64 last_retrans_ns; /* last retransmit event */
	__u32 retransmits;    /* RETRANS_CB calls seen */
	__u32 rtos;           /* RTO_CB calls seen */
	__u8 active;
	__u8 syn_timeout_sent;
	__u8 pad[6];
};

struct tcp_event {
	__u64 timestamp_ns;
	__u64 cookie;       /* socket cookie */
	__u64 duration_ns;  /* CLOSED/RESET: since established; SYN_TIMEOUT/REFUSED: since connect */
	__u64 bytes_acked;  /* bytes sent and acknowledged */
	__u64 bytes_received;
	__u32 srtt_us;      /* smoothed RTT */
	__u32 rtt_us;       /* RTT: this sample */
	__u32 total_retrans; /* the kernel's retransmitted segments count */
	__u32 rtos;         /* RTO expiries seen */
	__u32 segs_in;
	__u32 segs_out;
	__u8 saddr[16];     /* local address; IPv4-mapped for IPv4 */
	__u8 daddr[16];     /* remote address */
	__u16 sport;        /* local port, host order */
	__u16 dport;        /* remote port, host order */
	__u8 kind;
	__u8 family;        /* 4 or 6 */
	__u8 old_state;     /* state change events: BPF_TCP_* */
	__u8 new_state;
	__u8 flags;
	__u8 pad[7];
};

struct tcp_event_stats {
	__u64 emitted;
	__u64 rate_limited;
	__u64 ringbuf_full;
};

#endif /* MOAT_TCP_H */
