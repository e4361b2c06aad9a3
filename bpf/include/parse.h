/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Packet parsing the features share: the first bytes of IPv6 extension
 * headers and of ICMP, and the load balancer's view of a packet, struct
 * flow, which NAT, conntrack, backend selection and rejects all take.
 * Policy reads more of a packet (SCTP, ICMP, fragments, the packet an ICMP
 * error quotes) into a view of its own in policy.h. Parsing reads nothing
 * but the packet, so no map lives here.
 *
 * Anything the load balancer cannot parse completely passes untouched: the
 * kernel's own validation then decides its fate.
 */

#pragma once

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "common.h"

/* The farthest an L4 header may start: Ethernet, an IPv6 header and a few
 * short extension headers (IPv4's longest header is well within). */
#define MAX_L4_OFF 256
#define MAX_EXT_HDRS 4
/* What tc pulls into the linear area so that every header is readable. */
#define MAX_HDR_LEN (MAX_L4_OFF + sizeof(struct tcphdr))

/* ICMPv6 and SCTP, which policy and the prefilter judge. */
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132

/* A minimal ICMP header, the same for ICMPv6: type, code, checksum, and
 * for echo the identifier and sequence. */
struct icmp_min {
	__u8 type;
	__u8 code;
	__be16 csum;
	__be16 id;
	__be16 seq;
};

/* An IPv6 extension header's first bytes: next header, length, and for a
 * routing header its type and segments left. Every extension header is at
 * least 8 bytes long. */
struct ext_hdr {
	__u8 next;
	__u8 len;
	__u8 routing_type;
	__u8 segments_left;
};

/* What a fragment header says of its packet. */
enum pfrag {
	PF_NONE = 0,
	PF_FIRST = 1, /* offset 0, more to come: has the ports */
	PF_LATER = 2, /* no L4 header */
};

/* The load balancer's view of a packet. */
struct flow {
	union addr saddr; /* IPv4 v4-mapped, as in the maps */
	union addr daddr;
	__u32 l4_off; /* from the start of the frame */
	__u32 l4_len; /* L4 header and payload, as the IP header says */
	__be16 sport;
	__be16 dport;
	__u8 proto;
	bool v6;
	bool udp_no_csum; /* UDP checksum 0: "none" (RFC 768) */
};

/* parse_l4 reads the ports of the TCP or UDP header at f->l4_off, which
 * f->l4_len bytes of the IP packet cover. */
static __always_inline int parse_l4(void *data, void *data_end, struct flow *f)
{
	__u32 off = f->l4_off;

	if (off > MAX_L4_OFF)
		return STAT_MALFORMED;
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *th = data + off;

		if ((void *)(th + 1) > data_end)
			return STAT_MALFORMED;
		if (f->l4_len < sizeof(*th) || th->doff < 5 || th->doff * 4 > f->l4_len)
			return STAT_MALFORMED;
		f->sport = th->source;
		f->dport = th->dest;
	} else {
		struct udphdr *uh = data + off;

		if ((void *)(uh + 1) > data_end)
			return STAT_MALFORMED;
		if (f->l4_len < sizeof(*uh) || bpf_ntohs(uh->len) < sizeof(*uh) ||
		    bpf_ntohs(uh->len) > f->l4_len)
			return STAT_MALFORMED;
		f->sport = uh->source;
		f->dport = uh->dest;
		/* Zero means "no checksum" (RFC 768); IPv6 forbids it but for
		 * tunnels (RFC 6935). Either way it stays zero, on every hook. */
		f->udp_no_csum = uh->check == 0;
	}
	return 0;
}

static __always_inline int parse_v4(void *data, void *data_end, __u32 pkt_len, struct flow *f)
{
	struct iphdr *ip = data + ETH_HLEN;
	__u32 ihl, tot_len;

	if ((void *)(ip + 1) > data_end)
		return STAT_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return STAT_MALFORMED;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return STAT_PASS;
	/* A later fragment has no ports; the first one alone cannot be
	 * translated consistently with the rest. Checked before the L4
	 * lengths: a short last fragment is a fragment, not malformed. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return STAT_FRAGMENT;

	ihl = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < ihl || ETH_HLEN + tot_len > pkt_len)
		return STAT_MALFORMED;
	f->l4_off = ETH_HLEN + ihl;
	f->l4_len = tot_len - ihl;
	f->proto = ip->protocol;
	v4_mapped(&f->saddr, ip->saddr);
	v4_mapped(&f->daddr, ip->daddr);
	return parse_l4(data, data_end, f);
}

static __always_inline int parse_v6(void *data, void *data_end, __u32 pkt_len, struct flow *f)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u32 off = ETH_HLEN + sizeof(*ip6), payload;
	__u8 next;

	if ((void *)(ip6 + 1) > data_end)
		return STAT_MALFORMED;
	if (ip6->version != 6)
		return STAT_MALFORMED;
	payload = bpf_ntohs(ip6->payload_len);
	/* Payload length 0 is a jumbogram (or nothing): not ours. */
	if (payload == 0 || off + payload > pkt_len)
		return STAT_MALFORMED;
	/* v4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2);
	 * in the maps they mean IPv4, so such a packet must not match. */
	if (is_v4_mapped(&ip6->saddr) || is_v4_mapped(&ip6->daddr))
		return STAT_PASS;

	next = ip6->nexthdr;
#pragma unroll
	for (int i = 0; i < MAX_EXT_HDRS; i++) {
		struct ext_hdr *eh;

		if (next == IPPROTO_TCP || next == IPPROTO_UDP)
			break;
		if (next == IPPROTO_FRAGMENT)
			return STAT_FRAGMENT;
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
		    next != IPPROTO_AH)
			return STAT_PASS;
		if (off > MAX_L4_OFF)
			return STAT_MALFORMED;
		eh = data + off;
		if ((void *)(eh + 1) > data_end)
			return STAT_MALFORMED;
		/* With segments left, the packet is on its way through us to
		 * another final destination, which the checksum covers. */
		if (next == IPPROTO_ROUTING && eh->segments_left)
			return STAT_PASS;
		/* AH counts 4-byte units less 2, the others 8-byte units less 1. */
		off += next == IPPROTO_AH ? (eh->len + 2) * 4 : (eh->len + 1) * 8;
		next = eh->next;
	}
	/* Still an extension header after the most we walk: too deep to
	 * parse, so not ours to judge. */
	if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
	    next == IPPROTO_AH || next == IPPROTO_FRAGMENT)
		return STAT_MALFORMED;
	if (next != IPPROTO_TCP && next != IPPROTO_UDP)
		return STAT_PASS;
	if (off > ETH_HLEN + sizeof(*ip6) + payload)
		return STAT_MALFORMED;
	f->l4_off = off;
	f->l4_len = ETH_HLEN + sizeof(*ip6) + payload - off;
	f->proto = next;
	f->v6 = true;
	__builtin_memcpy(f->saddr.b, ip6->saddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(f->daddr.b, ip6->daddr.in6_u.u6_addr8, 16);
	return parse_l4(data, data_end, f);
}

/*
 * parse fills f from an Ethernet frame. It returns 0 for an IPv4 or IPv6
 * TCP or UDP packet whose headers are all present and consistent, or the
 * stat that explains why the packet is not ours.
 */
static __always_inline int parse(void *data, void *data_end, __u32 pkt_len, struct flow *f)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return STAT_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_v4(data, data_end, pkt_len, f);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_v6(data, data_end, pkt_len, f);
	return STAT_PASS;
}
