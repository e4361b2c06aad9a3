// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* Copyright The xdplane Authors */

/*
 * The xdplane load balancer: one object, three entry points.
 *
 *   xdplane_xdp         XDP, ingress: DNAT to a backend, and reverse NAT
 *                       of replies (XDP has no egress hook)
 *   xdplane_tc_ingress  tc/TCX ingress: DNAT to a backend
 *   xdplane_tc_egress   tc/TCX egress: reverse NAT of replies
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
/* Ethernet + the longest IPv4 header + a TCP header without options. */
#define MAX_HDR_LEN (ETH_HLEN + 60 + sizeof(struct tcphdr))

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
	__uint(max_entries, 131072);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

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
};

struct flow {
	__u32 l4_off; /* from the start of the frame */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
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

static __always_inline void v4_mapped(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr, 4);
}

/*
 * parse fills f from an Ethernet frame. It returns 0 for an IPv4 TCP or UDP
 * packet whose headers are all present and consistent, or the stat that
 * explains why the packet is not ours.
 */
static __always_inline int parse(void *data, void *data_end, __u32 pkt_len,
				 struct flow *f)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl, tot_len, l4_len;

	if ((void *)(eth + 1) > data_end)
		return STAT_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return STAT_PASS;

	ip = (void *)(eth + 1);
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
	l4_len = ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
	if (tot_len < ihl + l4_len || ETH_HLEN + tot_len > pkt_len)
		return STAT_MALFORMED;

	f->l4_off = ETH_HLEN + ihl;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = data + f->l4_off;

		if ((void *)(th + 1) > data_end)
			return STAT_MALFORMED;
		if (th->doff < 5 || th->doff * 4 > tot_len - ihl)
			return STAT_MALFORMED;
		f->sport = th->source;
		f->dport = th->dest;
	} else {
		struct udphdr *uh = data + f->l4_off;

		if ((void *)(uh + 1) > data_end)
			return STAT_MALFORMED;
		if (bpf_ntohs(uh->len) < sizeof(struct udphdr) || bpf_ntohs(uh->len) > tot_len - ihl)
			return STAT_MALFORMED;
		f->sport = uh->source;
		f->dport = uh->dest;
		f->udp_no_csum = uh->check == 0;
	}
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->proto = ip->protocol;
	return 0;
}

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
				       __be32 new_addr, __be16 new_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 l4_off = f->l4_off;
	__be32 old_addr;
	__be16 old_port;
	__u16 *check;
	__be16 *port;

	if ((void *)(ip + 1) > data_end || l4_off > ETH_HLEN + 60)
		return -1;
	if (data + l4_off + sizeof(struct tcphdr) > data_end &&
	    (f->proto == IPPROTO_TCP || data + l4_off + sizeof(struct udphdr) > data_end))
		return -1;

	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4_off;

		if ((void *)(th + 1) > data_end)
			return -1;
		check = &th->check;
		port = dst ? &th->dest : &th->source;
	} else {
		struct udphdr *uh = data + l4_off;

		if ((void *)(uh + 1) > data_end)
			return -1;
		check = &uh->check;
		port = dst ? &uh->dest : &uh->source;
	}

	old_addr = dst ? ip->daddr : ip->saddr;
	old_port = *port;

	/* A zero UDP checksum means "none" and stays so; a computed zero is
	 * sent as all ones (RFC 768). */
	if (f->proto == IPPROTO_TCP || *check != 0) {
		__u16 c = csum_update(*check, old_addr, new_addr);

		c = csum_update(c, old_port, new_port);
		if (f->proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*check = c;
	}
	ip->check = csum_update(ip->check, old_addr, new_addr);
	if (dst)
		ip->daddr = new_addr;
	else
		ip->saddr = new_addr;
	*port = new_port;
	return 0;
}

static __always_inline int rewrite_tc(struct __sk_buff *skb, const struct flow *f, const bool dst,
				      __be32 new_addr, __be16 new_port)
{
	__u32 addr_off = ETH_HLEN + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 port_off = f->l4_off + (dst ? offsetof(struct tcphdr, dest) : offsetof(struct tcphdr, source));
	__u32 csum_off = f->l4_off + (f->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							      : offsetof(struct udphdr, check));
	__u64 mangled = f->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be32 old_addr = dst ? f->daddr : f->saddr;
	__be16 old_port = dst ? f->dport : f->sport;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, mangled | BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2))
		return -1;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_addr, new_addr, 4))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0))
		return -1;
	/* With a checksum field to absorb it, a port change leaves the sum of
	 * the packet's bytes alone. A UDP packet without a checksum has none,
	 * so a CHECKSUM_COMPLETE skb's csum must learn of the new port. */
	if (bpf_skb_store_bytes(skb, port_off, &new_port, 2,
				f->udp_no_csum ? BPF_F_RECOMPUTE_CSUM : 0))
		return -1;
	return 0;
}

