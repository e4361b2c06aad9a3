// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* Copyright The xdplane Authors */

/*
 * The xdplane load balancer: one object, three entry points.
 *
 *   xdplane_xdp         XDP, ingress: the node-wide prefilter, DNAT to a
 *                       backend, and reverse NAT of replies (XDP has no
 *                       egress hook)
 *   xdplane_tc_ingress  tc/TCX ingress: DNAT to a backend, then the egress
 *                       policy and bandwidth of the endpoint (pod) that
 *                       sent the packet
 *   xdplane_tc_egress   tc/TCX egress: the ingress policy of the endpoint
 *                       the packet is for, reverse NAT of replies, then
 *                       the endpoint's ingress bandwidth
 *
 * All three share lb_main(), always inlined with compile-time constants for
 * the hook, so the dead context's branches fold away and each program
 * carries only its own code. The logic differs by hook only in how bytes
 * are rewritten: XDP writes packet memory and updates checksums by hand
 * (checksums are complete on a receive path), tc goes through the
 * csum_replace helpers, which also handle CHECKSUM_PARTIAL skbs from local
 * senders.
 *
 * Anything the program cannot parse completely passes untouched: the
 * kernel's own validation then decides its fate.
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <stddef.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "include/xdplane.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define NSEC_PER_SEC 1000000000ULL
/* The farthest an L4 header may start: Ethernet, an IPv6 header and a few
 * short extension headers (IPv4's longest header is well within). */
#define MAX_L4_OFF 256
#define MAX_EXT_HDRS 4
/* What tc pulls into the linear area so that every header is readable. */
#define MAX_HDR_LEN (MAX_L4_OFF + sizeof(struct tcphdr))

/* Sizes are the defaults; the Go loader overrides max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_slots SEC(".maps");

/* The template of every maglev table; BPF_F_INNER_MAP lets each table
 * have its own size. */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16381);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct maglev_table);
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct revnat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct src_range_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} source_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vip_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

/* Indexed by backend id; max_entries is the backend limit plus one. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 262145);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, enum stat);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* What lb_main tells its caller to do with the packet. */
enum verdict {
	V_PASS,
	V_DROP,
	V_REJECT, /* turn into an ICMP port unreachable to the client */
};

union addr {
	__u8 b[16];
	__be32 w[4];
};

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

