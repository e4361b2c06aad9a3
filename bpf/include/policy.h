/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Network policy: per-endpoint rules on tc. Its maps live here with the
 * code that reads them; their layouts are in xdplane.h, which user space
 * writes them through.
 *
 * policy_check judges one packet at an endpoint's interface. It reads
 * headers with bpf_skb_load_bytes, so it sees the same bytes however the
 * skb is laid out, and it is a global function: the verifier checks it
 * once, apart from the load balancer that shares the program.
 *
 * What it cannot parse it denies wherever a rule could deny (an isolated
 * direction, or one with deny rules): a packet must never pass a rule by
 * hiding its ports. Elsewhere the kernel's own validation decides.
 */

#pragma once

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "common.h"
#include "events.h"
#include "parse.h"

/* What policy_check returns. */
enum policy_verdict {
	PC_PASS = 0,
	PC_DROP = 1,
	PC_SHAPE = 2, /* pass, and apply the endpoint's bandwidth limit */
};

/* Sizes are the defaults; the Go loader overrides max_entries before load,
 * for all but frags. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key);
	__type(value, struct peer_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_hkey);
	__type(value, struct peer_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_peer_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct plens);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_lens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port_hkey);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_port_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct pct_key);
	__type(value, struct pct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * 4097);
	__type(key, __u32);
	__type(value, struct ep_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_stats SEC(".maps");

/* What policy_check needs of a packet. */
struct pflow {
	union addr saddr; /* IPv4 v4-mapped */
	union addr daddr;
	__be16 sport; /* TCP, UDP, SCTP; ICMP echo: see echo_ports */
	__be16 dport;
	__u8 proto;
	__u8 icmp_type;
	__u8 frag; /* enum pfrag */
	bool v6;
	__u8 hop_limit; /* IPv6 */
	__u16 l4_len;	/* IPv6: from the L4 header to the packet's end */
	__be32 frag_id;
	/* An ICMP error's quoted packet, when it has one: the flow it is
	 * about, as that flow's packets look. */
	bool has_inner;
	union addr in_saddr;
	union addr in_daddr;
	__be16 in_sport;
	__be16 in_dport;
	__u8 in_proto;
};

enum pparse {
	PP_OK = 0,
	PP_NOT_IP = 1, /* ARP and the like: policy is about IP */
	PP_MALFORMED = 2,
};

struct l4_ports {
	__be16 sport;
	__be16 dport;
};

static __always_inline bool icmp_is_echo(bool v6, __u8 type)
{
	return v6 ? type == 128 || type == 129 : type == 8 || type == 0;
}

/*
 * echo_ports gives an ICMP echo the ports of a flow: the identifier is the
 * requester's port and the other is 0, so that a reply's key is its
 * request's reversed, and a "reply" sent the request's way is not one.
 */
static __always_inline void echo_ports(bool v6, __u8 type, __be16 id, __be16 *sport, __be16 *dport)
{
	bool request = v6 ? type == 128 : type == 8;

	*sport = request ? id : 0;
	*dport = request ? 0 : id;
}

/* Errors that quote the packet they are about: destination unreachable,
 * time exceeded, parameter problem (and IPv4's source quench and
 * redirect, IPv6's packet too big). */
static __always_inline bool icmp_is_error(bool v6, __u8 type)
{
	if (v6)
		return type >= 1 && type <= 4;
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

/* l4_min is the least an L4 header must hold for its fields to be read. */
static __always_inline __u32 l4_min(__u8 proto, bool v6)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_SCTP_:
		return 12;
	case IPPROTO_ICMP:
		return v6 ? 0 : sizeof(struct icmp_min);
	case IPPROTO_ICMPV6_:
		return v6 ? sizeof(struct icmp_min) : 0;
	}
	return 0;
}

/*
 * parse_inner reads the packet an ICMP error quotes, at off: its IP header
 * and the first 8 bytes after it (all RFC 792 promises). Only a quote that
 * names a flow is kept; anything else leaves has_inner false, and the
 * error is then judged as the ICMP packet it is.
 */
