/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Per-endpoint bandwidth. A limit shapes, it does not
 * police: a dropping policer collapses TCP at veth round-trip times, a
 * queue that paces holds the rate. Two ways to pace:
 *
 *   BW_EDT  stamp each packet's earliest departure time (skb->tstamp) from
 *           the endpoint's virtual clock; an fq qdisc downstream holds it
 *           until then. Packets that would leave beyond the horizon are
 *           dropped, so the queue stays bounded.
 *   BW_HTB  set skb->priority to the endpoint's HTB class: where there is
 *           no fq, an HTB qdisc the library manages does the pacing.
 *
 * Either way an optional packet-rate limit polices (drops): it is for UDP
 * floods, where shaping would only queue them.
 *
 * Its maps live here; struct bw_key, bw_value and bw_counter are in
 * xdplane.h, which user space writes and reads them through.
 */

#pragma once

#include <linux/ipv6.h>
#include <linux/udp.h>

#include "common.h"

/* Sizes are the defaults; the Go loader sets both from the endpoint limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bw_key);
	__type(value, struct bw_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bandwidth SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct bw_key);
	__type(value, struct bw_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_stats SEC(".maps");

/*
 * edt_departure is the departure time of a packet of len bytes under v at
 * now, given the time the packet already asks for (0: none). It returns 0
 * to send the packet as it is, 1 to drop it, 2 to stamp it *at; it moves
 * the virtual clock v->clock_ns, the time the last packet leaves. The
 * arithmetic:
 *
 *   the clock may trail the packet's time by at most burst_ns: what the
 *   burst lets leave at once after a quiet moment;
 *   a packet with more than horizon_ns queued ahead of it is dropped, so
 *   fq's queue stays bounded; a lone packet always goes, however slow
 *   the rate, so the largest packet is never dropped for its size alone;
 *   the packet leaves len / rate after the clock.
 */
static __always_inline int edt_departure(struct bw_value *v, __u64 len, __u64 now, __u64 asked,
					 __u64 *at)
{
	__u64 t = asked > now ? asked : now;
	__u64 base = v->clock_ns, next;

	if (t > v->burst_ns && base < t - v->burst_ns)
		base = t - v->burst_ns;
	if (base > now && base - now > v->horizon_ns)
		return 1;
	next = base + len * NSEC_PER_SEC / v->rate;
	v->clock_ns = next;
	if (next <= t)
		return 0;
	*at = next;
	return 2;
}

/*
 * police is a virtual-scheduling (GCRA) packet-rate limit over segs
 * packets (a GSO packet counts its segments): 1 to drop. An idle bucket
 * passes any packet whole, so that a GSO packet of more segments than
 * the burst is not dropped for ever; its cost then holds back the packets
 * after it.
 */
static __always_inline int police(struct bw_value *v, __u64 now, __u64 segs)
{
	__u64 cost = segs * v->pps_interval_ns;

	if (v->pps_clock_ns <= now) {
		v->pps_clock_ns = now + cost;
		return 0;
	}
	if (v->pps_clock_ns + cost - v->pps_interval_ns - now > v->pps_burst_ns)
		return 1;
	v->pps_clock_ns += cost;
	return 0;
}

/*
 * wire_len is the length a qdisc counts for the packet, segs segments: a
 * GSO packet's Ethernet, IP and TCP or UDP headers once per segment, as
 * they will be on the wire (IPv6 extension headers are not counted again).
 */
static __always_inline __u64 wire_len(struct __sk_buff *skb, __u32 segs)
{
	__u32 hdr = ETH_HLEN;
	__u8 b, proto;

	if (segs <= 1)
		return skb->len;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &b, 1) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1))
			return skb->len;
		hdr += (b & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &proto, 1))
			return skb->len;
		hdr += sizeof(struct ipv6hdr);
	} else {
		return skb->len;
	}
	if (proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, hdr + 12, &b, 1))
			return skb->len;
		hdr += (b >> 4) * 4;
	} else if (proto == IPPROTO_UDP) {
		hdr += sizeof(struct udphdr);
	} else {
		return skb->len;
	}
	return skb->len + (__u64)(segs - 1) * hdr;
}

static __always_inline void bw_count(const struct bw_key *k, bool dropped, __u64 len)
{
	struct bw_counter *c = bpf_map_lookup_elem(&bw_stats, k);

	if (!c)
		return;
	if (dropped) {
		c->dropped_packets++;
		c->dropped_bytes += len;
	} else {
		c->shaped_packets++;
		c->shaped_bytes += len;
	}
}

/*
 * bw_exempt reports whether a packet is link plumbing that no limit
 * holds: queued behind a backlog or policed under a flood, it would time
 * out, and every flow to the neighbour it resolves with it. That is ARP,
 * which no router forwards, and IPv6 neighbour discovery (ICMPv6 right
 * after the fixed header, hop limit 255) that cannot carry data past the
 * node: into the pod, types 133 to 137 with their hop limit whole are the
 * node's own (a forwarded packet has lost one); out of the pod, only a
 * host's solicitations and advertisements, to link-local or link-scope
 * multicast addresses, which no router forwards.
 */
static __always_inline bool bw_exempt(struct __sk_buff *skb, __u32 dir)
{
	__u8 h[2], t;

	if (skb->protocol == bpf_htons(ETH_P_ARP))
		return true;
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return false;
	/* next header and hop limit */
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, h, 2) || h[0] != IPPROTO_ICMPV6 || h[1] != 255)
		return false;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), &t, 1))
		return false;
	if (dir == DIR_INGRESS)
		return t >= 133 && t <= 137;
	if (t != 133 && t != 135 && t != 136)
		return false;
	/* the destination's first two bytes: fe80::/10 or ff02::/16 */
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, h, 2))
		return false;
	return (h[0] == 0xfe && (h[1] & 0xc0) == 0x80) || (h[0] == 0xff && h[1] == 0x02);
}

/*
 * bw_apply shapes a packet leaving through the interface it is at, in
 * direction dir of the endpoint there: DIR_INGRESS at the host side's
 * egress (into the pod), DIR_EGRESS at its ingress (out of the pod). It
 * returns 1 to drop the packet.
 */
__noinline int bw_apply(struct __sk_buff *skb, __u32 dir)
{
	struct bw_key k = {.ifindex = skb->ifindex, .dir = dir};
	struct bw_value *v = bpf_map_lookup_elem(&bandwidth, &k);
	__u32 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u64 now, len, asked = 0, at = 0;

	if (!v || bw_exempt(skb, dir))
		return 0;
	len = wire_len(skb, segs);
	now = bpf_ktime_get_ns();
	if (v->pps_interval_ns && police(v, now, segs)) {
		bw_count(&k, true, len);
		return 1;
	}
	if (!v->rate)
		return 0;
	if (v->mode == BW_EDT) {
		/* Only a departure time counts: a receive timestamp is
		 * wall-clock time, on another clock. */
		if (skb->tstamp_type == BPF_SKB_TSTAMP_DELIVERY_MONO)
			asked = skb->tstamp;
		switch (edt_departure(v, len, now, asked, &at)) {
		case 1:
			bw_count(&k, true, len);
			return 1;
		case 2:
			bpf_skb_set_tstamp(skb, at, BPF_SKB_TSTAMP_DELIVERY_MONO);
			break;
		}
	} else {
		skb->priority = v->priority;
	}
	bw_count(&k, false, len);
	return 0;
}