static __always_inline int rewrite(void *ctx, const bool xdp, const struct flow *f, const bool dst,
				   __be32 new_addr, __be16 new_port)
{
	if (xdp)
		return rewrite_xdp(ctx, f, dst, new_addr, new_port);
	return rewrite_tc(ctx, f, dst, new_addr, new_port);
}

static __always_inline struct backend *pick_backend(const struct svc_value *svc, __u32 *id)
{
	struct slot_key sk = {.svc_id = svc->id};
	struct backend *be;
	__u32 *bid;

	if (svc->count == 0)
		return NULL;
	sk.slot = bpf_get_prandom_u32() % svc->count + 1;
	bid = bpf_map_lookup_elem(&backend_slots, &sk);
	if (!bid)
		return NULL;
	be = bpf_map_lookup_elem(&backends, bid);
	if (!be || be->svc_id != svc->id)
		return NULL;
	*id = *bid;
	return be;
}

/* flow_key is the conntrack key of a packet as it arrives. */
static __always_inline void flow_key(struct ct_key *k, const struct flow *f, enum ct_dir dir)
{
	v4_mapped(k->saddr, f->saddr);
	v4_mapped(k->daddr, f->daddr);
	k->sport = f->sport;
	k->dport = f->dport;
	k->proto = f->proto;
	k->dir = dir;
}

static __always_inline void reply_key(struct ct_key *rk, const struct flow *f,
				      const struct backend *be)
{
	__builtin_memcpy(rk->saddr, be->addr, 16);
	v4_mapped(rk->daddr, f->saddr);
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
	__be32 be_addr;

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
		/* A new flow, or one whose backend has gone: choose again. */
		be = pick_backend(svc, &be_id);
		if (!be) {
			/* The service may have shrunk between the read of its
			 * count and of the slot: read it again, once. */
			svc = bpf_map_lookup_elem(&services, sk);
			if (svc)
				be = pick_backend(svc, &be_id);
		}
		if (!be || !svc) {
			count(STAT_NO_BACKEND, &stats, len);
			return V_DROP;
		}
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
	__builtin_memcpy(&be_addr, &be->addr[12], 4);
	if (rewrite(ctx, xdp, f, true, be_addr, be->port))
		return V_DROP;
	return V_PASS;
}

static __always_inline enum verdict lb_reply(void *ctx, const bool xdp, const struct flow *f,
					     __u32 len)
{
	struct ct_key key = {};
	struct ct_value *ct;
	struct revnat_value *rn;
	__be32 fe_addr;
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
	__builtin_memcpy(&fe_addr, &rn->addr[12], 4);
	if (rewrite(ctx, xdp, f, false, fe_addr, rn->port))
		return V_DROP;
	return V_PASS;
}

/*
 * lb_main handles one packet: with forward set, DNAT of packets for a
 * service frontend; with reply set, reverse NAT of tracked replies.
 */
static __always_inline enum verdict lb_main(void *ctx, const bool xdp, const bool forward,
					    const bool reply, void *data, void *data_end, __u32 len)
{
	struct flow f = {};
	struct svc_key sk = {};
	struct svc_value *svc;
	int why;

	why = parse(data, data_end, len, &f);
	if (why) {
		count(why, &stats, len);
		return V_PASS;
	}

	if (forward) {
		v4_mapped(sk.addr, f.daddr);
		sk.port = f.dport;
		sk.proto = f.proto;
		svc = bpf_map_lookup_elem(&services, &sk);
		if (svc)
			return lb_forward(ctx, xdp, &f, &sk, svc, len);
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
	if (lb_main(ctx, true, true, true, data, data_end, data_end - data) == V_DROP)
		return XDP_DROP;
	return XDP_PASS;
}

/* tc verdict for everything not dropped: TC_ACT_UNSPEC, which is TCX_NEXT,
 * so programs attached after ours still see the packet. */
static __always_inline int tc_main(struct __sk_buff *skb, const bool ingress)
{
	__u32 want = skb->len < MAX_HDR_LEN ? skb->len : MAX_HDR_LEN;

	/* Headers may sit in a paged fragment; pull only what is parsed. */
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want);

	if (lb_main(skb, false, ingress, !ingress, (void *)(long)skb->data,
		    (void *)(long)skb->data_end, skb->len) == V_DROP)
		return TC_ACT_SHOT;
	return TC_ACT_UNSPEC;
}

/* Ingress: DNAT, before routing, so the kernel routes to the backend. */
SEC("tc")
int xdplane_tc_ingress(struct __sk_buff *skb)
{
	return tc_main(skb, true);
}

/* Egress: reverse NAT, after routing, so the reply was routed (and its
 * source checked by rp_filter) as the backend's, and leaves as the
 * frontend's. */
SEC("tc")
int xdplane_tc_egress(struct __sk_buff *skb)
{
	return tc_main(skb, false);
}
