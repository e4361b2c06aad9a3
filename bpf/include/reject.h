/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Rejecting a flow, as kube-proxy does for a service without usable
 * backends: the packet becomes an ICMP port unreachable (ICMPv6 for IPv6)
 * from the frontend to the client, quoting the offending IP header and the
 * 8 bytes after it, or the TCP header (RFC 792, 1812, 4443), and goes straight
 * back out of the interface it came in by.
 *
 * The space is made in place: headers are prepended (the original
 * Ethernet header is overwritten, its addresses saved and swapped) and the
 * packet is cut after the quote. The reply is made of the flow alone, so
 * no map lives here.
 */

#pragma once

#include "common.h"
#include "csum.h"
#include "parse.h"

#define ICMP_LEN 8
#define MAX_QUOTE_LEN (60 + 20)
/* From linux/icmp.h and linux/icmpv6.h, which pull in libc headers. */
#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PORT_UNREACH 4

/* ICMP's and ICMPv6's common 8-byte header, as destination unreachable
 * uses it. */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
};

/* build_reject writes the reply into a frame laid out as
 * [ethernet][ip][icmp][quote], the quote already in place; qsum is the
 * quote's checksum (a partial sum), taken before the frame changed. */
static __always_inline int build_reject(void *data, void *data_end, const struct flow *f,
					const __u8 *macs, __u32 quote_len, __s64 qsum)
{
	struct ethhdr *eth = data;
	struct icmp_hdr *icmp;
	__s64 sum;

	if ((void *)(eth + 1) > data_end || quote_len > MAX_QUOTE_LEN)
		return -1;
	__builtin_memcpy(eth->h_dest, macs + ETH_ALEN, ETH_ALEN); /* back to the sender */
	__builtin_memcpy(eth->h_source, macs, ETH_ALEN);

	if (f->v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		icmp = (void *)(ip6 + 1);
		if ((void *)(icmp + 1) > data_end)
			return -1;
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		*(__be32 *)ip6 = bpf_htonl(0x60000000); /* version 6, no class, no label */
		ip6->payload_len = bpf_htons(ICMP_LEN + quote_len);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = 64;
		__builtin_memcpy(ip6->saddr.in6_u.u6_addr8, f->daddr.b, 16);
		__builtin_memcpy(ip6->daddr.in6_u.u6_addr8, f->saddr.b, 16);
		__builtin_memset(icmp, 0, sizeof(*icmp));
		icmp->type = ICMPV6_DEST_UNREACH;
		icmp->code = ICMPV6_PORT_UNREACH;
		/* Pseudo-header: addresses, upper-layer length, next header. */
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ip6->saddr, 32, 0);
		if (sum < 0)
			return -1;
		sum += bpf_htonl(ICMP_LEN + quote_len) + bpf_htonl(IPPROTO_ICMPV6);
	} else {
		struct iphdr *ip4 = (void *)(eth + 1);
		__s64 hsum;

		icmp = (void *)(ip4 + 1);
		if ((void *)(icmp + 1) > data_end)
			return -1;
		eth->h_proto = bpf_htons(ETH_P_IP);
		__builtin_memset(ip4, 0, sizeof(*ip4));
		ip4->version = 4;
		ip4->ihl = 5;
		ip4->tot_len = bpf_htons(sizeof(*ip4) + ICMP_LEN + quote_len);
		ip4->ttl = 64;
		ip4->protocol = IPPROTO_ICMP;
		ip4->saddr = f->daddr.w[3];
		ip4->daddr = f->saddr.w[3];
		hsum = bpf_csum_diff(NULL, 0, (__be32 *)ip4, sizeof(*ip4), 0);
		if (hsum < 0)
			return -1;
		ip4->check = ~csum_fold64(hsum);
		__builtin_memset(icmp, 0, sizeof(*icmp));
		icmp->type = ICMP_DEST_UNREACH;
		icmp->code = ICMP_PORT_UNREACH;
		sum = 0;
	}
	/* The ICMP message: its header (checksum 0 for now) and the quote. */
	__s64 hsum = bpf_csum_diff(NULL, 0, (__be32 *)icmp, sizeof(*icmp), 0);

	if (hsum < 0)
		return -1;
	icmp->checksum = ~csum_fold64((__u64)sum + (__u64)hsum + (__u64)qsum);
	return 0;
}