static __always_inline void count(__u32 idx, void *map, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline void v4_mapped(union addr *dst, __be32 addr)
{
	dst->w[0] = 0;
	dst->w[1] = 0;
	dst->w[2] = bpf_htonl(0xffff);
	dst->w[3] = addr;
}

static __always_inline bool is_v4_mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

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

/* An IPv6 extension header's first bytes: next header, length, and for a
 * routing header its type and segments left. Every extension header is at
 * least 8 bytes long. */
struct ext_hdr {
	__u8 next;
	__u8 len;
	__u8 routing_type;
	__u8 segments_left;
};

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

#include "policy.h"
#include "bandwidth.h"

/* One's complement helpers for XDP (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
 * The sum is byte-order independent, so raw network-order words are used. */
static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline __u16 csum_update(__u16 check, __be32 from, __be32 to)
{
	__u32 s = (__u16)~check;

	s += (__u16)~(__u16)from;
	s += (__u16)~(__u16)(from >> 16);
	s += (__u16)to;
	s += (__u16)(to >> 16);
	return (__u16)~csum_fold32(s);
}

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

static __always_inline int rewrite(void *ctx, const bool xdp, const struct flow *f, const bool dst,
				   const union addr *to, __be16 new_port)
{
	if (xdp)
		return rewrite_xdp(ctx, f, dst, to, new_port);
	return rewrite_tc(ctx, f, dst, to, new_port);
}

/* A 32-bit finaliser (MurmurHash3's fmix32): every input bit reaches every
 * output bit. */
static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/*
 * flow_hash is what Maglev looks up: the source address, the ports and the
 * protocol, each word as it sits in memory (network order, read by a
 * little-endian CPU). flowHash in package lb computes the same in Go.
 */
static __always_inline __u32 flow_hash(const struct flow *f)
{
	__u32 h = 0x9747b28c;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = mix32(h ^ f->saddr.w[i]);
	h = mix32(h ^ ((__u32)f->sport | (__u32)f->dport << 16));
	return mix32(h ^ f->proto);
}

static __always_inline struct backend *pick_backend(const struct svc_value *svc,
						    const struct flow *f, __u32 *id)
{
	struct slot_key sk = {.svc_id = svc->id};
	struct backend *be;
	__u32 *bid = NULL;

	if (svc->count == 0)
		return NULL;
	if (svc->algorithm == ALG_MAGLEV) {
		void *table = bpf_map_lookup_elem(&maglev, &svc->id);
		__u32 idx;

		if (!table || svc->maglev_size == 0)
			return NULL;
		idx = flow_hash(f) % svc->maglev_size;
		bid = bpf_map_lookup_elem(table, &idx);
	} else {
		sk.slot = bpf_get_prandom_u32() % svc->count + 1;
		bid = bpf_map_lookup_elem(&backend_slots, &sk);
	}
	if (!bid)
		return NULL;
	be = bpf_map_lookup_elem(&backends, bid);
	if (!be || be->svc_id != svc->id)
		return NULL;
	*id = *bid;
	return be;
}

/*
 * affine_backend returns the backend a client of a service with session
 * affinity used within the timeout, if it is still one of the service's.
 */
static __always_inline struct backend *affine_backend(const struct svc_value *svc,
						      const struct flow *f, __u64 now, __u32 *id)
{
	struct affinity_key ak = {.svc_id = svc->id};
	struct affinity_value *av;
	struct backend *be;
	__u32 bid;

	if (!svc->affinity_timeout)
		return NULL;
	__builtin_memcpy(ak.client, f->saddr.b, 16);
	av = bpf_map_lookup_elem(&affinity, &ak);
	if (!av || now - av->last_used > (__u64)svc->affinity_timeout * NSEC_PER_SEC)
		return NULL;
	bid = av->backend_id;
	be = bpf_map_lookup_elem(&backends, &bid);
	if (!be || be->svc_id != svc->id || be->cookie != av->backend_cookie ||
	    !(be->flags & BE_TAKES_NEW))
		return NULL;
	*id = bid;
	return be;
}

/* remember_affinity records the client's backend, and when it last
 * started a flow: the timeout runs from there, as kube-proxy's does. */
static __always_inline void remember_affinity(const struct svc_value *svc, const struct flow *f,
					      __u64 now, __u32 id, const struct backend *be)
{
	struct affinity_key ak = {.svc_id = svc->id};
	struct affinity_value av = {.last_used = now, .backend_id = id, .backend_cookie = be->cookie};

	if (!svc->affinity_timeout)
		return;
	__builtin_memcpy(ak.client, f->saddr.b, 16);
	bpf_map_update_elem(&affinity, &ak, &av, BPF_ANY);
}

/*
 * Rejecting a flow, as kube-proxy does for a service without usable
 * backends: the packet becomes an ICMP port unreachable (ICMPv6 for IPv6)
 * from the frontend to the client, quoting the offending IP header and the
 * 8 bytes after it, or the TCP header (RFC 792, 1812, 4443), and goes straight
 * back out of the interface it came in by.
 *
 * The space is made in place: headers are prepended (the original
 * Ethernet header is overwritten, its addresses saved and swapped) and the
 * packet is cut after the quote.
 */
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

static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return csum_fold32((__u32)s + (__u32)(s >> 32));
}

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

