/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Map layouts shared by every xdplane program. The Go side never mirrors
 * these by hand: bpf2go generates the Go types from the object's BTF, so a
 * change here shows up as a compile error in Go rather than a silent
 * mismatch.
 *
 * The layouts stay together here while each map's definition lives with
 * its concern: they are the contract with user space, and pinned maps
 * outlive the programs (a restarted or upgraded agent adopts them), so
 * every change to that contract should be one diff in one file. Structs
 * and enums only the programs see live with the code that uses them.
 *
 * Addresses are always 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d)
 * so that one key layout serves both families.
 */

#pragma once

#include <linux/types.h>

/* services: frontend -> service. Written last when a service is created
 * or grows, first when it shrinks, so no packet sees a half-written one. */
struct svc_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope; /* reserved, always 0 */
};

enum lb_algorithm {
	ALG_RANDOM = 0, /* a uniform pick over the backend slots */
	ALG_MAGLEV = 1, /* the service's table in maglev, by flow hash */
};

enum svc_flags {
	SVC_LOCAL_POLICY = 1,  /* for user space: traffic policy Local */
	SVC_SOURCE_RANGES = 2, /* new flows only from source_ranges */
	/* No backend here takes new flows, but some elsewhere would (a
	 * Local policy): drop new flows, as kube-proxy does, not reject. */
	SVC_DROP_NO_BACKEND = 4,
	SVC_VIRTUAL_IP = 8, /* for user space: the address is in vips */
};

/* vips: addresses that belong to services alone (cluster IPs) -> how many
 * services use them. TCP and UDP to their other ports are rejected. */
struct vip_key {
	__u8 addr[16];
};

enum backend_flags {
	BE_TAKES_NEW = 1, /* eligible for new flows; session affinity checks it */
};

/* source_ranges (LPM trie): a service's allowed client prefixes. The
 * service id comes first, in network order, so each service has its own
 * subtree; prefixlen counts its 32 bits plus the address prefix (an IPv4
 * prefix counts the 96 bits of the v4-mapped form too). */
struct src_range_key {
	__u32 prefixlen;
	__be32 svc_id;
	__u8 addr[16];
};

struct svc_value {
	__u32 id;    /* service id: key of slots and revnat, never 0 */
	__u16 count; /* number of backend slots, 1..count are valid */
	__u8 flags;       /* enum svc_flags */
	__u8 algorithm;   /* enum lb_algorithm */
	__u32 maglev_size; /* entries in the service's maglev table (prime) */
	__u32 affinity_timeout; /* seconds; 0: no session affinity */
};

/* affinity (LRU): a client's backend for a service with session affinity
 * (Kubernetes' ClientIP). */
struct affinity_key {
	__u8 client[16];
	__u32 svc_id;
};

struct affinity_value {
	__u64 last_used; /* bpf_ktime_get_ns of the client's latest new flow */
	__u32 backend_id;
	__u32 backend_cookie;
};

/* maglev (hash of maps): service id -> an array of maglev_size backend
 * ids, built whole in user space and swapped in with one update. */

/* backend_slots: (service, slot) -> backend id. A backend of weight w owns
 * w slots, so a uniform pick over the slots honours the weights. */
struct slot_key {
	__u32 svc_id;
	__u32 slot;
};

/* backends: backend id -> where to send. A backend id belongs to exactly
 * one service. */
struct backend {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 flags; /* enum backend_flags */
	__u32 svc_id;
	/* Random, nonzero, chosen when the backend is written: a conntrack
	 * entry must match it, so a backend id reused by a newcomer never
	 * captures an old backend's flows. */
	__u32 cookie;
	/* The rest is for user space, which decides which backends take new
	 * flows (the slots and the maglev table name only those): the
	 * backend's weight, its state (0 active, 1 terminating, 2
	 * maintenance) and whether it runs on this node. */
	__u16 weight;
	__u8 state;
	__u8 local;
};

