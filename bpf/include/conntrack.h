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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CT_STAT_MAX);
	__type(key, enum ct_stat);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_stats SEC(".maps");

/* How long a flow may be idle, by what it has shown, in nanoseconds. The
 * loader sets them from datapath.Options; these are the defaults, which
 * the Go side repeats (DefaultConntrackTimeouts). */
const volatile __u64 ct_timeout_tcp_established = 86400 * NSEC_PER_SEC;
const volatile __u64 ct_timeout_tcp_opening = 60 * NSEC_PER_SEC;
const volatile __u64 ct_timeout_tcp_closing = 10 * NSEC_PER_SEC;
const volatile __u64 ct_timeout_udp = 30 * NSEC_PER_SEC;
const volatile __u64 ct_timeout_udp_stream = 120 * NSEC_PER_SEC;

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* ct_note counts one of enum ct_stat on this CPU. */
static __always_inline void ct_note(enum ct_stat which)
{
	__u64 *n = bpf_map_lookup_elem(&ct_stats, &which);

	if (n)
		*n += 1;
}

/* ct_closing says whether a TCP flow has ended: reset, or FIN from both
 * sides. */
static __always_inline bool ct_closing(const struct ct_value *ct)
{
	return ct->rst || (ct->fin_forward && ct->fin_reply);
}

/* ct_timeout is how long the flow of forward entry ct may be idle. */
static __always_inline __u64 ct_timeout(const struct ct_value *ct, __u8 proto)
{
	if (proto == IPPROTO_UDP)
		return ct->seen_reply ? ct_timeout_udp_stream : ct_timeout_udp;
	if (ct_closing(ct))
		return ct_timeout_tcp_closing;
	return ct->seen_reply ? ct_timeout_tcp_established : ct_timeout_tcp_opening;
}

/* ct_set sets one of an entry's flags, unless it is set. */
static __always_inline void ct_set(__u8 *flag)
{
	if (!*flag)
		*flag = 1;
}

/*
 * ct_reusable says whether the forward entry ct may carry packet f, or f
 * starts a new flow over it, to be balanced afresh. UDP: the entry must
 * not have expired. TCP: a client's SYN (without ACK) opens a new
 * connection if the entry's flow has closed or expired, and is a
 * retransmission otherwise; any other packet belongs to a connection in
 * progress, which keeps its backend however long it was idle.
 */
static __always_inline bool ct_reusable(const struct ct_value *ct, const struct flow *f, __u64 now)
{
	/* The common case, a TCP packet of a connection in progress, needs
	 * no timeout. */
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		return true;
	if (f->proto == IPPROTO_TCP && ct_closing(ct))
		return false;
	return now - ct->last_seen <= ct_timeout(ct, f->proto);
}

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

/* ct_put_reply writes a reply entry, counting it if its key is new. */
static __always_inline int ct_put_reply(const struct ct_key *rkey, const struct ct_value *entry)
{
	if (!bpf_map_update_elem(&conntrack, rkey, entry, BPF_NOEXIST)) {
		ct_note(CT_STAT_CREATED);
		return 0;
	}
	return bpf_map_update_elem(&conntrack, rkey, entry, BPF_ANY) ? -1 : 0;
}

/* ct_refresh_forward takes packet f into a forward entry at now: its TCP
 * flags at once, its time at most once a second; that is also when a
 * reply entry the LRU evicted on its own is put back. */
static __always_inline void ct_refresh_forward(struct ct_value *ct, const struct flow *f,
					       __u32 svc_id, __u32 be_id,
					       const struct backend *be, __u64 now)
{
	struct ct_key rkey = {};
	struct ct_value entry = {};

	if (f->proto == IPPROTO_TCP) {
		if (f->tcp_flags & TCP_FIN)
			ct_set(&ct->fin_forward);
		if (f->tcp_flags & TCP_RST)
			ct_set(&ct->rst);
	}
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
	ct_put_reply(&rkey, &entry);
}

/* ct_refresh_reply takes reply packet f into its entry ct at now: its
 * time at most once a second, and what it shows (an answer, FIN, RST)
 * into the flow's forward entry, whose frontend is fe, once each. */
static __always_inline void ct_refresh_reply(struct ct_value *ct, const struct flow *f,
					     const struct revnat_value *fe, __u64 now)
{
	bool fin = f->proto == IPPROTO_TCP && (f->tcp_flags & TCP_FIN);
	bool rst = f->proto == IPPROTO_TCP && (f->tcp_flags & TCP_RST);
	struct ct_key fkey = {};
	struct ct_value *fwd;

	if (now - ct->last_seen > NSEC_PER_SEC)
		ct->last_seen = now;
	if (ct->seen_reply && (!fin || ct->fin_reply) && (!rst || ct->rst))
		return; /* nothing new to tell */
	__builtin_memcpy(fkey.saddr, f->daddr.b, 16);
	__builtin_memcpy(fkey.daddr, fe->addr, 16);
	fkey.sport = f->dport;
	fkey.dport = fe->port;
	fkey.proto = f->proto;
	fkey.dir = CT_FORWARD;
	fwd = bpf_map_lookup_elem(&conntrack, &fkey);
	/* Only the flow this entry answers for: the client's port may have
	 * gone to another backend since. */
	if (fwd && fwd->backend_id == ct->backend_id && fwd->backend_cookie == ct->backend_cookie) {
		ct_set(&fwd->seen_reply);
		if (fin)
			ct_set(&fwd->fin_reply);
		if (rst)
			ct_set(&fwd->rst);
	}
	ct_set(&ct->seen_reply);
	if (fin)
		ct_set(&ct->fin_reply);
	if (rst)
		ct_set(&ct->rst);
}

/* ct_create tracks a new flow to backend be in both directions, the
 * reply's entry first; key is the flow's forward key, len its first
 * packet's length, and existed whether the forward key had an entry (of
 * a flow that ended, or went elsewhere). It returns -1 if either entry
 * could not be written. */
static __always_inline int ct_create(const struct ct_key *key, const struct flow *f, __u32 svc_id,
				     __u32 be_id, const struct backend *be, __u64 now, __u32 len,
				     bool existed)
{
	struct ct_key rkey = {};
	struct ct_value entry = {
		.backend_id = be_id,
		.svc_id = svc_id,
		.backend_cookie = be->cookie,
		.last_seen = now,
	};

	reply_key(&rkey, f, be);
	if (ct_put_reply(&rkey, &entry))
		return -1;
	entry.packets = 1;
	entry.bytes = len;
	if (f->proto == IPPROTO_TCP) {
		entry.fin_forward = !!(f->tcp_flags & TCP_FIN);
		entry.rst = !!(f->tcp_flags & TCP_RST);
	}
	if (bpf_map_update_elem(&conntrack, key, &entry, BPF_ANY))
		return -1;
	ct_note(existed ? CT_STAT_REOPENED : CT_STAT_CREATED);
	return 0;
}
