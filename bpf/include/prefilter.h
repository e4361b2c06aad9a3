/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * The node-wide prefilter: XDP drops a frame whose source is listed,
 * before anything else reads it. Its map lives here; struct
 * prefilter_key is in xdplane.h, which user space writes it through.
 */

#pragma once

#include <linux/ip.h>
#include <linux/ipv6.h>

#include "common.h"
#include "events.h"
#include "parse.h"

/* The size is the default; the Go loader overrides max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2097152);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefilter_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} prefilter SEC(".maps");

/*
 * prefilter_drop reports whether XDP drops the frame because its source is
 * in the node-wide prefilter. Only the IP header is read: this runs before
 * anything else, for every frame, and must stay cheap under a flood.
 */
static __always_inline bool prefilter_drop(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct prefilter_key k = {.prefixlen = 128};
	union addr s, d;
	__u8 proto, flags = 0;
	void *l3;
	__be16 h_proto;
	__u8 *v;

	if ((void *)(eth + 1) > data_end)
		return false;
	/* Up to two VLAN tags (802.1Q, 802.1ad) before the IP header: a
	 * listed source must not pass by wearing them. */
	l3 = eth + 1;
	h_proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct {
			__be16 tci;
			__be16 proto;
		} *vh = l3;

		if (h_proto != bpf_htons(ETH_P_8021Q) && h_proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return false;
		h_proto = vh->proto;
		l3 = vh + 1;
	}
	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return false;
		v4_mapped(&s, ip->saddr);
		v4_mapped(&d, ip->daddr);
		proto = ip->protocol;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return false;
		__builtin_memcpy(s.b, ip6->saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(d.b, ip6->daddr.in6_u.u6_addr8, 16);
		proto = ip6->nexthdr;
		flags = EV_IPV6;
		/* Neighbour discovery stays on the link (hop limit 255) and is
		 * IPv6's ARP: a listed neighbour must not cost its link-mates
		 * their router (it may solicit for them, from its own
		 * address). Small messages only, so a flood gains nothing. */
		if (proto == IPPROTO_ICMPV6_ && ip6->hop_limit == 255 &&
		    bpf_ntohs(ip6->payload_len) <= 128) {
			struct icmp_min *ic = (void *)(ip6 + 1);

			if ((void *)(ic + 1) <= data_end && ic->type >= 133 && ic->type <= 137)
				return false;
		}
	} else {
		return false;
	}
	__builtin_memcpy(k.addr, s.b, 16);
	/* 0 is an exception: IPv4 under an IPv6 prefix that holds
	 * ::ffff:0:0/96, where the map keeps IPv4. */
	v = bpf_map_lookup_elem(&prefilter, &k);
	if (!v || !*v)
		return false;
	count(DROP_PREFILTER, &drop_stats, data_end - data);
	emit_drop(0, ctx->ingress_ifindex, DIR_INGRESS, DROP_PREFILTER, &s, &d, 0, 0, proto, flags,
		  data_end - data);
	return true;
}
