/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Packet parsing every feature shares: the one IPv6 extension-header walk,
 * which the load balancer and policy both use so that they never disagree
 * on where a packet's ports are; ICMP's first bytes; and the load
 * balancer's view of a packet, struct flow, which NAT, conntrack, backend
 * selection and rejects all take. Policy reads more of a packet (SCTP,
 * ICMP, fragments, the packet an ICMP error quotes) into a view of its own
 * in policy.h. Parsing reads nothing but the packet, so no map lives here.
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

/* The farthest an L4 header may start where headers are read in place:
 * Ethernet, an IPv6 header and a few short extension headers (IPv4's
 * longest header is well within). */
#define MAX_L4_OFF 256
/* What tc pulls into the linear area so that every header is readable. */
#define MAX_HDR_LEN (MAX_L4_OFF + sizeof(struct tcphdr))
/* How many IPv6 extension headers are walked, a fragment header included;
 * a packet with more is malformed. Policy needs this many, so that a
 * packet cannot pass a rule by hiding its ports behind headers; the load
 * balancer walks as far, so that both read a packet alike. */
#define MAX_EXT_HDRS 8

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

/* The IPv6 fragment header (RFC 8200, 4.5). */
struct frag_hdr {
	__u8 next;
	__u8 reserved;
	__be16 frag_off; /* the offset in 8-byte units, then 2 reserved bits and M */
	__be32 id;
};

/* What a fragment header says of its packet. */
enum pfrag {
	PF_NONE = 0,
	PF_FIRST = 1, /* offset 0, more to come: has the ports */
	PF_LATER = 2, /* no L4 header */
};

/* Where an IPv6 extension-header walk starts, and what it finds. */
struct ext_walk {
	__u32 off;	/* in: past the fixed header; out: where the walk stopped */
	__u8 next;	/* in: the fixed header's next header; out: the header at off */
	__u8 frag;	/* enum pfrag, from a fragment header the walk read */
	bool transit;	/* a routing header with segments left was walked */
	__be32 frag_id; /* a fragment header's identification */
};

static __always_inline bool ipv6_is_ext(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
	       next == IPPROTO_AH;
}

/*
 * hdr_at returns the len bytes at off, or NULL if they are not all there.
 * With direct set, it points into the packet, within data_end and
 * MAX_L4_OFF (the bound lets the verifier bound the pointer); else it
 * copies them into buf with bpf_skb_load_bytes, within end, which sees the
 * same bytes however the skb is laid out.
 */
static __always_inline void *hdr_at(void *ctx, const bool direct, void *data, void *data_end,
				    __u32 off, __u32 end, void *buf, __u32 len)
{
	if (direct) {
		void *p;

		if (off > MAX_L4_OFF)
			return NULL;
		p = data + off;
		if (p + len > data_end)
			return NULL;
		return p;
	}
	if (off + len > end || bpf_skb_load_bytes(ctx, off, buf, len))
		return NULL;
	return buf;
}

/*
 * ipv6_walk walks IPv6 extension headers from w->off, at most
 * MAX_EXT_HDRS of them, and stops at the first header that is none (its
 * type in w->next, at w->off), or after the fragment header of a later
 * fragment, whose headers behind it belong to the first fragment alone.
 * It returns -1 if a header it must read is not all there, or if more
 * follow than it walks: too deep to parse, so not for anyone to judge by
 * its ports.
 *
 * With lb set, it is the load balancer's walk: its reads (hdr_at) are
 * direct, on XDP and tc alike, and it also stops where the load
 * balancer's verdict is settled whatever follows: at a fragment header,
 * unread, and at a routing header with segments left (w->transit).
 * Policy's reads go through bpf_skb_load_bytes up to end, the IP packet's
 * end, and it walks on. lb is a compile-time constant, so each caller
 * carries only its own kind of walk, and the verifier does not follow the
 * load balancer's past its verdict.
 */
static __always_inline int ipv6_walk(void *ctx, const bool lb, void *data, void *data_end, __u32 end,
				     struct ext_walk *w)
{
#pragma unroll
	for (int i = 0; i < MAX_EXT_HDRS; i++) {
		union {
			struct ext_hdr e;
			struct frag_hdr f;
		} buf;
		struct ext_hdr *eh;

		if (w->next == IPPROTO_FRAGMENT) {
			struct frag_hdr *fh;
			__u16 fo;

			if (lb)
				return 0;
			fh = hdr_at(ctx, lb, data, data_end, w->off, end, &buf, sizeof(*fh));
			if (!fh)
				return -1;
			fo = bpf_ntohs(fh->frag_off);
			w->off += sizeof(*fh);
			w->next = fh->next;
			w->frag_id = fh->id;
			if (fo & 0xfff8) {
				w->frag = PF_LATER;
				return 0;
			}
			/* Offset 0 without more fragments is an atomic
			 * fragment (RFC 6946): a whole datagram. */
			if (fo & 1)
				w->frag = PF_FIRST;
			continue;
		}
		if (!ipv6_is_ext(w->next))
			return 0;
		eh = hdr_at(ctx, lb, data, data_end, w->off, end, &buf, sizeof(*eh));
		if (!eh)
			return -1;
		/* With segments left, the packet is on its way through us to
		 * another final destination, which its L4 checksum covers. */
		if (w->next == IPPROTO_ROUTING && eh->segments_left) {
			w->transit = true;
			if (lb)
				return 0;
		}
		/* AH counts 4-byte units less 2, the others 8-byte units less 1. */
		w->off += w->next == IPPROTO_AH ? (eh->len + 2) * 4 : (eh->len + 1) * 8;
		w->next = eh->next;
	}
	/* Still an extension header after the most it walks: too deep to
	 * parse, so not ours to judge. */
	if (ipv6_is_ext(w->next) || w->next == IPPROTO_FRAGMENT)
		return -1;
	return 0;
}

