/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * NAT: rewriting a packet's destination (to a backend) or source (back to
 * the frontend), ports and checksums included. The hooks differ only here:
 * XDP writes packet memory and updates checksums by hand (checksums are
 * complete on a receive path), tc goes through the csum_replace helpers,
 * which also handle CHECKSUM_PARTIAL skbs from local senders. It reads no
 * map: what to write comes from conntrack and the service maps.
 */

#pragma once

#include "common.h"
#include "csum.h"
#include "parse.h"

static __always_inline int rewrite_xdp(struct xdp_md *ctx, const struct flow *f, const bool dst,
				       const union addr *to, __be16 new_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const union addr *from = dst ? &f->daddr : &f->saddr;
	__u32 l4_off = f->l4_off;
	__be16 old_port, *ports, *port;
	__u16 *check;
	void *l4;

	if (l4_off > MAX_L4_OFF)
		return -1;
	/* One pointer for both protocols, kept in one register: clang would
	 * otherwise merge the TCP and UDP port pointers into a recomputed
	 * one whose bounds check the verifier has not seen. */
	l4 = data + l4_off;
	barrier_var(l4);
	if (l4 + sizeof(struct udphdr) > data_end)
		return -1;
	if (f->proto == IPPROTO_TCP) {
		if (l4 + sizeof(struct tcphdr) > data_end)
			return -1;
		check = l4 + offsetof(struct tcphdr, check);
	} else {
		check = l4 + offsetof(struct udphdr, check);
	}
	ports = l4; /* source and destination: first in TCP and UDP alike */
	port = dst ? &ports[1] : &ports[0];
	old_port = *port;

	/* An IPv4 UDP checksum of zero means "none" and stays so; a computed
	 * zero is sent as all ones (RFC 768, and RFC 8200 for IPv6). */
	if (!f->udp_no_csum) {
		__u16 c = *check;

		if (f->v6) {
#pragma unroll
			for (int i = 0; i < 4; i++)
				c = csum_update(c, from->w[i], to->w[i]);
		} else {
			c = csum_update(c, from->w[3], to->w[3]);
		}
		c = csum_update(c, old_port, new_port);
		if (f->proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*check = c;
	}
	*port = new_port;

	if (f->v6) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		if (dst)
			__builtin_memcpy(ip6->daddr.in6_u.u6_addr8, to->b, 16);
		else
			__builtin_memcpy(ip6->saddr.in6_u.u6_addr8, to->b, 16);
	} else {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return -1;
		ip->check = csum_update(ip->check, from->w[3], to->w[3]);
		if (dst)
			ip->daddr = to->w[3];
		else
			ip->saddr = to->w[3];
	}
	return 0;
}

static __always_inline int rewrite_tc(struct __sk_buff *skb, const struct flow *f, const bool dst,
				      const union addr *to, __be16 new_port)
{
	const union addr *from = dst ? &f->daddr : &f->saddr;
	__u32 port_off = f->l4_off + (dst ? offsetof(struct tcphdr, dest) : offsetof(struct tcphdr, source));
	__u32 csum_off = f->l4_off + (f->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							      : offsetof(struct udphdr, check));
	__u64 mangled = f->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 old_port = dst ? f->dport : f->sport;

	if (f->v6) {
		__u32 addr_off = ETH_HLEN + (dst ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
		__s64 diff = bpf_csum_diff((__be32 *)from->w, 16, (__be32 *)to->w, 16, 0);

		/* Size 0: "to" is a precomputed difference. On a
		 * CHECKSUM_COMPLETE skb the helper moves skb->csum by the
		 * pseudo-header change, as is right for IPv4, whose addresses
		 * sit outside the L4 sum. IPv6's addresses are in the packet,
		 * so the store must move skb->csum back (BPF_F_RECOMPUTE_CSUM;
		 * kernels from 6.16 offer BPF_F_IPV6 for the same). */
		if (diff < 0 || bpf_l4_csum_replace(skb, csum_off, 0, diff, mangled | BPF_F_PSEUDO_HDR))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, to->b, 16, BPF_F_RECOMPUTE_CSUM))
			return -1;
	} else {
		__u32 addr_off = ETH_HLEN + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));

		if (bpf_l4_csum_replace(skb, csum_off, from->w[3], to->w[3], mangled | BPF_F_PSEUDO_HDR | 4))
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), from->w[3], to->w[3], 4))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &to->w[3], 4, 0))
			return -1;
	}
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2))
		return -1;
	/* With a checksum field to absorb it, a port change leaves the sum of
	 * the packet's bytes alone. A UDP packet without a checksum has none,
	 * so a CHECKSUM_COMPLETE skb's csum must learn of the new port. */
	if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, f->udp_no_csum ? BPF_F_RECOMPUTE_CSUM : 0))
		return -1;
	return 0;
}

/* rewrite moves the packet's destination (dst) or source to address to and
 * port new_port; xdp, a compile-time constant, names the context. */
static __always_inline int rewrite(void *ctx, const bool xdp, const struct flow *f, const bool dst,
				   const union addr *to, __be16 new_port)
{
	if (xdp)
		return rewrite_xdp(ctx, f, dst, to, new_port);
	return rewrite_tc(ctx, f, dst, to, new_port);
}
