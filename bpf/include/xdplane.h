/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Map layouts shared by every xdplane program. The Go side never mirrors
 * these by hand: bpf2go generates the Go types from the object's BTF, so a
 * change here shows up as a compile error in Go rather than a silent
 * mismatch.
 *
 * Addresses are always 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d)
 * so that one key layout serves both families.
 */
#ifndef XDPLANE_H
#define XDPLANE_H

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
	__u32 pad;
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

#endif