/* revnat: service id -> the frontend replies must appear to come from. */
struct revnat_value {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

enum ct_dir {
	CT_FORWARD = 0, /* client -> frontend, as it arrives */
	CT_REPLY = 1,   /* backend -> client, as it arrives */
};

/* conntrack (LRU): one entry per direction of a load-balanced flow. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum ct_dir */
	__u16 pad;
};

struct ct_value {
	__u32 backend_id; /* forward entries: the chosen backend */
	__u32 svc_id;     /* the service, and so the revnat entry */
	__u64 last_seen;  /* bpf_ktime_get_ns, refreshed at most once a second */
	__u64 packets;
	__u64 bytes;
	__u32 backend_cookie; /* the backend's cookie when it was chosen */
	/* What the flow has shown, a byte each, only ever set to 1, so that
	 * CPUs setting different ones at once lose none. A forward entry's
	 * are the flow's, from both directions, and with last_seen give its
	 * expiry (ct_timeout). TCP: opening until the backend answers, then
	 * established, closing once either side reset it or both sent FIN;
	 * UDP: a stream once the backend answers. A reply entry's say what
	 * it has told its forward entry already. */
	__u8 seen_reply;
	__u8 fin_forward; /* the client sent FIN */
	__u8 fin_reply;	  /* the backend sent FIN */
	__u8 rst;	  /* either side sent RST */
};

/* ct_stats (per-CPU array of __u64, indexed by enum ct_stat). The
 * programs count entries they make; user space's garbage collector counts
 * those it removes, on CPU 0's copy, which nothing else writes. */
enum ct_stat {
	CT_STAT_CREATED = 0,  /* entries made (new keys, both directions) */
	CT_STAT_REOPENED = 1, /* new flows over an entry of the same 5-tuple
			       * (closed, expired, or its backend left) */
	CT_STAT_EXPIRED = 2,  /* removed by user space: idle past the timeout */
	CT_STAT_STALE = 3,    /* removed by user space: the backend left, or the
			       * reply entry's flow went elsewhere */
	CT_STAT_MAX = 4,
};

/* backend_stats (per-CPU array indexed by backend id) and stats (per-CPU
 * array indexed by enum stat). */
struct counter {
	__u64 packets;
	__u64 bytes;
};

enum stat {
	STAT_PASS = 0,        /* not for a service, not a reply: untouched */
	STAT_FORWARD_NEW = 1, /* first packet of a flow, backend chosen */
	STAT_FORWARD_EST = 2, /* packet of a tracked flow */
	STAT_REPLY = 3,       /* reply translated back to the frontend */
	STAT_NO_BACKEND = 4,  /* service with no usable backend: dropped */
	STAT_MALFORMED = 5,   /* could not be parsed: passed untouched */
	STAT_FRAGMENT = 6,    /* IPv4 fragment: passed untouched */
	STAT_CT_FULL = 7,     /* conntrack insert failed: dropped */
	STAT_SOURCE_DENIED = 8, /* source outside the service's ranges: dropped */
	STAT_UNKNOWN_PORT = 9,  /* another port of a virtual IP: rejected */
	STAT_MAX = 10,
};

/*
 * Network policy. An endpoint is a pod's host-side interface: tc ingress
 * there sees what the pod sends (its egress), tc egress what it receives
 * (its ingress).
 */
enum policy_dir {
	DIR_INGRESS = 0, /* into the endpoint: the peer is the source */
	DIR_EGRESS = 1,  /* out of the endpoint: the peer is the destination */
};

enum endpoint_flags {
	EP_INGRESS_ISOLATED = 1, /* ingress is default deny */
	EP_EGRESS_ISOLATED = 2,
	EP_INGRESS_DENY = 4, /* ingress has deny rules */
	EP_EGRESS_DENY = 8,
	EP_INGRESS_BW = 16, /* ingress has a bandwidth limit */
	EP_EGRESS_BW = 32,
};

/* endpoints: interface index -> the endpoint and its current rule sets.
 * Switching an endpoint to new rules is one update of this entry. Policy
 * and bandwidth share it, each writing its own fields from user space. */
