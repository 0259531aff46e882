/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* moat datapath: maps (all pinned by name) and load-time configuration. */
#ifndef MOAT_MAPS_H
#define MOAT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "moat.h"
#include "ratelimit.h"

/* Load-time configuration, set through CollectionSpec.Variables. */
volatile const __u32 events_rate = 1000; /* events per second per CPU; 0 = unlimited */
volatile const __u32 events_burst = 200; /* token bucket depth per CPU */
volatile const __u32 events_mask = (1 << EV_DROP) | (1 << EV_VERDICT) | (1 << EV_TO_PROXY);
volatile const __u32 ct_lifetime_tcp = 20117;   /* established TCP, CT ticks (see ct_now) */
volatile const __u32 ct_lifetime_syn = 56;      /* TCP before a reply */
volatile const __u32 ct_lifetime_closing = 10;  /* TCP after FIN/RST */
volatile const __u32 ct_lifetime_other = 56;    /* UDP, ICMP, others */
volatile const __u32 local_delivery_on = 1;     /* see local_delivery in moat.c */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_ipcache SEC(".maps");

/* The ipcache's host entries, which the trie does not hold (see ipcache_identity). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ipcache_host_key);
	__type(value, struct ipcache_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_ipcache_h SEC(".maps");

/* Single-port and every-port policy entries (see struct policy_hkey). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_hkey);
	__type(value, struct policy_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_policy_h SEC(".maps");

/* Port-range policy entries (see struct policy_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_config);
	__uint(max_entries, EP_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_endpoints SEC(".maps");

/*
 * The local endpoints by address (an endpoint may have an IPv4 and an IPv6
 * address): the ifindex of the host veth, for local_delivery.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ipcache_host_key);
	__type(value, __u32);
	__uint(max_entries, EP_SLOTS * 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_local_ep SEC(".maps");

/*
 * The maps' generation, bumped by every Sync that changes the endpoint,
 * policy or ipcache maps. A tracked flow whose CT entry carries the current
 * generation passes without looking at its endpoint's config (an inlined
 * array read instead of a hash lookup per packet).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_generation SEC(".maps");

/* Ports of fragmented datagrams, by their first fragment (see struct frag_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ep_stats);
	__uint(max_entries, (EP_SLOTS + 1) * 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_ep_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rule_stats);
	__uint(max_entries, RULE_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct token_bucket);
	__uint(max_entries, 1);
} moat_ev_limit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct event_stats);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} moat_ev_stats SEC(".maps");

#endif /* MOAT_MAPS_H */
