/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * moat XDP prefilter (xdp.c): types shared with the Go loader through
 * bpf2go. Laid out without implicit padding.
 */
#ifndef MOAT_PREFILTER_H
#define MOAT_PREFILTER_H

#include <linux/types.h>

/*
 * Deny list: LPM trie over a 128-bit source address. IPv4 is stored
 * IPv4-mapped (::ffff:a.b.c.d) with prefixlen 96 + the IPv4 prefix length,
 * like moat_ipcache.
 */
struct prefilter_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The value is the prefix's counter slot in moat_pf_stats (0 = global). */
struct prefilter_val {
	__u32 slot;
};

struct prefilter_stats {
	__u64 packets;
	__u64 bytes;
};

#define PREFILTER_SLOT_TOTAL 0

#endif /* MOAT_PREFILTER_H */