struct endpoint {
	/* Indexes policy_stats (2 * id + dir); 0 for an entry of bandwidth's
	 * alone, which policy leaves alone. */
	__u32 id;
	/* Random, nonzero, new each time the endpoint is added: its
	 * policy_ct entries carry it, so an id reused after a removal finds
	 * none of its predecessor's flows. */
	__u32 cookie;
	__u32 ingress_policy; /* key prefix of policy_peers; 0: none */
	__u32 egress_policy;
	__u8 flags; /* enum endpoint_flags */
	__u8 pad[3];
};

/* policy_peers (LPM trie): (policy, peer address) -> struct peer_value. Laid out as
 * src_range_key: the policy id first, in network order. */
struct peer_key {
	__u32 prefixlen;
	__be32 policy_id;
	__u8 addr[16];
};

/* policy_peer_hash: the same as policy_peers for a policy whose prefixes
 * come in few lengths: one exact lookup per length, longest first, whose
 * cost does not grow with the number of prefixes as a trie walk does. The
 * address is masked to plen bits (an IPv4 prefix counts the 96 bits of
 * ::ffff:0:0/96). */
struct peer_hkey {
	__be32 policy_id;
	__u8 plen;
	__u8 pad[3];
	__u8 addr[16];
};

/*
 * The value of policy_peers and policy_peer_hash: the peer's ruleset, and
 * when that ruleset is small enough (at most PEER_INLINE entries, each for
 * every protocol, one protocol, or one port of it), the ruleset itself,
 * so that the verdict takes no second lookup.
 */
#define PEER_INLINE 6
#define PEER_NOT_INLINE 255

enum inline_kind {
	IK_ANY = 1,   /* every protocol and port: port_key prefix 32 */
	IK_PROTO = 2, /* every port of proto: prefix 40 */
	IK_PORT = 3,  /* one port of proto: prefix 56 */
};

struct port_inline {
	__u8 proto;
	__u8 kind_verdict; /* enum inline_kind << 4 | enum port_verdict */
	__be16 port;
};

struct peer_value {
	__u32 ruleset; /* 0: none */
	__u8 n;	       /* entries in ports, or PEER_NOT_INLINE */
	__u8 pad[3];
	struct port_inline ports[PEER_INLINE];
};

/* policy_lens: policy id -> how its peers are found: the prefix lengths
 * it uses, longest first, for policy_peer_hash; or, with count
 * PLENS_LPM, the trie policy_peers. */
#define PLENS_MAX 31
#define PLENS_LPM 255

struct plens {
	__u8 count;
	__u8 len[PLENS_MAX];
};

/* policy_ports (LPM trie): (ruleset, protocol, port) -> enum
 * port_verdict. A prefix length of 32 matches every protocol of the
 * ruleset, 40 every port of a protocol, 40 + b the ports sharing their top
 * b bits. ICMP and ICMPv6 are both protocol 1 here, and their "port" is
 * the ICMP type. Ruleset 0 is empty and never looked up. */
struct port_key {
	__u32 prefixlen;
	__be32 ruleset;
	__u8 proto;
	__u8 port[2]; /* network order */
	__u8 pad;
};

/* policy_port_hash: the entries of policy_ports that name one port, the
 * longest prefixes there can be, so that a hit here is the trie's answer;
 * the trie is asked only on a miss. */
struct port_hkey {
	__be32 ruleset;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

enum port_verdict {
	PV_ALLOW = 1,
	PV_DENY = 2,
};

/* policy_ct (LRU): the flows an endpoint let through, one entry for each
 * direction, so that every later packet and every reply takes one lookup. */
struct pct_key {
	__u32 endpoint; /* the endpoint's cookie */
	__u8 dir; /* enum policy_dir the packet travels */
	__u8 proto;
	__be16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport; /* ICMP echo: the identifier on the requester's side, 0 on the other */
	__be16 dport;
};

enum pct_flags {
	PCT_REPLY = 1, /* the entry of the answering direction */
};

struct pct_value {
	__u64 last_seen; /* bpf_ktime_get_ns, refreshed at most once a second */
	__u32 flags;	 /* enum pct_flags */
	__u32 pad;
};

/* frags (LRU): a fragmented datagram's ports, taken from its first
 * fragment when that passed, for the fragments that follow without them.
 * Keyed as the kernel reassembles: addresses, identification, and for
 * IPv4 the protocol. */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 id;
	__u8 proto;
	__u8 pad[3];
};

