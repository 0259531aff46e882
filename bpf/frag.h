/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: the ports of fragmented datagrams (see struct frag_key). */
#ifndef MOAT_FRAG_H
#define MOAT_FRAG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "moat.h"
#include "maps.h"
#include "parse.h"

static __always_inline void frag_key_of(const struct pkt *p, struct frag_key *k)
{
	__builtin_memcpy(k->saddr, p->key.saddr, 16);
	__builtin_memcpy(k->daddr, p->key.daddr, 16);
	k->id = p->frag_id;
	k->proto = p->key.proto;
	k->pad[0] = 0;
	k->pad[1] = 0;
	k->pad[2] = 0;
}

/*
 * frag_remember records the ports of a first fragment for the fragments
 * that follow it. Both hooks a datagram passes write the same value. A
 * forged first fragment only names the ports the receiver's reassembly
 * will take from it too, so the later fragments are policied as the
 * datagram the receiver sees.
 */
static __noinline void frag_remember(const struct pkt *p)
{
	struct frag_key k;
	struct frag_val v = {
		.sport = p->key.sport,
		.dport = p->key.dport,
		.policy_port = p->policy_port,
	};

	frag_key_of(p, &k);
	bpf_map_update_elem(&moat_frags, &k, &v, BPF_ANY);
}

/*
 * frag_recall gives a later fragment the ports of its datagram when its
 * first fragment was seen; it returns 0 when it was not (lost, reordered,
 * or evicted), and the fragment stays portless.
 */
static __noinline int frag_recall(struct pkt *p)
{
	struct frag_key k;
	struct frag_val *v;

	frag_key_of(p, &k);
	v = bpf_map_lookup_elem(&moat_frags, &k);
	if (!v)
		return 0;
	p->key.sport = v->sport;
	p->key.dport = v->dport;
	p->policy_port = v->policy_port;
	return 1;
}

#endif /* MOAT_FRAG_H */