static __always_inline enum verdict lb_forward(void *ctx, const bool xdp, const struct flow *f,
					       const struct svc_key *sk, const struct svc_value *svc,
					       __u32 len)
{
	struct ct_key key = {}, rkey = {};
	struct ct_value *ct, entry = {};
	struct backend *be = NULL;
	__u64 now = bpf_ktime_get_ns();
	__u32 be_id = 0;

	flow_key(&key, f, CT_FORWARD);

	ct = bpf_map_lookup_elem(&conntrack, &key);
	if (ct && ct->svc_id == svc->id) {
		be_id = ct->backend_id;
		be = bpf_map_lookup_elem(&backends, &be_id);
		if (be && (be->svc_id != svc->id || be->cookie != ct->backend_cookie))
			be = NULL;
	}

	if (be) {
		__sync_fetch_and_add(&ct->packets, 1);
		__sync_fetch_and_add(&ct->bytes, len);
		/* Refresh at most once a second; that is also when a reply
		 * entry the LRU evicted on its own is put back. */
		if (now - ct->last_seen > NSEC_PER_SEC) {
			ct->last_seen = now;
			reply_key(&rkey, f, be);
			if (!bpf_map_lookup_elem(&conntrack, &rkey)) {
				entry.backend_id = be_id;
				entry.svc_id = svc->id;
				entry.backend_cookie = be->cookie;
				entry.last_seen = now;
				bpf_map_update_elem(&conntrack, &rkey, &entry, BPF_ANY);
			}
		}
		count(STAT_FORWARD_EST, &stats, len);
	} else {
		/* A new flow, or one whose backend has gone. A service with
		 * source ranges admits new flows from those only. */
		if (svc->flags & SVC_SOURCE_RANGES) {
			struct src_range_key rk = {.prefixlen = 32 + 128, .svc_id = bpf_htonl(svc->id)};

			__builtin_memcpy(rk.addr, f->saddr.b, 16);
			if (!bpf_map_lookup_elem(&source_ranges, &rk)) {
				count(STAT_SOURCE_DENIED, &stats, len);
				return V_DROP;
			}
		}
		/* Choose again, unless the client has a backend by session
		 * affinity. */
		be = affine_backend(svc, f, now, &be_id);
		if (!be)
			be = pick_backend(svc, f, &be_id);
		if (!be) {
			/* The service may have shrunk between the read of its
			 * count and of the slot: read it again, once. */
			svc = bpf_map_lookup_elem(&services, sk);
			if (svc)
				be = pick_backend(svc, f, &be_id);
		}
		if (!be || !svc) {
			count(STAT_NO_BACKEND, &stats, len);
			return svc && (svc->flags & SVC_DROP_NO_BACKEND) ? V_DROP : V_REJECT;
		}
		remember_affinity(svc, f, now, be_id, be);
		entry.backend_id = be_id;
		entry.svc_id = svc->id;
		entry.backend_cookie = be->cookie;
		entry.last_seen = now;
		reply_key(&rkey, f, be);
		if (bpf_map_update_elem(&conntrack, &rkey, &entry, BPF_ANY)) {
			count(STAT_CT_FULL, &stats, len);
			return V_DROP;
		}
		entry.packets = 1;
		entry.bytes = len;
		if (bpf_map_update_elem(&conntrack, &key, &entry, BPF_ANY)) {
			count(STAT_CT_FULL, &stats, len);
			return V_DROP;
		}
		count(STAT_FORWARD_NEW, &stats, len);
	}

	count(be_id, &backend_stats, len);
	if (rewrite(ctx, xdp, f, true, (const union addr *)be->addr, be->port))
		return V_DROP;
	return V_PASS;
}

static __always_inline enum verdict lb_reply(void *ctx, const bool xdp, const struct flow *f,
					     __u32 len)
{
	struct ct_key key = {};
	struct ct_value *ct;
	struct revnat_value *rn;
	__u64 now;

	flow_key(&key, f, CT_REPLY);

	ct = bpf_map_lookup_elem(&conntrack, &key);
	if (!ct) {
		count(STAT_PASS, &stats, len);
		return V_PASS;
	}
	rn = bpf_map_lookup_elem(&revnat, &ct->svc_id);
	if (!rn) {
		count(STAT_PASS, &stats, len);
		return V_PASS;
	}

	__sync_fetch_and_add(&ct->packets, 1);
	__sync_fetch_and_add(&ct->bytes, len);
	now = bpf_ktime_get_ns();
	if (now - ct->last_seen > NSEC_PER_SEC)
		ct->last_seen = now;

	count(STAT_REPLY, &stats, len);
	if (rewrite(ctx, xdp, f, false, (const union addr *)rn->addr, rn->port))
		return V_DROP;
	return V_PASS;
}

/*
 * lb_main handles one packet: with forward set, DNAT of packets for a
 * service frontend; with reply set, reverse NAT of tracked replies.
 */
static __always_inline enum verdict lb_main(void *ctx, const bool xdp, const bool forward,
					    const bool reply, void *data, void *data_end, __u32 len,
					    struct flow *fp)
{
	struct flow f = {};
	struct svc_key sk = {};
	struct svc_value *svc;
	int why;