/*
 * The load balancer's walk, as global functions, one per context: the
 * verifier checks each once, on its own, rather than follow every path
 * through up to MAX_EXT_HDRS headers into the rest of the program. The
 * usual packet, with no extension header, calls neither.
 */
__noinline int ipv6_walk_xdp(struct xdp_md *ctx, struct ext_walk *w)
{
	if (!w)
		return -1;
	return ipv6_walk(ctx, true, (void *)(long)ctx->data, (void *)(long)ctx->data_end, 0, w);
}

__noinline int ipv6_walk_tc(struct __sk_buff *skb, struct ext_walk *w)
{
	if (!w)
		return -1;
	return ipv6_walk(skb, true, (void *)(long)skb->data, (void *)(long)skb->data_end, 0, w);
}

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
	__u8 tcp_flags;	  /* TCP: byte 13 of the header (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) */
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
		f->tcp_flags = ((__u8 *)th)[13];
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

static __always_inline int parse_v6(void *ctx, const bool xdp, void *data, void *data_end,
				    __u32 pkt_len, struct flow *f)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct ext_walk w = {.off = ETH_HLEN + sizeof(*ip6)};
	__u32 payload;
	int bad = 0;

	if ((void *)(ip6 + 1) > data_end)
		return STAT_MALFORMED;
	if (ip6->version != 6)
		return STAT_MALFORMED;
	payload = bpf_ntohs(ip6->payload_len);
	/* Payload length 0 is a jumbogram (or nothing): not ours. */
	if (payload == 0 || w.off + payload > pkt_len)
		return STAT_MALFORMED;
	/* v4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2);
	 * in the maps they mean IPv4, so such a packet must not match. */
	if (is_v4_mapped(&ip6->saddr) || is_v4_mapped(&ip6->daddr))
		return STAT_PASS;

	w.next = ip6->nexthdr;
	if (ipv6_is_ext(w.next))
		bad = xdp ? ipv6_walk_xdp(ctx, &w) : ipv6_walk_tc(ctx, &w);
	/* Bound elsewhere: not ours, whatever follows the routing header. */
	if (w.transit)
		return STAT_PASS;
	if (bad)
		return STAT_MALFORMED;
	/* As for IPv4, fragments are not translated; the walk stops at the
	 * fragment header, so that one cut short is a fragment too. */
	if (w.next == IPPROTO_FRAGMENT)
		return STAT_FRAGMENT;
	if (w.next != IPPROTO_TCP && w.next != IPPROTO_UDP)
		return STAT_PASS;
	if (w.off > ETH_HLEN + sizeof(*ip6) + payload)
		return STAT_MALFORMED;
	f->l4_off = w.off;
	f->l4_len = ETH_HLEN + sizeof(*ip6) + payload - w.off;
	f->proto = w.next;
	f->v6 = true;
	__builtin_memcpy(f->saddr.b, ip6->saddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(f->daddr.b, ip6->daddr.in6_u.u6_addr8, 16);
	return parse_l4(data, data_end, f);
}

/*
 * parse fills f from an Ethernet frame, the packet of ctx, which data and
 * data_end bound; xdp, a compile-time constant, names the context. It
 * returns 0 for an IPv4 or IPv6 TCP or UDP packet whose headers are all
 * present and consistent, or the enum stat that explains why the packet
 * is not ours.
 */
static __always_inline int parse(void *ctx, const bool xdp, void *data, void *data_end,
				 __u32 pkt_len, struct flow *f)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return STAT_MALFORMED;
	/* A VLAN tag taken out of the frame (by the driver, or by the stack
	 * before tc ingress) with a VLAN id: the packet belongs to the VLAN
	 * device above this interface, which only the stack knows, and is
	 * passed untouched, as XDP passes a frame whose tag is in it. A
	 * priority tag (id 0) the stack drops and delivers the packet here:
	 * it is balanced. */
	if (!xdp && ((struct __sk_buff *)ctx)->vlan_present &&
	    (((struct __sk_buff *)ctx)->vlan_tci & 0x0fff))
		return STAT_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_v4(data, data_end, pkt_len, f);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_v6(ctx, xdp, data, data_end, pkt_len, f);
	return STAT_PASS;
}