struct frag_value {
	__be16 sport;
	__be16 dport;
	__u8 icmp_type;
	__u8 proto; /* after the first fragment's extension headers */
	__u8 pad[2];
};

/* prefilter (LPM trie): source prefixes XDP drops before anything else,
 * value 1; value 0 keeps IPv4 (::ffff:0:0/96) out of an IPv6 prefix that
 * holds it. */
struct prefilter_key {
	__u32 prefixlen; /* an IPv4 prefix counts the 96 bits of ::ffff:0:0/96 */
	__u8 addr[16];
};

/* policy_stats (per-CPU array, 2 * endpoint id + dir). */
struct ep_counter {
	__u64 allowed_packets;
	__u64 allowed_bytes;
	__u64 denied_packets;
	__u64 denied_bytes;
};

/* Why a packet was denied: drop_stats' index and an event's reason.
 * drop_stats' slot 0 counts events the ring buffer had no room for. */
enum drop_reason {
	DROP_EVENTS_LOST = 0,
	DROP_DENY_RULE = 1, /* a deny rule matched */
	DROP_NO_RULE = 2,   /* isolated direction, no allow rule matched */
	DROP_FRAGMENT = 3,  /* a later fragment of no datagram that passed */
	DROP_MALFORMED = 4, /* headers the policy cannot judge */
	DROP_PREFILTER = 5, /* source in the node-wide prefilter */
	DROP_MAX = 6,
};

enum event_flags {
	EV_IPV6 = 1,
	EV_FRAGMENT = 2, /* a later fragment: ports from its first one, or 0 */
};

/* events (ring buffer): sampled drops. */
struct drop_event {
	__u64 timestamp; /* bpf_ktime_get_ns */
	__u32 endpoint;  /* 0 for the prefilter */
	__u32 ifindex;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;    /* enum policy_dir */
	__u8 reason; /* enum drop_reason */
	__u8 flags;  /* enum event_flags */
	__u32 len;   /* the packet's length */
	__u32 pad;
};

/*
 * Bandwidth: one limit per endpoint interface and direction (enum
 * policy_dir): DIR_INGRESS shapes what enters the pod, at the host side's
 * egress; DIR_EGRESS what it sends.
 */
struct bw_key {
	__u32 ifindex;
	__u8 dir;
	__u8 pad[3];
};

enum bw_mode {
	BW_EDT = 1, /* stamp departure times for an fq qdisc */
	BW_HTB = 2, /* classify into an HTB class */
};

struct bw_value {
	__u64 rate;	    /* bytes per second; 0: nothing to shape here */
	__u64 burst_ns;	    /* EDT: how far the clock may trail now */
	__u64 horizon_ns;   /* EDT: a packet with more than this queued ahead is dropped */
	__u64 clock_ns;	    /* EDT: the virtual clock, bpf_ktime_get_ns */
	__u32 priority;	    /* HTB: the class, as skb->priority */
	__u8 mode;	    /* enum bw_mode */
	__u8 pad[3];
	__u64 pps_interval_ns; /* packet-rate limit: ns a packet; 0: none */
	__u64 pps_burst_ns;    /* how far ahead its clock may run */
	__u64 pps_clock_ns;    /* its clock (theoretical arrival time) */
	/* The limit as it was set, for a restarted agent to read back; the
	 * programs never read it (it sits past the first cache line). */
	__u64 set_rate;		/* bits per second */
	__u64 set_burst;	/* bits */
	__u64 set_packet_rate;	/* packets per second */
	__u64 set_packet_burst; /* packets */
};

struct bw_counter {
	__u64 shaped_packets;
	__u64 shaped_bytes;
	__u64 dropped_packets; /* at the horizon, or by the packet-rate limit */
	__u64 dropped_bytes;
};
