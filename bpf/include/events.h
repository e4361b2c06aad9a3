/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Drops, counted and reported: drop_stats counts every drop by enum
 * drop_reason, and a sample of them goes to user space as events through
 * a ring buffer. Policy and the prefilter both report here. The maps live
 * with emit_drop; struct drop_event, which user space decodes, is in
 * xdplane.h.
 */

#pragma once

#include "common.h"

/* Every how many-th drop becomes an event, per CPU; 0 turns events off.
 * Set by the loader. */
const volatile __u32 event_sample = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, enum drop_reason);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_stats SEC(".maps");

/* One per CPU: drops seen since the last event, for sampling. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_tick SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__type(value, struct drop_event); /* for BTF only: bpf2go's Go type */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* emit_drop reports a drop of a packet of len bytes as an event, if it is
 * the event_sample-th on this CPU since the last one. */
static __always_inline void emit_drop(__u32 ep, __u32 ifindex, __u32 dir, __u32 reason,
				      const union addr *s, const union addr *d, __be16 sport,
				      __be16 dport, __u8 proto, __u8 flags, __u32 len)
{
	struct drop_event *ev;
	__u32 zero = 0, *tick;

	if (!event_sample)
		return;
	tick = bpf_map_lookup_elem(&event_tick, &zero);
	if (!tick)
		return;
	if (++*tick < event_sample)
		return;
	*tick = 0;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(DROP_EVENTS_LOST, &drop_stats, len);
		return;
	}
	ev->timestamp = bpf_ktime_get_ns();
	ev->endpoint = ep;
	ev->ifindex = ifindex;
	__builtin_memcpy(ev->saddr, s->b, 16);
	__builtin_memcpy(ev->daddr, d->b, 16);
	ev->sport = sport;
	ev->dport = dport;
	ev->proto = proto;
	ev->dir = dir;
	ev->reason = reason;
	ev->flags = flags;
	ev->len = len;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
}
