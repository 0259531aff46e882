/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * moat Service translation (sockaddr.c): types shared with the Go loader
 * through bpf2go. Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one map serves both families and a dual-stack IPv6
 * socket that connects to ::ffff:<VIP> finds the IPv4 Service. Ports are in
 * network byte order, as the sock_addr context holds them. Laid out without
 * implicit padding.
 */
#ifndef MOAT_SVC_H
#define MOAT_SVC_H

#include <linux/types.h>

/* A Service frontend: VIP, port and protocol (IPPROTO_TCP/UDP). */
struct svc_key {
	__u32 addr[4];
	__u16 port; /* network order */
	__u8 proto;
	__u8 pad;
};

/*
 * A frontend's backends are the moat_svc_be entries (id, 0..count-1). The
 * agent writes new slots before it raises count and deletes slots only
 * after it lowered count, so a reader never picks a slot that was never
 * written. count 0: the Service has no ready backend; connect and sendmsg
 * fail (ECONNREFUSED). rev counts the frontend's updates (for inspection).
 */
struct svc_val {
	__u32 id;
	__u16 count;
	__u16 flags;
	__u32 rev;
};

struct svc_be_key {
	__u32 id;
	__u32 slot;
};

/* An address and port: a backend, or a VIP for reverse translation. */
struct svc_addr {
	__u32 addr[4];
	__u16 port; /* network order */
	__u16 pad;
};

/* UDP reverse translation: (socket, backend) -> the VIP the app sent to. */
struct svc_rnat_key {
	__u64 cookie; /* socket cookie */
	__u32 addr[4];
	__u16 port; /* network order */
	__u16 pad;
	__u32 pad2;
};

/* Per-socket record of a connect() that was translated (getpeername). */
struct svc_sock {
	struct svc_addr vip;
	struct svc_addr backend;
};

/* Counters, one per-CPU slot. */
struct svc_stats {
	__u64 translated;   /* connect/sendmsg rewritten to a backend */
	__u64 refused;      /* connect/sendmsg to a VIP with no backend */
	__u64 missing_slot; /* a slot below count was not there (retried once) */
	__u64 rev_nat;      /* recvmsg source rewritten to the VIP */
	__u64 peer;         /* getpeername rewritten to the VIP */
};

#endif
