// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* Copyright The xdplane Authors */

/*
 * xdplane's programs: one object, three entry points, and the glue that
 * sequences the features; each feature is a header of its own under
 * include/.
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
 * are rewritten (nat.h).
 */

#include <linux/pkt_cls.h>

#include "include/common.h"
#include "include/parse.h"
#include "include/nat.h"
#include "include/service.h"
#include "include/stats.h"
#include "include/conntrack.h"
#include "include/select.h"
#include "include/reject.h"
#include "include/prefilter.h"
#include "include/policy.h"
#include "include/bandwidth.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* What lb_main tells its caller to do with the packet. */
enum verdict {
	V_PASS,
	V_DROP,
	V_REJECT, /* turn into an ICMP port unreachable to the client */
};

static __always_inline enum verdict lb_forward(void *ctx, const bool xdp, const struct flow *f,
					       const struct svc_key *sk, const struct svc_value *svc,
					       __u32 len)
{
	struct ct_key key = {};
	struct ct_value *ct;
	struct backend *be = NULL;
	__u64 now = bpf_ktime_get_ns();
	__u32 be_id = 0;

	flow_key(&key, f, CT_FORWARD);

	ct = bpf_map_lookup_elem(&conntrack, &key);
	if (ct && ct->svc_id == svc->id && ct_reusable(ct, f, now)) {
		be_id = ct->backend_id;
		be = bpf_map_lookup_elem(&backends, &be_id);
		if (be && (be->svc_id != svc->id || be->cookie != ct->backend_cookie))
			be = NULL;
	}

	if (be) {
		ct_count(ct, len);
		ct_refresh_forward(ct, f, svc->id, be_id, be, now);
		count(STAT_FORWARD_EST, &stats, len);
	} else {
		/* A new flow, or one whose backend has gone. A service with
		 * source ranges admits new flows from those only. */
		if (!source_allowed(svc, f)) {
			count(STAT_SOURCE_DENIED, &stats, len);
			return V_DROP;
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
		if (ct_create(&key, f, svc->id, be_id, be, now, len, ct != NULL)) {
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

	ct_count(ct, len);
	ct_refresh_reply(ct, f, rn, bpf_ktime_get_ns());

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

	why = parse(ctx, xdp, data, data_end, len, &f);
	/* An skb's headers may reach past its linear part (a GSO skb often
	 * holds only the usual headers there). Only then, and only as far as
	 * parsing reaches, pull them in and look again: a pull on every
	 * packet would copy payload into the head of every large skb. */
	if (!xdp && why == STAT_MALFORMED && len > data_end - data) {
		struct __sk_buff *skb = ctx;

		if (!bpf_skb_pull_data(skb, len < MAX_HDR_LEN ? len : MAX_HDR_LEN)) {
			__builtin_memset(&f, 0, sizeof(f));
			why = parse(ctx, xdp, (void *)(long)skb->data, (void *)(long)skb->data_end, len, &f);
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