	why = parse(data, data_end, len, &f);
	/* An skb's headers may reach past its linear part (a GSO skb often
	 * holds only the usual headers there). Only then, and only as far as
	 * parsing reaches, pull them in and look again: a pull on every
	 * packet would copy payload into the head of every large skb. */
	if (!xdp && why == STAT_MALFORMED && len > data_end - data) {
		struct __sk_buff *skb = ctx;

		if (!bpf_skb_pull_data(skb, len < MAX_HDR_LEN ? len : MAX_HDR_LEN)) {
			__builtin_memset(&f, 0, sizeof(f));
			why = parse((void *)(long)skb->data, (void *)(long)skb->data_end, len, &f);
		}
	}
	if (why) {
		count(why, &stats, len);
		return V_PASS;
	}

	if (forward) {
		__builtin_memcpy(sk.addr, f.daddr.b, 16);
		sk.port = f.dport;
		sk.proto = f.proto;
		svc = bpf_map_lookup_elem(&services, &sk);
		if (svc) {
			enum verdict v = lb_forward(ctx, xdp, &f, &sk, svc, len);

			if (v == V_REJECT)
				*fp = f;
			return v;
		}
		/* Another port of an address that belongs to services alone:
		 * rejected, as kube-proxy rejects it. */
		if (bpf_map_lookup_elem(&vips, sk.addr)) {
			count(STAT_UNKNOWN_PORT, &stats, len);
			*fp = f;
			return V_REJECT;
		}
	}
	if (reply)
		return lb_reply(ctx, xdp, &f, len);
	count(STAT_PASS, &stats, len);
	return V_PASS;
}

SEC("xdp")
int xdplane_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	/* XDP has no egress hook: replies are translated as they arrive. */
	struct flow f = {};

	if (prefilter_drop(ctx, data, data_end))
		return XDP_DROP;
	switch (lb_main(ctx, true, true, true, data, data_end, data_end - data, &f)) {
	case V_DROP:
		return XDP_DROP;
	case V_REJECT:
		return reject_xdp(ctx, &f) ? XDP_DROP : XDP_TX;
	default:
		return XDP_PASS;
	}
}

/* tc verdict for everything not dropped: TC_ACT_UNSPEC, which is TCX_NEXT,
 * so programs attached after ours still see the packet. */
static __always_inline int tc_main(struct __sk_buff *skb, const bool ingress)
{
	struct flow f = {};

	switch (lb_main(skb, false, ingress, !ingress, (void *)(long)skb->data,
			(void *)(long)skb->data_end, skb->len, &f)) {
	case V_DROP:
		return TC_ACT_SHOT;
	case V_REJECT:
		/* Out of the interface it came in by, to the client. */
		if (reject_tc(skb, &f))
			return TC_ACT_SHOT;
		return bpf_redirect(skb->ifindex, 0);
	default:
		return TC_ACT_UNSPEC;
	}
}

/* The load balancer's half of each tc program, as a global function: the
 * verifier checks it apart from policy_check, and each gets the stack to
 * itself. */
__noinline int lb_tc_ingress(struct __sk_buff *skb)
{
	return tc_main(skb, true);
}

__noinline int lb_tc_egress(struct __sk_buff *skb)
{
	return tc_main(skb, false);
}

/* Ingress: DNAT, before routing, so the kernel routes to the backend; then
 * the egress policy of the endpoint (pod) that sent the packet, which
 * judges it by the backend it now goes to. */
SEC("tc")
int xdplane_tc_ingress(struct __sk_buff *skb)
{
	int act = lb_tc_ingress(skb);

	if (act != TC_ACT_UNSPEC)
		return act;
	switch (policy_check(skb, DIR_EGRESS)) {
	case PC_DROP:
		return TC_ACT_SHOT;
	case PC_SHAPE:
		return bw_apply(skb, DIR_EGRESS) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
	}
	return TC_ACT_UNSPEC;
}

/* Egress: first the ingress policy of the endpoint the packet is for,
 * which sees a reply still from the backend; then reverse NAT, after
 * routing, so the reply was routed (and its source checked by rp_filter)
 * as the backend's, and leaves as the frontend's. */
SEC("tc")
int xdplane_tc_egress(struct __sk_buff *skb)
{
	int verdict = policy_check(skb, DIR_INGRESS), act;

	if (verdict == PC_DROP)
		return TC_ACT_SHOT;
	act = lb_tc_egress(skb);
	/* Shaped last, as the packet will leave. */
	if (verdict == PC_SHAPE && act == TC_ACT_UNSPEC && bw_apply(skb, DIR_INGRESS))
		return TC_ACT_SHOT;
	return act;
}