/* reject_layout returns how many bytes to prepend and how long the quote
 * is: the IP header (with IPv4 options) and the first 8 bytes after it,
 * or for TCP its whole 20-byte header (RFC 1812 asks for more than 8
 * where it can be had). The TCP header must be kept whole: a locally sent
 * segment's pending checksum (CHECKSUM_PARTIAL) sits at its byte 16, and
 * the kernel refuses to cut a packet short of it. */
static __always_inline void reject_layout(const struct flow *f, __u32 *grow, __u64 *quote_len)
{
	__u32 l4 = f->proto == IPPROTO_TCP ? sizeof(struct tcphdr) : 8;

	if (f->v6) {
		*grow = sizeof(struct ipv6hdr) + ICMP_LEN;
		*quote_len = sizeof(struct ipv6hdr) + l4;
	} else {
		*grow = sizeof(struct iphdr) + ICMP_LEN;
		*quote_len = f->l4_off - ETH_HLEN + l4;
	}
	/* A multiple of 4 from 28 to 80; the mask tells the verifier so. */
	*quote_len &= 0x7c;
}

/* quote_sum is the checksum of the quote, summed over a zero-padded copy
 * (trailing zeros add nothing to a one's complement sum), so that the
 * verifier sees one constant size. */
static __always_inline __s64 quote_sum(const __u8 *quote)
{
	return bpf_csum_diff(NULL, 0, (__be32 *)quote, MAX_QUOTE_LEN, 0);
}

static __always_inline int reject_xdp(struct xdp_md *ctx, const struct flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 quote[MAX_QUOTE_LEN] = {};
	__u32 grow;
	__u64 quote_len; /* 64 bits: no zero-extended copy for the verifier to lose */
	__u8 macs[2 * ETH_ALEN];
	__s64 qsum;
	int cut;

	if (data + ETH_HLEN > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs)); /* destination, source */
	reject_layout(f, &grow, &quote_len);
	/* Keep the bounds check and the use on one register. */
	barrier_var(quote_len);
	if (quote_len < 28 || quote_len > MAX_QUOTE_LEN)
		return -1;
	if (bpf_xdp_load_bytes(ctx, ETH_HLEN, quote, quote_len))
		return -1;
	qsum = quote_sum(quote);
	if (qsum < 0)
		return -1;
	cut = (int)(ETH_HLEN + quote_len) - (int)(data_end - data);
	if (cut < 0 && bpf_xdp_adjust_tail(ctx, cut))
		return -1;
	if (bpf_xdp_adjust_head(ctx, -(int)grow))
		return -1;
	return build_reject((void *)(long)ctx->data, (void *)(long)ctx->data_end, f, macs, quote_len, qsum);
}

static __always_inline int reject_tc(struct __sk_buff *skb, const struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 quote[MAX_QUOTE_LEN] = {};
	__u32 grow;
	__u64 quote_len; /* 64 bits: no zero-extended copy for the verifier to lose */
	__u8 macs[2 * ETH_ALEN];
	__s64 qsum;

	if (data + ETH_HLEN > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs));
	reject_layout(f, &grow, &quote_len);
	/* Keep the bounds check and the use on one register. */
	barrier_var(quote_len);
	if (quote_len < 28 || quote_len > MAX_QUOTE_LEN)
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, quote, quote_len))
		return -1;
	qsum = quote_sum(quote);
	if (qsum < 0)
		return -1;
	/* Cut after the quote, then make room after the Ethernet header;
	 * the latter also resets the skb's checksum state to CHECKSUM_NONE,
	 * so the checksums written below are final even for a locally sent
	 * packet. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + quote_len, 0))
		return -1;
	if (bpf_skb_adjust_room(skb, grow, BPF_ADJ_ROOM_MAC, 0))
		return -1;
	if (bpf_skb_pull_data(skb, ETH_HLEN + grow + quote_len))
		return -1;
	return build_reject((void *)(long)skb->data, (void *)(long)skb->data_end, f, macs, quote_len, qsum);
}
