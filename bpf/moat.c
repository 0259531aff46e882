// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * moat datapath: tc programs for an endpoint's host-side veth.
 *
 *   from_endpoint  tc ingress of the host veth: packets leaving the pod,
 *                  enforcing the endpoint's egress policy.
 *   to_endpoint    tc egress of the host veth: packets entering the pod,
 *                  enforcing the endpoint's ingress policy.
 *   from_uplink    tc ingress of the node's uplinks (interfaces towards
 *                  other nodes and the world): hands the replies of the
 *                  proxies' upstream legs to the proxy's socket; enforces
 *                  nothing else and passes every other packet untouched.
 *
 * The endpoint is identified by the host veth's ifindex. A flow's first
 * packet decides its verdict, which connection tracking keeps for the life
 * of the flow in one entry that its packets and its replies both find
 * (ct.h); replies and related ICMP errors pass. When the endpoint's
 * entries change (revision bump), or the ipcache gives the flow's peer
 * another identity, a tracked flow is re-checked once: if the
 * new policy drops it, it is cut; if the new policy sends it to a proxy and
 * it was not, it is cut too (a flow cannot move to a proxy mid-stream: the
 * client reconnects, and the new connection goes through the proxy);
 * otherwise it keeps its verdict.
 *
 * A packet of a tracked flow between two local endpoints that the
 * destination's to_endpoint has let in already goes from from_endpoint
 * straight to the destination's side of its veth (local_delivery), past the
 * host's routing and to_endpoint; a flow's first packet and any packet after
 * a map change take the long way.
 *
 * The proxies' upstream legs keep the client's address: a reply of one,
 * leaving the server's endpoint addressed to the client, is handed to the
 * proxy's socket in the host netns (pass_reply, proxy_return in proxy.h),
 * never routed on to the client. A reply from outside the node (an upstream
 * leg to the world or to another node's pod) arrives on an uplink, where
 * from_uplink does the same.
 *
 * A fragmented datagram's later fragments have no ports: they take those
 * of its first fragment (frag.h) and are then policied like any packet of
 * the flow. One whose first fragment was not seen is decided on its own by
 * the entries that cover every port (decide_fragment).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "moat.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"
#include "ct.h"
#include "events.h"
#include "frag.h"
#include "proxy.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keeps struct event in BTF for bpf2go -type; never read. */
const struct event *const moat_event_type __attribute__((unused)) = 0;

struct ctx {
	struct pkt p;
	struct event_info ev;
	__u64 now; /* CT ticks (ct_now), for CT lifetimes */
	__u32 ep_identity;
	__u32 remote;
	__u16 slot; /* the endpoint's counter slot; 0 until known */
	__u8 dir;
};

static __always_inline void set_identities(struct ctx *c)
{
	if (c->dir == DIR_EGRESS) {
		c->ev.src_identity = c->ep_identity;
		c->ev.dst_identity = c->remote;
	} else {
		c->ev.src_identity = c->remote;
		c->ev.dst_identity = c->ep_identity;
	}
}

static __always_inline int drop(struct ctx *c, __u8 reason)
{
	c->ev.kind = EV_DROP;
	c->ev.reason = reason;
	set_identities(c);
	count_endpoint(c->slot, c->dir, STAT_DROPPED, c->p.len);
	emit_event(&c->p, &c->ev);
	return TC_ACT_SHOT;
}

static __always_inline int pass(struct ctx *c, __u32 rule)
{
	count_endpoint(c->slot, c->dir, STAT_ALLOWED, c->p.len);
	count_rule(rule, c->p.len);
	return TC_ACT_OK;
}

/*
 * bounce_to_ingress hands a packet seen at tc egress of a host veth to the
 * ingress of the host veth ifindex, where from_endpoint assigns it to the
 * proxy socket (bpf_sk_assign only works at ingress). The MAC addresses are
 * swapped (and from_endpoint makes the packet PACKET_HOST) so the host stack
 * accepts the frame as addressed to itself.
 */
static __always_inline int bounce_to_ingress(struct __sk_buff *skb, __u32 ifindex, __u16 port)
{
	__u8 macs[12], swapped[12];

	if (bpf_skb_load_bytes(skb, 0, macs, 12) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, macs + 6, 6);
	__builtin_memcpy(swapped + 6, macs, 6);
	if (bpf_skb_store_bytes(skb, 0, swapped, 12, 0) < 0)
		return TC_ACT_SHOT;
	skb->mark = MARK_TO_PROXY | ((__u32)port << 16);
	return bpf_redirect(ifindex, BPF_F_INGRESS);
}

/*
 * ingress_proxy_hop picks the veth whose ingress assigns an ingress-redirected
 * packet to the proxy. A packet that a local endpoint sent goes back to that
 * endpoint's veth: there reverse-path filtering sees the source on its own
 * link (strict rp_filter drops it anywhere else), and the source's egress CT
 * entry is flagged so that the flow's later packets are assigned there
 * directly (see CT_F_TO_INGRESS_PROXY). Anything else (host, other
 * interfaces) bounces to the destination's own veth, which needs a loose
 * rp_filter.
 */
static __always_inline __u32 ingress_proxy_hop(struct __sk_buff *skb, struct ctx *c, __u16 port)
{
	__u32 src_if = skb->ingress_ifindex, self = c->ev.endpoint;
	struct ct_entry *ct;
	struct ct_key k;
	int swapped;

	if (src_if == 0 || src_if == self || !bpf_map_lookup_elem(&moat_endpoints, &src_if))
		return self;
	swapped = ct_canon(&c->p.key, src_if, &k);
	ct = ct_live(&k, c->now);
	if (ct && ct_relation(ct, DIR_EGRESS, swapped) == CT_FORWARD && ct->verdict != VERDICT_REDIRECT) {
		ct->proxy_port = port;
		ct->flags |= CT_F_TO_INGRESS_PROXY;
	}
	return src_if;
}

/* redirect sends a packet of a redirected flow to the proxy. */
static __always_inline int redirect(struct __sk_buff *skb, struct ctx *c, __u16 port, __u32 rule, int new_flow)
{
	if (c->p.frag_recalled)
		return drop(c, DROP_UNSUPPORTED); /* a proxy socket cannot take a fragment */
	if (port == 0)
		return drop(c, DROP_PROXY_UNAVAILABLE);
	if (c->dir == DIR_INGRESS) {
		/* A new flow needs the listener; a tracked one its own socket. */
		if (new_flow && !proxy_listening(skb, &c->p, port))
			return drop(c, DROP_PROXY_UNAVAILABLE);
		count_endpoint(c->slot, c->dir, STAT_REDIRECTED, c->p.len);
		count_rule(rule, c->p.len);
		return bounce_to_ingress(skb, ingress_proxy_hop(skb, c, port), port);
	}
	if (to_proxy(skb, &c->p, port) < 0) {
		if (new_flow && c->p.key.proto == IPPROTO_TCP && !(c->p.tcp_flags & TCP_FLAG_SYN))
			return drop(c, DROP_CT_INVALID);
		return drop(c, DROP_PROXY_UNAVAILABLE);
	}
	count_endpoint(c->slot, c->dir, STAT_REDIRECTED, c->p.len);
	count_rule(rule, c->p.len);
	return TC_ACT_OK;
}

static __always_inline __u32 ep_enforced(const struct endpoint_config *cfg, __u8 dir)
{
	return cfg->flags & (dir == DIR_EGRESS ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED);
}

static __always_inline __u32 ep_has_entries(const struct endpoint_config *cfg, __u8 dir)
{
	return cfg->flags & (dir == DIR_EGRESS ? EP_F_EGRESS_ENTRIES : EP_F_INGRESS_ENTRIES);
}

/* ep_ranges says whether the direction has port-range entries (in the trie). */
static __always_inline int ep_ranges(const struct endpoint_config *cfg, __u8 dir)
{
	if (!(cfg->flags & EP_F_SHAPES))
		return 1;
	return !!(cfg->flags & (dir == DIR_EGRESS ? EP_F_EGRESS_RANGES : EP_F_INGRESS_RANGES));
}

/* ep_shapes returns the SHAPE_* bits of the direction's entries. */
static __always_inline __u32 ep_shapes(const struct endpoint_config *cfg, __u8 dir)
{
	if (!(cfg->flags & EP_F_SHAPES))
		return SHAPE_L3_L4 | SHAPE_L3_ONLY | SHAPE_L4_ONLY | SHAPE_ALL;
	return (cfg->flags >> (dir == DIR_EGRESS ? EP_F_SHAPES_EGRESS_SHIFT : EP_F_SHAPES_INGRESS_SHIFT)) & 0xf;
}

/*
 * from_ingress_proxy: traffic from the ingress proxy to its endpoint has been
 * through that endpoint's ingress policy already (the redirect that took it
 * to the proxy, then the proxy's L7 rules), so it is never redirected again
 * and needs no allow entry of its own; only an explicit deny still drops it.
 * Its mark may carry identity 0 (unknown: Envoy's ingress cluster cannot
 * know the source per connection, see envoy/cluster.go); the upstream keeps
 * the client's address, so the ipcache names the source (proxy_identity).
 */
static __always_inline void from_ingress_proxy(struct policy_res *res, __u32 from_proxy)
{
	if (from_proxy == MARK_FROM_INGRESS_PROXY && res->verdict != VERDICT_DENY)
		res->verdict = VERDICT_ALLOW;
}

/*
 * proxy_identity returns the source identity of a proxy's packet: the one
 * its mark carries. The ingress proxy's mark may carry 0 (unknown, see
 * from_ingress_proxy); its upstream keeps the client's address, which the
 * ipcache then names.
 */
static __always_inline __u32 proxy_identity(const struct ctx *c, __u32 mark, __u32 from_proxy)
{
	__u32 id = mark_identity(mark);

	if (id == ID_ANY && from_proxy == MARK_FROM_INGRESS_PROXY)
		id = ipcache_identity(c->p.key.saddr);
	return id;
}

/*
 * decide_fragment decides a non-first fragment whose first fragment was
 * not seen, which has no ports and matches no CT entry: an
 * explicit deny for all ports of its protocol drops it, an entry that allows
 * every port passes it, and otherwise, where the direction is enforced, it
 * is dropped as unsupported. (A redirect cannot take a fragment either.)
 * A fragment of a datagram whose first fragment was dropped is harmless:
 * the receiver cannot reassemble it.
 */
static __always_inline int decide_fragment(struct ctx *c, const struct endpoint_config *cfg, __u32 ep, __u32 mark,
					   __u32 from_proxy)
{
	struct policy_res res = {};

	if (from_proxy)
		c->remote = proxy_identity(c, mark, from_proxy);
	else
		c->remote = ipcache_identity(c->dir == DIR_EGRESS ? c->p.key.daddr : c->p.key.saddr);
	if (ep_has_entries(cfg, c->dir))
		policy_eval_any_port(ep, c->dir, c->remote, c->p.key.proto, ep_shapes(cfg, c->dir), &res);
	from_ingress_proxy(&res, from_proxy);
	c->ev.rule = res.rule;
	c->ev.verdict = res.verdict;
	c->ev.match = res.match;
	if (res.verdict == VERDICT_DENY)
		return drop(c, DROP_POLICY_DENY);
	if (res.verdict == VERDICT_ALLOW || (res.verdict == VERDICT_NONE && !ep_enforced(cfg, c->dir)))
		return pass(c, res.rule);
	return drop(c, DROP_UNSUPPORTED);
}

/*
 * local_delivery hands a packet of a tracked flow that leaves an endpoint
 * for another local endpoint straight to the destination's side of its veth
 * (bpf_redirect_peer), past the host's routing and the destination's
 * to_endpoint, when that to_endpoint would only find an entry that lets it
 * in: an allow made by to_endpoint itself at the flow's first packet and
 * checked against the current maps generation (after any change, the
 * packet takes the long way and to_endpoint re-checks the flow). Otherwise
 * it returns TC_ACT_OK and the stack routes the packet as usual. The long
 * way is also taken by:
 *   - a SYN, which may start a flow to be decided;
 *   - a packet whose source address is not the sending endpoint's own:
 *     the destination's entry must not vouch for a spoofed sender (the
 *     routed path has the host's reverse-path filter);
 *   - a fragment, so that all of a datagram's fragments take one path
 *     (the host's defragmenter would hold a lone one);
 *   - a flow the sender's side sends to a proxy or takes from one.
 */
static __always_inline int local_delivery(struct ctx *c, const struct ct_entry *sender, __u32 gen)
{
	struct ct_entry *e;
	struct ct_key k;
	__u32 *peer, *self;
	int swapped, rel;

	if (!local_delivery_on || c->p.frag_first || c->p.frag_recalled)
		return TC_ACT_OK;
	if (tcp_bare_syn(c->p.key.proto, c->p.tcp_flags))
		return TC_ACT_OK;
	if (sender->verdict != VERDICT_ALLOW || (sender->flags & (CT_F_FROM_PROXY | CT_F_TO_INGRESS_PROXY)))
		return TC_ACT_OK;
	peer = bpf_map_lookup_elem(&moat_local_ep, c->p.key.daddr);
	if (!peer)
		return TC_ACT_OK;
	self = bpf_map_lookup_elem(&moat_local_ep, c->p.key.saddr);
	if (!self || *self != c->ev.endpoint)
		return TC_ACT_OK;
	swapped = ct_canon(&c->p.key, *peer, &k);
	e = ct_live(&k, c->now);
	if (!e || e->generation != gen || e->verdict != VERDICT_ALLOW ||
	    (e->flags & (CT_F_FROM_PROXY | CT_F_TO_INGRESS_PROXY)))
		return TC_ACT_OK;
	rel = ct_relation(e, DIR_INGRESS, swapped);
	if (rel == CT_OTHER)
		return TC_ACT_OK;
	ct_touch(e, c->p.key.proto, c->p.tcp_flags, rel == CT_REPLY, c->now);
	count_endpoint(e->ep_slot, DIR_INGRESS, STAT_ALLOWED, c->p.len);
	count_rule(e->rule, c->p.len);
	return bpf_redirect_peer(*peer, 0);
}

/* pass_tracked passes a packet of a tracked flow (the fast path). */
static __always_inline int pass_tracked(struct ctx *c, const struct ct_entry *ct, __u32 gen)
{
	pass(c, ct->rule);
	if (c->dir == DIR_EGRESS)
		return local_delivery(c, ct, gen);
	return TC_ACT_OK;
}

/*
 * struct flow is what handle learns about a packet's flow, phase by phase:
 * its moat_ct key and live entry, the packet's relation to that entry, and
 * the maps' state the decision is checked against.
 */
struct flow {
	struct ct_key ck;        /* the packet's moat_ct key (valid once looked) */
	struct ct_entry *ct;     /* the flow's live entry, or 0 */
	struct ct_entry *reopen; /* a closing entry that a SYN reuses, see ct_flow */
	__u32 mark;              /* skb->mark as the packet arrived */
	__u32 magic;             /* mark & MARK_MAGIC_MASK */
	__u32 gen;               /* the maps' generation */
	__u32 revision;          /* the endpoint's entries revision for the direction */
	__u32 from_proxy;        /* MARK_FROM_*_PROXY at ingress, else 0 */
	int swapped;             /* ct_canon's answer for the packet */
	int rel;                 /* ct_relation of the packet to ct */
	int looked;              /* ct has been looked up */
};

/*
 * Phase 1, classify: parse the packet and settle its fragment state.
 * Invariant: afterwards c->p is the packet's tuple, with the hook's
 * direction and endpoint; a later fragment whose first fragment was seen
 * carries that fragment's ports (frag_recalled) and counts as unfragmented.
 */
static __always_inline int classify(struct __sk_buff *skb, struct ctx *c, __u32 ep)
{
	int ret = parse_packet(skb, &c->p);

	if (ret == PARSE_PASS)
		return ret;
	c->p.key.direction = c->dir;
	c->p.key.endpoint = ep;
	if (ret == PARSE_OK) {
		if (c->p.frag_first)
			frag_remember(&c->p);
		else if (c->p.fragment && frag_recall(&c->p)) {
			c->p.fragment = 0;
			c->p.frag_recalled = 1;
		}
	}
	return ret;
}

/*
 * Phase 2, look up the flow. Invariant: one moat_ct lookup per packet; f->ct
 * is the live entry of the packet's flow (never a closing one that a SYN
 * reopens) and f->rel how the packet relates to it.
 */
static __always_inline void lookup_flow(struct ctx *c, struct flow *f, __u32 ep)
{
	f->swapped = ct_canon(&c->p.key, ep, &f->ck);
	f->ct = ct_flow(&f->ck, c->now, c->p.key.proto, c->p.tcp_flags, &f->reopen);
	f->looked = 1;
	if (f->ct)
		f->rel = ct_relation(f->ct, c->dir, f->swapped);
}

/*
 * pass_reply passes a reply of a tracked flow. A reply of a proxy's
 * upstream leg (an entry made at ingress from a proxy's packet) leaving the
 * server's endpoint goes to the proxy's socket (proxy_return), never on to
 * the client whose address the proxy kept, and never by local delivery.
 * fast says whether the maps' generation was checked (the fast path), which
 * allows local delivery.
 */
static __always_inline int pass_reply(struct __sk_buff *skb, struct ctx *c, struct ct_entry *ct, __u32 gen, int fast)
{
	int ret;

	ct_touch(ct, c->p.key.proto, c->p.tcp_flags, 1, c->now);
	if (c->dir == DIR_EGRESS && (ct->flags & CT_F_FROM_PROXY)) {
		ret = proxy_return(skb, &c->p);
		if (ret < 0)
			return drop(c, DROP_PROXY_UNAVAILABLE);
		return pass(c, ct->rule);
	}
	if (fast)
		return pass_tracked(c, ct, gen);
	return pass(c, ct->rule);
}

/*
 * Phase 3, the fast path. Invariant: a packet passes here only when its
 * flow's entry, checked against the maps' current generation, already lets
 * it through unchanged (a packet in the flow's own direction that neither
 * goes to a proxy nor comes back from one, or a reply); it reads nothing but
 * that entry. Returns -1 when the packet needs the slow path.
 */
static __always_inline int fast_path(struct __sk_buff *skb, struct ctx *c, struct flow *f)
{
	struct ct_entry *ct = f->ct;

	if (!ct || ct->generation != f->gen)
		return -1;
	if (f->rel == CT_FORWARD && ct->verdict != VERDICT_REDIRECT && !(ct->flags & CT_F_TO_INGRESS_PROXY)) {
		ct_touch(ct, c->p.key.proto, c->p.tcp_flags, 0, c->now);
		c->slot = ct->ep_slot;
		return pass_tracked(c, ct, f->gen);
	}
	if (f->rel == CT_REPLY) {
		/* A reply: its flow's entry vouches for the endpoint. */
		c->slot = ct->ep_slot;
		return pass_reply(skb, c, ct, f->gen, 1);
	}
	return -1;
}

/*
 * Phase 5, a packet that to_endpoint bounced to this veth for its ingress
 * proxy (see bounce_to_ingress; the frame may be addressed to another veth:
 * accept it as ours). Invariant: it has been decided already, at the
 * destination's to_endpoint; here it is only assigned to the proxy.
 */
static __always_inline int bounced_to_ingress_proxy(struct __sk_buff *skb, struct ctx *c, __u32 mark)
{
	c->dir = DIR_INGRESS;
	c->ev.direction = DIR_INGRESS;
	if (skb->pkt_type != 0 /* PACKET_HOST */ && bpf_skb_change_type(skb, 0) < 0)
		return drop(c, DROP_PROXY_UNAVAILABLE);
	if (to_proxy(skb, &c->p, mark >> 16) < 0)
		return drop(c, DROP_PROXY_UNAVAILABLE);
	return TC_ACT_OK;
}

/* set_verdict copies a policy result into the packet's event. */
static __always_inline void set_verdict(struct ctx *c, const struct policy_res *res)
{
	c->ev.rule = res->rule;
	c->ev.verdict = res->verdict;
	c->ev.match = res->match;
	c->ev.l7 = res->l7;
	c->ev.proxy_port = res->proxy_port;
}

/*
 * recheck_flow re-checks a tracked flow whose endpoint's entries or peer
 * identity changed since its last check. Invariant: the flow keeps its
 * verdict only if the current policy still lets it through without moving
 * it to a proxy; otherwise its entry is removed and the packet dropped
 * (the client's next connection is decided afresh). Returns -1 when the
 * flow continues, with the entry updated to the rule that lets it through.
 */
static __always_inline int recheck_flow(struct ctx *c, const struct endpoint_config *cfg, struct flow *f, __u32 ep)
{
	struct ct_entry *ct = f->ct;
	struct policy_res res = {};

	if (ep_has_entries(cfg, c->dir))
		policy_eval(ep, c->dir, c->remote, c->p.key.proto, c->p.policy_port, ep_shapes(cfg, c->dir),
			    ep_ranges(cfg, c->dir), &res);
	from_ingress_proxy(&res, f->from_proxy);
	if (res.verdict == VERDICT_DENY || (res.verdict == VERDICT_NONE && ep_enforced(cfg, c->dir))) {
		bpf_map_delete_elem(&moat_ct, &f->ck);
		c->ev.rule = res.rule;
		c->ev.verdict = res.verdict;
		c->ev.match = res.match;
		return drop(c, res.verdict == VERDICT_DENY ? DROP_POLICY_DENY : DROP_POLICY_DENIED);
	}
	if (res.verdict == VERDICT_REDIRECT && ct->verdict != VERDICT_REDIRECT) {
		/* Now for a proxy, which cannot take a flow mid-stream: cut it. */
		bpf_map_delete_elem(&moat_ct, &f->ck);
		set_verdict(c, &res);
		return drop(c, DROP_CT_INVALID);
	}
	ct->revision = f->revision;
	ct->remote_identity = c->remote;
	/* The entry that lets it through now (its old rule may be gone). */
	ct->rule = res.rule;
	return -1;
}

/*
 * Phase 6, a tracked flow in the direction it started (slow path: the maps
 * changed since its last check, or it goes to a proxy). Invariant: the
 * packet gets its flow's verdict, re-checked first if the policy or the
 * peer's identity changed; a flow from a proxy keeps the identity its mark
 * carried.
 */
static __always_inline int tracked_forward(struct __sk_buff *skb, struct ctx *c, const struct endpoint_config *cfg,
					   struct flow *f, __u32 ep)
{
	struct ct_entry *ct = f->ct;
	int ret;

	c->remote = ct->remote_identity;
	/* The ipcache may now give the remote address another identity. */
	if (ct->generation != f->gen && !(ct->flags & CT_F_FROM_PROXY))
		c->remote = ipcache_identity(c->dir == DIR_EGRESS ? c->p.key.daddr : c->p.key.saddr);
	if (ct->revision != f->revision || c->remote != ct->remote_identity) {
		ret = recheck_flow(c, cfg, f, ep);
		if (ret >= 0)
			return ret;
	}
	if (ct->generation != f->gen) {
		ct->generation = f->gen;
		ct->ep_slot = c->slot;
	}
	ct_touch(ct, c->p.key.proto, c->p.tcp_flags, 0, c->now);
	c->ev.rule = ct->rule;
	if (ct->verdict == VERDICT_REDIRECT)
		return redirect(skb, c, ct->proxy_port, ct->rule, 0);
	if (c->dir == DIR_EGRESS && (ct->flags & CT_F_TO_INGRESS_PROXY)) {
		/* The destination's ingress proxy takes this flow. */
		if (c->p.frag_recalled)
			return drop(c, DROP_UNSUPPORTED);
		if (to_proxy(skb, &c->p, ct->proxy_port) < 0)
			return drop(c, DROP_PROXY_UNAVAILABLE);
	}
	return pass(c, ct->rule);
}

/*
 * Phase 8, decide a new flow. Invariant: the verdict comes from the
 * endpoint's entries for the peer's identity (from the ipcache, or from
 * the mark of a proxy's packet); no entry means allow only where the
 * direction is not enforced, and a redirect needs a proxy port. Returns -1
 * with *res set when the flow may go on.
 */
static __always_inline int decide_flow(struct ctx *c, const struct endpoint_config *cfg, struct flow *f, __u32 ep,
				       struct policy_res *res)
{
	if (f->from_proxy)
		c->remote = proxy_identity(c, f->mark, f->from_proxy);
	else
		c->remote = ipcache_identity(c->dir == DIR_EGRESS ? c->p.key.daddr : c->p.key.saddr);
	if (ep_has_entries(cfg, c->dir))
		policy_eval(ep, c->dir, c->remote, c->p.key.proto, c->p.policy_port, ep_shapes(cfg, c->dir),
			    ep_ranges(cfg, c->dir), res);
	from_ingress_proxy(res, f->from_proxy);
	set_verdict(c, res);
	if (res->verdict == VERDICT_DENY)
		return drop(c, DROP_POLICY_DENY);
	if (res->verdict == VERDICT_NONE) {
		if (ep_enforced(cfg, c->dir))
			return drop(c, DROP_POLICY_DENIED);
		res->verdict = VERDICT_ALLOW;
		c->ev.verdict = VERDICT_ALLOW;
	}
	if (res->verdict == VERDICT_REDIRECT && res->proxy_port == 0)
		return drop(c, DROP_PROXY_UNAVAILABLE);
	return -1;
}

/*
 * Phase 9, start tracking a decided flow. Invariant: only a flow's first
 * packet creates a CT entry: for TCP a SYN without ACK. A mid-stream packet
 * is decided on its own and leaves no state, so it can never make the
 * other direction look like a reply; so is a packet whose tuple a live flow
 * of another shape holds (f->ct with CT_OTHER), which must not replace that
 * flow's entry. A SYN on the tuple of a closing flow found no entry
 * (ct_flow): it starts a new flow, whose entry overwrites the old one in
 * place. A redirect that fails removes the entry it made.
 */
static __always_inline int start_flow(struct __sk_buff *skb, struct ctx *c, struct flow *f, const struct policy_res *res)
{
	int ret;

	if (f->ct || (c->p.key.proto == IPPROTO_TCP && !tcp_bare_syn(c->p.key.proto, c->p.tcp_flags))) {
		if (res->verdict == VERDICT_REDIRECT)
			return redirect(skb, c, res->proxy_port, res->rule, 1);
		return pass(c, res->rule);
	}

	struct ct_entry entry = {
		.rule = res->rule,
		.remote_identity = c->remote,
		.revision = f->revision,
		.generation = f->gen,
		.ep_slot = c->slot,
		.proxy_port = res->proxy_port,
		.verdict = res->verdict,
		.l7 = res->l7,
		.match = res->match,
		.flags = (f->from_proxy ? CT_F_FROM_PROXY : 0) | ct_origin(c->dir, f->swapped),
	};
	ct_touch(&entry, c->p.key.proto, c->p.tcp_flags, 0, c->now);
	if (f->reopen)
		*f->reopen = entry;
	else
		bpf_map_update_elem(&moat_ct, &f->ck, &entry, BPF_ANY);

	set_identities(c);
	c->ev.kind = EV_VERDICT;
	emit_event(&c->p, &c->ev);
	if (res->verdict == VERDICT_REDIRECT) {
		ret = redirect(skb, c, res->proxy_port, res->rule, 1);
		if (ret != TC_ACT_SHOT) {
			c->ev.kind = EV_TO_PROXY;
			emit_event(&c->p, &c->ev);
		} else {
			bpf_map_delete_elem(&moat_ct, &f->ck);
		}
		return ret;
	}
	return pass(c, res->rule);
}

/*
 * handle runs the phases in order; each returns a tc verdict, or -1 to
 * hand the packet to the next one:
 *   1 classify          parse, fragment state
 *   2 lookup_flow       the flow's CT entry (once)
 *   3 fast_path         tracked packets that simply pass
 *   4 (endpoint)        the endpoint's config; unparsable packets drop
 *   5 bounced_to_ingress_proxy
 *   6 tracked_forward   tracked flow, slow path (re-check, proxies)
 *   7 (reply, related)  replies and ICMP errors of tracked flows
 *   8 decide_flow       policy for a new flow
 *   9 start_flow        its CT entry, events, redirect
 */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct ctx c = {};
	struct flow f = {};
	struct endpoint_config *cfg;
	struct policy_res res = {};
	__u32 ep = skb->ifindex;
	int ret;

	c.dir = dir;
	c.ev.endpoint = ep;
	c.ev.direction = dir;
	f.mark = skb->mark;
	f.magic = f.mark & MARK_MAGIC_MASK;
	f.rel = CT_OTHER;

	ret = classify(skb, &c, ep);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	c.now = ct_now();
	f.gen = generation();

	if (ret == PARSE_OK && !c.p.fragment && f.magic != MARK_TO_PROXY) {
		lookup_flow(&c, &f, ep);
		ret = fast_path(skb, &c, &f);
		if (ret >= 0)
			return ret;
		ret = PARSE_OK;
	}

	cfg = bpf_map_lookup_elem(&moat_endpoints, &ep);
	if (!cfg)
		return drop(&c, DROP_NO_ENDPOINT);
	c.ep_identity = cfg->identity;
	c.slot = cfg->slot;
	if (ret == PARSE_MALFORMED)
		return drop(&c, DROP_MALFORMED);
	if (ret == PARSE_UNSUPPORTED)
		return drop(&c, DROP_UNSUPPORTED);

	if (dir == DIR_EGRESS && f.magic == MARK_TO_PROXY)
		return bounced_to_ingress_proxy(skb, &c, f.mark);
	if (dir == DIR_INGRESS && (f.magic == MARK_FROM_INGRESS_PROXY || f.magic == MARK_FROM_EGRESS_PROXY)) {
		f.from_proxy = f.magic;
		c.ev.flags |= EVF_FROM_PROXY;
	}
	if (c.p.fragment)
		return decide_fragment(&c, cfg, ep, f.mark, f.from_proxy);
	f.revision = dir == DIR_EGRESS ? cfg->egress_rev : cfg->ingress_rev;
	if (!f.looked)
		lookup_flow(&c, &f, ep);

	if (f.ct && f.rel == CT_FORWARD)
		return tracked_forward(skb, &c, cfg, &f, ep);
	/* Reply of a flow that started in the other direction. */
	if (f.ct && f.rel == CT_REPLY)
		return pass_reply(skb, &c, f.ct, f.gen, 0);
	/* ICMP error about a tracked flow (either way). */
	if (c.p.icmp_error) {
		struct ct_key ik;

		ct_canon(&c.p.inner, ep, &ik);
		if (ct_live(&ik, c.now))
			return pass(&c, 0);
	}

	ret = decide_flow(&c, cfg, &f, ep, &res);
	if (ret >= 0)
		return ret;
	return start_flow(skb, &c, &f, &res);
}

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

/*
 * from_uplink hands a reply of a proxy's upstream leg that arrives from
 * outside the node to the proxy's socket. The upstream keeps the client
 * pod's address, so the reply is addressed to a local endpoint: routed as
 * usual it would go to the pod (which has no such connection; the host
 * stack would even early-demux it to the proxy's socket and then drop it
 * on the forward path). Only a TCP packet addressed to a local endpoint
 * whose exact tuple is an established or connecting socket of a proxy
 * (proxy_return: not a listener, from-proxy mark) is taken; anything else,
 * forged or not, passes on unchanged to the usual routing and the
 * destination's to_endpoint. A refused assignment drops the packet (fail
 * closed: it must not reach the pod instead).
 */
SEC("tc")
int from_uplink(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (parse_packet(skb, &p) != PARSE_OK || p.fragment || p.key.proto != IPPROTO_TCP)
		return TC_ACT_OK;
	if (!bpf_map_lookup_elem(&moat_local_ep, p.key.daddr))
		return TC_ACT_OK;
	if (proxy_return(skb, &p) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