static __always_inline void parse_inner(struct __sk_buff *skb, struct pflow *f, __u32 off, __u32 end)
{
	struct l4_ports p = {};
	__u32 l4;

	if (!f->v6) {
		struct iphdr ip;

		if (off + sizeof(ip) > end || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return;
		if (ip.version != 4 || ip.ihl < 5 || (ip.frag_off & bpf_htons(0x1fff)))
			return;
		l4 = off + ip.ihl * 4;
		v4_mapped(&f->in_saddr, ip.saddr);
		v4_mapped(&f->in_daddr, ip.daddr);
		f->in_proto = ip.protocol;
	} else {
		struct ipv6hdr ip6;

		if (off + sizeof(ip6) > end || bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return;
		if (ip6.version != 6)
			return;
		l4 = off + sizeof(ip6);
		__builtin_memcpy(f->in_saddr.b, ip6.saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(f->in_daddr.b, ip6.daddr.in6_u.u6_addr8, 16);
		f->in_proto = ip6.nexthdr;
	}
	switch (f->in_proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP_:
		if (l4 + sizeof(p) > end || bpf_skb_load_bytes(skb, l4, &p, sizeof(p)))
			return;
		f->in_sport = p.sport;
		f->in_dport = p.dport;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_: {
		struct icmp_min ic;

		if (l4 + sizeof(ic) > end || bpf_skb_load_bytes(skb, l4, &ic, sizeof(ic)))
			return;
		if ((f->in_proto == IPPROTO_ICMPV6_) != f->v6 || !icmp_is_echo(f->v6, ic.type))
			return;
		echo_ports(f->v6, ic.type, ic.id, &f->in_sport, &f->in_dport);
		break;
	}
	default:
		return;
	}
	f->has_inner = true;
}

/* parse_l4_pol reads what policy needs of the L4 header at off, which must
 * lie whole before end (the end of the IP packet, or of this fragment). */
static __always_inline int parse_l4_pol(struct __sk_buff *skb, struct pflow *f, __u32 off, __u32 end)
{
	__u32 need = l4_min(f->proto, f->v6);

	if (off + need > end)
		return PP_MALFORMED;
	if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP || f->proto == IPPROTO_SCTP_) {
		struct l4_ports p;

		if (bpf_skb_load_bytes(skb, off, &p, sizeof(p)))
			return PP_MALFORMED;
		f->sport = p.sport;
		f->dport = p.dport;
		return PP_OK;
	}
	if (need && (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6_)) {
		struct icmp_min ic;

		if (bpf_skb_load_bytes(skb, off, &ic, sizeof(ic)))
			return PP_MALFORMED;
		f->icmp_type = ic.type;
		if (icmp_is_echo(f->v6, ic.type)) {
			echo_ports(f->v6, ic.type, ic.id, &f->sport, &f->dport);
		} else if (icmp_is_error(f->v6, ic.type) && f->frag == PF_NONE) {
			parse_inner(skb, f, off + sizeof(ic), end);
		}
	}
	return PP_OK;
}

static __always_inline int pparse_v4(struct __sk_buff *skb, struct pflow *f)
{
	struct iphdr ip;
	__u32 ihl, tot, fo;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return PP_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return PP_MALFORMED;
	ihl = ip.ihl * 4;
	tot = bpf_ntohs(ip.tot_len);
	/* BIG TCP: a GSO packet over 64 KiB says 0 and means all of it. */
	if (tot == 0 && skb->len > ETH_HLEN + 0xffff && skb->gso_segs > 1)
		tot = skb->len - ETH_HLEN;
	if (tot < ihl || ETH_HLEN + tot > skb->len)
		return PP_MALFORMED;
	v4_mapped(&f->saddr, ip.saddr);
	v4_mapped(&f->daddr, ip.daddr);
	f->proto = ip.protocol;
	fo = bpf_ntohs(ip.frag_off);
	if (fo & 0x1fff) {
		f->frag = PF_LATER;
		f->frag_id = ip.id;
		return PP_OK;
	}
	if (fo & 0x2000) {
		f->frag = PF_FIRST;
		f->frag_id = ip.id;
	}
	return parse_l4_pol(skb, f, ETH_HLEN + ihl, ETH_HLEN + tot);
}

static __always_inline int pparse_v6(struct __sk_buff *skb, struct pflow *f)
{
	struct ipv6hdr ip6;
	__u32 off = ETH_HLEN + sizeof(ip6), end;
	struct ext_walk w = {.off = off};

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
		return PP_MALFORMED;
	if (ip6.version != 6)
		return PP_MALFORMED;
	end = off + bpf_ntohs(ip6.payload_len);
	/* Payload length 0: BIG TCP's GSO packet over 64 KiB, all of the
	 * skb; else a jumbogram, none of ours. */
	if (end == off && skb->len > ETH_HLEN + sizeof(ip6) + 0xffff && skb->gso_segs > 1)
		end = skb->len;
	if (end == off || end > skb->len)
		return PP_MALFORMED;
	/* A v4-mapped address would match IPv4 rules: never on the wire
	 * (RFC 4291 2.5.5.2), so never judged as one. */
	if (is_v4_mapped(&ip6.saddr) || is_v4_mapped(&ip6.daddr))
		return PP_MALFORMED;
	__builtin_memcpy(f->saddr.b, ip6.saddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(f->daddr.b, ip6.daddr.in6_u.u6_addr8, 16);
	f->v6 = true;
	f->hop_limit = ip6.hop_limit;
	w.next = ip6.nexthdr;

	/* Deeper than the walk goes, or cut short: denied where rules
	 * apply. */
	if (ipv6_walk(skb, false, NULL, NULL, end, &w))
		return PP_MALFORMED;
	f->frag = w.frag;
	f->frag_id = w.frag_id;
	/* A later fragment has no L4 header: policy_check takes its ports
	 * from its first fragment's. */
	if (w.frag == PF_LATER) {
		f->proto = w.next;
		return PP_OK;
	}
	if (w.off > end)
		return PP_MALFORMED;
	/* ICMP (for IPv4) inside IPv6 is no message any stack takes. */
	if (w.next == IPPROTO_ICMP)
		return PP_MALFORMED;
	f->proto = w.next;
	f->l4_len = end - w.off;
	return parse_l4_pol(skb, f, w.off, end);
}

/* pparse is a global function: its header copies take a stack frame of
 * their own, not policy_check's. */
__noinline int pparse(struct __sk_buff *skb, struct pflow *f)
{
	if (!f)
		return PP_MALFORMED;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return pparse_v4(skb, f);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pparse_v6(skb, f);
	if (skb->protocol == bpf_htons(ETH_P_ARP))
		return PP_NOT_IP;
	/* Anything else may carry IP past us: a VLAN tag the kernel takes
	 * off only after tc (a second one; the first is gone by now), or a
	 * protocol some later hook turns into IP. */
	return PP_MALFORMED;
}

/*
 * link_local_plumbing reports whether f is an IPv6 neighbour discovery or
 * multicast listener message that no policy judges, as ARP is not judged:
 * without them nothing works. Only what cannot leave the link: multicast
 * listener messages with hop limit 1, neighbour discovery with 255 (RFC
 * 4861's check: no router forwarded it). A pod may send only the small
 * messages a host sends (router and neighbour solicitations, neighbour
 * advertisements), so that they carry no data to anyone the node would
 * forward them to.
 */
static __always_inline bool link_local_plumbing(const struct pflow *f, __u32 dir)
{
	__u8 t = f->icmp_type;

	if (!f->v6 || f->proto != IPPROTO_ICMPV6_ || f->frag != PF_NONE)
		return false;
	if ((t >= 130 && t <= 132) || t == 143)
		return f->hop_limit == 1;
	if (t < 133 || t > 137 || f->hop_limit != 255)
		return false;
	if (dir == DIR_INGRESS)
		return true;
	return (t == 133 || t == 135 || t == 136) && f->l4_len <= 128;
}

/* Idle timeouts of policy_ct entries, as netfilter's defaults for an
 * established flow: past them, a packet is judged afresh. */
static __always_inline __u64 pct_timeout(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_SCTP_:
		return 432000 * NSEC_PER_SEC;
	case IPPROTO_UDP:
		return 120 * NSEC_PER_SEC;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		return 30 * NSEC_PER_SEC;
	}
	return 600 * NSEC_PER_SEC;
}

static __always_inline void pct_fill(struct pct_key *k, __u32 ep, __u32 dir, const union addr *s,
				     const union addr *d, __be16 sport, __be16 dport, __u8 proto)
{
	k->endpoint = ep;
	k->dir = dir;
	k->proto = proto;
	__builtin_memcpy(k->saddr, s->b, 16);
	__builtin_memcpy(k->daddr, d->b, 16);
	k->sport = sport;
	k->dport = dport;
}

static __always_inline void ep_count(__u32 ep, __u32 dir, bool allowed, __u32 len)
{
	__u32 idx = 2 * ep + dir;
	struct ep_counter *c = bpf_map_lookup_elem(&policy_stats, &idx);

	if (!c)
		return;
	if (allowed) {
		c->allowed_packets++;
		c->allowed_bytes += len;
	} else {
		c->denied_packets++;
		c->denied_bytes += len;
	}
}

/* mask_word is the network-order mask of the bits of 32-bit word j (0 to
 * 3) of an address that a prefix of plen bits keeps. */
static __always_inline __be32 mask_word(__u32 plen, __u32 j)
{
	__s32 bits = (__s32)plen - 32 * (__s32)j;

	if (bits <= 0)
		return 0;
	if (bits >= 32)
		return 0xffffffff;
	return bpf_htonl(0xffffffffU << (32 - bits));
}

/*
 * port_verdict_of decides (proto, port) by the rules of the peer value pv:
 * from its inline copy of a small ruleset when it has one (the most
 * specific entry that matches, as the trie would pick), else from the
 * ruleset's entries, an exact lookup for one port first, then the trie.
 */
static __always_inline __u8 port_verdict_of(const struct peer_value *pv, __u8 proto, __u16 port)
{
	struct port_key kk = {.prefixlen = 32 + 8 + 16};
	struct port_hkey phk = {};
	__u8 best = 0, verdict = 0, *v;

	if (!pv->ruleset)
		return 0;
	if (pv->n != PEER_NOT_INLINE) {
#pragma unroll
		for (int i = 0; i < PEER_INLINE; i++) {
			const struct port_inline *e = &pv->ports[i];
			__u8 kind = e->kind_verdict >> 4;

			if (i >= pv->n)
				break;
			if (kind == IK_ANY || (e->proto == proto && (kind == IK_PROTO ||
								     (kind == IK_PORT && e->port == bpf_htons(port))))) {
				if (kind > best) {
					best = kind;
					verdict = e->kind_verdict & 0xf;
				}
			}
		}
		return verdict;
	}
	phk.ruleset = bpf_htonl(pv->ruleset);
	phk.proto = proto;
	phk.port = bpf_htons(port);
	v = bpf_map_lookup_elem(&policy_port_hash, &phk);
	if (!v) {
		kk.ruleset = bpf_htonl(pv->ruleset);
		kk.proto = proto;
		kk.port[0] = port >> 8;
		kk.port[1] = port & 0xff;
		v = bpf_map_lookup_elem(&policy_ports, &kk);
	}
	return v ? *v : 0;
}

/*
 * peer_verdict decides a new flow's protocol and port by the rules of the
 * longest prefix of policy that holds addr: one exact lookup per prefix
 * length the policy uses, longest first, or one trie walk for a policy of
 * many lengths; then the peer's ruleset. It returns an enum port_verdict,
 * 0 for no rule. A global function, so that the verifier walks its loop
 * once, on its own.
 */
__noinline __u32 peer_verdict(__u32 policy, const union addr *addr, __u32 proto, __u32 port)
{
	struct plens *lens = bpf_map_lookup_elem(&policy_lens, &policy);
	struct peer_hkey hk = {.policy_id = bpf_htonl(policy)};
	struct peer_value *pv;

	if (!lens || !addr)
		return 0;
	if (lens->count == PLENS_LPM) {
		struct peer_key pk = {.prefixlen = 32 + 128, .policy_id = bpf_htonl(policy)};

		__builtin_memcpy(pk.addr, addr->b, 16);
		pv = bpf_map_lookup_elem(&policy_peers, &pk);
		return pv ? port_verdict_of(pv, proto, port) : 0;
	}
	for (__u32 i = 0; i < PLENS_MAX; i++) {
		__be32 *w = (__be32 *)hk.addr;
		__u32 plen;

		if (i >= lens->count)
			break;
		plen = lens->len[i];
		hk.plen = plen;
		w[0] = addr->w[0] & mask_word(plen, 0);
		w[1] = addr->w[1] & mask_word(plen, 1);
		w[2] = addr->w[2] & mask_word(plen, 2);
		w[3] = addr->w[3] & mask_word(plen, 3);
		pv = bpf_map_lookup_elem(&policy_peer_hash, &hk);
		if (pv)
			return port_verdict_of(pv, proto, port);
	}
	return 0;
}

/*
 * judge decides a new flow by the endpoint's rules: a few exact lookups
 * (or one trie walk) for the peer, one or two for the port, whatever the
 * number of rules. It returns 0 to allow, else the drop reason.
 */
static __always_inline __u32 judge(const struct endpoint *ep, __u32 dir, const struct pflow *f)
{
	bool isolated = ep->flags & (dir == DIR_INGRESS ? EP_INGRESS_ISOLATED : EP_EGRESS_ISOLATED);
	__u32 policy = dir == DIR_INGRESS ? ep->ingress_policy : ep->egress_policy;
	union addr peer;
	__u8 proto = f->proto;
	__u16 port;
	__u32 v;

	if (!policy)
		return isolated ? DROP_NO_RULE : 0;
	/* Rules name ICMP once for both families. */
	if (f->v6)
		proto = proto == IPPROTO_ICMPV6_ ? IPPROTO_ICMP : proto == IPPROTO_ICMP ? 255 : proto;
	if (proto == IPPROTO_ICMP)
		port = f->icmp_type;
	else if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP_)
		port = bpf_ntohs(f->dport);
	else
		port = 0;
	__builtin_memcpy(peer.b, dir == DIR_INGRESS ? f->saddr.b : f->daddr.b, 16);
	v = peer_verdict(policy, &peer, proto, port);
	if (v == PV_DENY)
		return DROP_DENY_RULE;
	if (v == PV_ALLOW)
		return 0;
	return isolated ? DROP_NO_RULE : 0;
}

/*
 * policy_check judges a packet at its interface, in direction dir of the
 * endpoint there. It returns PC_DROP to drop it, else PC_SHAPE if the
 * endpoint has a bandwidth limit in that direction, else PC_PASS: so an
 * interface that is no endpoint costs policy and bandwidth one lookup.
 */
__noinline int policy_check(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex, len = skb->len, reason;
	struct pct_key key = {}, rkey = {};
	struct pct_value *ct, entry = {};
	struct frag_key fk = {};
	struct frag_value *fv;
	struct pflow f = {};
	struct endpoint *ep;
	bool enforced, tracked;
	__u8 evflags = 0;
	__u64 now;
	int r, pass;

	if (dir > DIR_EGRESS)
		return PC_PASS;
	ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ep)
		return PC_PASS;
	pass = ep->flags & (dir == DIR_INGRESS ? EP_INGRESS_BW : EP_EGRESS_BW) ? PC_SHAPE : PC_PASS;
	/* An entry of bandwidth's alone (id 0): no policy to judge by, no
	 * flows to track for one, nothing to count. */
	if (!ep->id)
		return pass;
	enforced = ep->flags & (dir == DIR_INGRESS ? EP_INGRESS_ISOLATED | EP_INGRESS_DENY
						   : EP_EGRESS_ISOLATED | EP_EGRESS_DENY);
	r = pparse(skb, &f);
	if (r == PP_NOT_IP)
		return pass;
	if (f.v6)
		evflags |= EV_IPV6;
	if (r != PP_OK) {
		if (!enforced)
			goto allow;
		reason = DROP_MALFORMED;
		goto deny;
	}

	if (link_local_plumbing(&f, dir))
		goto allow;

	if (f.frag != PF_NONE) {
		__builtin_memcpy(fk.saddr, f.saddr.b, 16);
		__builtin_memcpy(fk.daddr, f.daddr.b, 16);
		fk.id = f.frag_id;
		fk.proto = f.v6 ? 0 : f.proto;
	}
	if (f.frag == PF_LATER) {
		evflags |= EV_FRAGMENT;
		fv = bpf_map_lookup_elem(&frags, &fk);
		if (!fv) {
			if (!enforced)
				goto allow;
			reason = DROP_FRAGMENT;
			goto deny;
		}
		f.sport = fv->sport;
		f.dport = fv->dport;
		f.icmp_type = fv->icmp_type;
		/* IPv6: the next header after the fragment header may be an
		 * extension header; the first fragment walked past it. */
		f.proto = fv->proto;
	}

	now = bpf_ktime_get_ns();
	/* ICMP messages other than echo make no flow: each is judged on its
	 * own (an error, by the flow it quotes). */
	tracked = (f.proto != IPPROTO_ICMP && f.proto != IPPROTO_ICMPV6_) ||
		  icmp_is_echo(f.v6, f.icmp_type);
	pct_fill(&key, ep->cookie, dir, &f.saddr, &f.daddr, f.sport, f.dport, f.proto);
	ct = tracked ? bpf_map_lookup_elem(&policy_ct, &key) : NULL;
	if (ct && now - ct->last_seen <= pct_timeout(f.proto)) {
		/* Refresh at most once a second, the other direction's entry
		 * too (put back if the LRU evicted it), so that a flow busy
		 * one way keeps its replies' way open. */
		if (now - ct->last_seen > NSEC_PER_SEC) {
			ct->last_seen = now;
			entry.last_seen = now;
			entry.flags = ct->flags ^ PCT_REPLY;
			pct_fill(&rkey, ep->cookie, dir ^ 1, &f.daddr, &f.saddr, f.dport, f.sport, f.proto);
			bpf_map_update_elem(&policy_ct, &rkey, &entry, BPF_ANY);
		}
		goto pass;
	}
	reason = judge(ep, dir, &f);
	/* An ICMP error about a flow that passed here the other way, on its
	 * way back to that flow's sender, passes unless a deny rule names
	 * its own peer (the router or host that sent it). */
	if (reason == DROP_NO_RULE && f.has_inner &&
	    f.daddr.w[0] == f.in_saddr.w[0] && f.daddr.w[1] == f.in_saddr.w[1] &&
	    f.daddr.w[2] == f.in_saddr.w[2] && f.daddr.w[3] == f.in_saddr.w[3]) {
		pct_fill(&rkey, ep->cookie, dir ^ 1, &f.in_saddr, &f.in_daddr, f.in_sport, f.in_dport,
			 f.in_proto);
		ct = bpf_map_lookup_elem(&policy_ct, &rkey);
		if (ct && now - ct->last_seen <= pct_timeout(f.in_proto))
			reason = 0;
	}
	if (reason)
		goto deny;

	if (!tracked)
		goto pass;
	/* A new flow: both directions' entries, so the replies pass whatever
	 * the other direction's rules say. */
	entry.last_seen = now;
	entry.flags = 0;
	bpf_map_update_elem(&policy_ct, &key, &entry, BPF_ANY);
	entry.flags = PCT_REPLY;
	pct_fill(&rkey, ep->cookie, dir ^ 1, &f.daddr, &f.saddr, f.dport, f.sport, f.proto);
	bpf_map_update_elem(&policy_ct, &rkey, &entry, BPF_ANY);
pass:
	if (f.frag == PF_FIRST) {
		struct frag_value nv = {
			.sport = f.sport, .dport = f.dport, .icmp_type = f.icmp_type, .proto = f.proto};

		bpf_map_update_elem(&frags, &fk, &nv, BPF_ANY);
	}
allow:
	ep_count(ep->id, dir, true, len);
	return pass;
deny:
	/* A denied first fragment must not leave an older datagram's ports
	 * for the fragments that follow it. */
	if (f.frag == PF_FIRST)
		bpf_map_delete_elem(&frags, &fk);
	ep_count(ep->id, dir, false, len);
	count(reason, &drop_stats, len);
	emit_drop(ep->id, ifindex, dir, reason, &f.saddr, &f.daddr, f.sport, f.dport, f.proto,
		  evflags, len);
	return PC_DROP;
}
