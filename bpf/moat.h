/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * moat datapath: types shared by the programs and, through bpf2go, by the Go
 * loader in datapath/. Every struct is laid out without implicit padding so
 * that the Go side can encode keys byte for byte.
 */
#ifndef MOAT_H
#define MOAT_H

#include <linux/types.h>

/* Directions, relative to the local endpoint (same values as policy.Direction). */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Verdicts (same values as policy.Verdict); larger wins. */
#define VERDICT_NONE 0
#define VERDICT_ALLOW 1
#define VERDICT_REDIRECT 2
#define VERDICT_DENY 3

/* Reserved identities. */
#define ID_ANY 0
#define ID_WORLD 2

/*
 * Marks (Go: policy/marks.go): one magic nibble (mark & 0x0F00).
 *   0x0200  to-proxy, proxy port in the upper 16 bits.
 *   0x0A00  leaving the ingress proxy, source identity packed.
 *   0x0B00  leaving the egress proxy, source identity packed.
 * Identity packing (28 bits): id[0:16] -> mark[16:32], id[16:24] -> mark[0:8],
 * id[24:28] -> mark[12:16].
 */
#define MARK_MAGIC_MASK 0x0F00
#define MARK_TO_PROXY 0x0200
#define MARK_FROM_INGRESS_PROXY 0x0A00
#define MARK_FROM_EGRESS_PROXY 0x0B00

/* Endpoint config flags. */
#define EP_F_INGRESS_ENFORCED (1 << 0)
#define EP_F_EGRESS_ENFORCED (1 << 1)
#define EP_F_INGRESS_ENTRIES (1 << 2)
#define EP_F_EGRESS_ENTRIES (1 << 3)
/*
 * Entry shapes: which of the four lookups of policy_eval can match, per
 * direction (ingress bits 4-7, egress bits 8-11), valid when EP_F_SHAPES is
 * set (else every lookup is made).
 */
#define EP_F_SHAPES_INGRESS_SHIFT 4
#define EP_F_SHAPES_EGRESS_SHIFT 8
#define SHAPE_L3_L4 (1 << 0)   /* identity and protocol */
#define SHAPE_L3_ONLY (1 << 1) /* identity, any protocol */
#define SHAPE_L4_ONLY (1 << 2) /* any identity, protocol */
#define SHAPE_ALL (1 << 3)     /* any identity, any protocol */
#define EP_F_SHAPES (1 << 12)
/*
 * The direction has port-range entries in the trie (valid with EP_F_SHAPES;
 * without them the trie is not looked up).
 */
#define EP_F_INGRESS_RANGES (1 << 13)
#define EP_F_EGRESS_RANGES (1 << 14)

/* Event kinds. */
#define EV_DROP 1
#define EV_VERDICT 2
#define EV_TO_PROXY 3

/* Drop reasons. */
#define DROP_POLICY_DENIED 1    /* no entry allows it, direction enforced */
#define DROP_POLICY_DENY 2      /* an explicit deny entry matched */
#define DROP_PROXY_UNAVAILABLE 3 /* redirect without a proxy listener */
#define DROP_CT_INVALID 4       /* cannot hand a mid-stream flow to a proxy (also: a
                                 * tracked flow whose re-check now redirects) */
#define DROP_MALFORMED 5        /* truncated or unparsable headers */
#define DROP_NO_ENDPOINT 6      /* program attached to an unknown interface */
#define DROP_UNSUPPORTED 7      /* a non-first fragment whose first fragment was not seen and
                                 * that no all-ports entry allows, a fragment of a proxied
                                 * flow, or an IPv6 extension header chain too long to follow */

/* Policy match types of a verdict. */
#define MATCH_NONE 0
#define MATCH_L3_ONLY 1 /* identity, any protocol */
#define MATCH_L3_L4 2   /* identity and protocol/port */
#define MATCH_L4_ONLY 3 /* any identity, protocol/port */
#define MATCH_ALL 4     /* any identity, any protocol */

/* Event flags. */
#define EVF_REPLY (1 << 0)
#define EVF_FROM_PROXY (1 << 1)

/*
 * ipcache: LPM trie over a 128-bit address. IPv4 addresses are stored
 * IPv4-mapped (::ffff:a.b.c.d) with prefixlen 96 + IPv4 prefix length.
 */
struct ipcache_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Host entries (/32, /128) of the ipcache: an exact match, looked up first. */
struct ipcache_host_key {
	__u8 addr[16];
};

struct ipcache_val {
	__u32 identity;
	__u32 flags;
};

/*
 * Policy entries live in two maps, and an entry is in exactly one of them:
 *
 *   moat_policy_h  hash: entries for one port (or ICMP type) and entries for
 *                  every port (all_ports set, dport 0); most policies have
 *                  only these, and a lookup is one hash probe.
 *   moat_policy    LPM trie: the prefix-aligned port blocks of real ranges
 *                  (more than one port, fewer than all), keyed by endpoint,
 *                  remote identity (big endian), direction, protocol, then
 *                  the destination port (big endian) as the prefix tail.
 *                  Every field but the port is matched fully:
 *                  POLICY_PREFIX_STATIC bits.
 *
 * The entries of one (endpoint, direction, identity, protocol) never
 * overlap (the Plan's contract), so at most one entry of the two maps
 * matches a packet per lookup shape.
 */
