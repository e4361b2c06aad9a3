/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * The load balancer's connection tracking: one LRU entry per direction of
 * a flow, so that every later packet and every reply takes one lookup.
 * The map lives here with its helpers; struct ct_key and ct_value are in
 * xdplane.h, which user space reads them through.
 */

#pragma once

#include "common.h"
#include "parse.h"

/* The size is the default; the Go loader overrides max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* flow_key is the conntrack key of a packet as it arrives. */
static __always_inline void flow_key(struct ct_key *k, const struct flow *f, enum ct_dir dir)
{
	__builtin_memcpy(k->saddr, f->saddr.b, 16);
	__builtin_memcpy(k->daddr, f->daddr.b, 16);
	k->sport = f->sport;
	k->dport = f->dport;
	k->proto = f->proto;
	k->dir = dir;
}

/* reply_key is the key of the replies of f, once it goes to be. */
static __always_inline void reply_key(struct ct_key *rk, const struct flow *f,
				      const struct backend *be)
{
	__builtin_memcpy(rk->saddr, be->addr, 16);
	__builtin_memcpy(rk->daddr, f->saddr.b, 16);
	rk->sport = be->port;
	rk->dport = f->sport;
	rk->proto = f->proto;
	rk->dir = CT_REPLY;
}

/* ct_count adds a packet of len bytes to an entry that every CPU may be
 * counting into at once. */
static __always_inline void ct_count(struct ct_value *ct, __u32 len)
{
	__sync_fetch_and_add(&ct->packets, 1);
	__sync_fetch_and_add(&ct->bytes, len);
}

/* ct_refresh_forward marks a forward entry seen at now, at most once a
 * second; that is also when a reply entry the LRU evicted on its own is
 * put back. */
static __always_inline void ct_refresh_forward(struct ct_value *ct, const struct flow *f,
					       __u32 svc_id, __u32 be_id,
					       const struct backend *be, __u64 now)
{
	struct ct_key rkey = {};
	struct ct_value entry = {};

	if (now - ct->last_seen <= NSEC_PER_SEC)
		return;
	ct->last_seen = now;
	reply_key(&rkey, f, be);
	if (bpf_map_lookup_elem(&conntrack, &rkey))
		return;
	entry.backend_id = be_id;
	entry.svc_id = svc_id;
	entry.backend_cookie = be->cookie;
	entry.last_seen = now;
	bpf_map_update_elem(&conntrack, &rkey, &entry, BPF_ANY);
}

/* ct_refresh_reply marks a reply entry seen at now, at most once a
 * second. */
static __always_inline void ct_refresh_reply(struct ct_value *ct, __u64 now)
{
	if (now - ct->last_seen > NSEC_PER_SEC)
		ct->last_seen = now;
}

/* ct_create tracks a new flow to backend be in both directions, the
 * reply's entry first; key is the flow's forward key, len its first
 * packet's length. It returns -1 if either entry could not be written. */
static __always_inline int ct_create(const struct ct_key *key, const struct flow *f, __u32 svc_id,
				     __u32 be_id, const struct backend *be, __u64 now, __u32 len)
{
	struct ct_key rkey = {};
	struct ct_value entry = {
		.backend_id = be_id,
		.svc_id = svc_id,
		.backend_cookie = be->cookie,
		.last_seen = now,
	};

	reply_key(&rkey, f, be);
	if (bpf_map_update_elem(&conntrack, &rkey, &entry, BPF_ANY))
		return -1;
	entry.packets = 1;
	entry.bytes = len;
	if (bpf_map_update_elem(&conntrack, key, &entry, BPF_ANY))
		return -1;
	return 0;
}