struct policy_hkey {
	__u32 endpoint;
	__u32 identity; /* big endian */
	__u8 direction;
	__u8 proto;
	__u16 dport; /* big endian; 0 with all_ports */
	__u8 all_ports;
	__u8 pad[3];
};

struct policy_key {
	__u32 prefixlen;
	__u32 endpoint;
	__u32 identity; /* big endian */
	__u8 direction;
	__u8 proto;
	__u16 dport; /* big endian */
};

#define POLICY_PREFIX_STATIC 80
#define POLICY_PREFIX_FULL 96

struct policy_val {
	__u8 verdict;
	__u8 l7;
	__u16 proxy_port; /* host order; 0 = no proxy (fail closed) */
	__u32 rule;       /* index into moat_rule_stats; 0 = none */
};

/* Per-endpoint config, keyed by the host-side veth's ifindex. */
struct endpoint_config {
	__u32 identity;
	__u32 flags;
	__u32 ingress_rev; /* bumped when the ingress entries change */
	__u32 egress_rev;
	__u32 slot; /* counter slot in moat_ep_stats, see EP_STATS_INDEX */
};

/*
 * A packet's 5-tuple as parsed (saddr/sport = the sender), with the hook's
 * direction and endpoint; and, with the tuple in canonical order, the key
 * of moat_ct. Addresses are IPv4-mapped for IPv4. ICMP echo: the
 * identifier is sport for requests, dport for replies.
 *
 * Connection tracking keeps one entry per flow and endpoint for both of
 * its directions: the key holds the tuple with the lower (address, port)
 * side first and direction 0, so that a flow's packets and its replies
 * find the entry with one lookup. The entry's CT_F_ORIG_* flags record how
 * the flow's first packet looked (its hook's direction, and whether its
 * sender was the higher side), which tells a reply from the flow's own
 * direction (see ct_relation in ct.h).
 */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* big endian */
	__u16 dport; /* big endian */
	__u8 proto;
	__u8 direction; /* 0 in moat_ct keys */
	__u16 pad;
	__u32 endpoint;
};

/*
 * Fragment tracking: the first fragment of a fragmented datagram (offset 0,
 * more fragments) leaves the datagram's ports in moat_frags under its
 * (addresses, protocol, IP identification); the later fragments, which
 * carry no L4 header, find them there and are policied as packets of that
 * flow.
 */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id; /* IPv4: the 16-bit identification; IPv6: the fragment header's */
	__u8 proto;
	__u8 pad[3];
};

struct frag_val {
	__u16 sport; /* big endian */
	__u16 dport; /* big endian */
	__u16 policy_port;
	__u16 pad;
};

#define CT_F_REPLY_SEEN (1 << 0)
#define CT_F_CLOSING (1 << 1)
#define CT_F_FROM_PROXY (1 << 2)
/* (1 << 3) is CT_F_TO_INGRESS_PROXY, see proxy.h */
#define CT_F_ORIG_EGRESS (1 << 6)  /* the first packet was seen leaving the endpoint */
#define CT_F_ORIG_SWAPPED (1 << 7) /* its sender was the key's daddr side */

struct ct_entry {
	__u64 expires; /* CT ticks of the coarse clock, see ct_now */
	__u32 rule;
	__u32 remote_identity;
	__u32 revision;
	__u16 proxy_port;
	__u8 verdict;
	__u8 flags;
	__u8 l7;
	__u8 match;
	__u16 ep_slot; /* the endpoint's counter slot (endpoint_config.slot) */
	__u32 generation; /* moat_generation when last checked against the policy */
};

/*
 * Counters live in per-CPU arrays: an endpoint's at EP_STATS_INDEX(slot,
 * dir), where slot is its endpoint_config.slot (1..EP_SLOTS; 0 collects
 * drops on interfaces without a config), a rule's at its rule index
 * (1..RULE_SLOTS-1; 0 = none, not counted).
 */
#define EP_SLOTS 4096 /* = moat_endpoints' capacity */
#define EP_STATS_INDEX(slot, dir) ((slot) * 2 + (dir))
#define RULE_SLOTS 65536

struct ep_stats {
	__u64 allowed_packets;
	__u64 allowed_bytes;
	__u64 dropped_packets;
	__u64 dropped_bytes;
	__u64 redirected_packets;
	__u64 redirected_bytes;
};

struct rule_stats {
	__u64 packets;
	__u64 bytes;
};

struct event_stats {
	__u64 emitted;
	__u64 rate_limited;
	__u64 ringbuf_full;
};

struct event {
	__u64 timestamp_ns;
	__u32 endpoint;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule;
	__u32 length;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order */
	__u16 dport; /* host order */
	__u16 proxy_port;
	__u8 kind;
	__u8 reason;
	__u8 direction;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u8 verdict;
	__u8 match;
	__u8 l7;
	__u8 tcp_flags;
	__u8 flags;
	__u16 policy_port; /* destination port, or the ICMP type */
	__u16 pad;
};

#endif /* MOAT_H */
