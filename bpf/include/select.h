/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * Backend selection for a new flow: a uniform pick over the service's
 * slots (which honours weights), Maglev's consistent hash, and session
 * affinity, which comes first. The maps it reads live here: backends,
 * their slots, the Maglev tables and the affinity records; their layouts
 * are in xdplane.h with every layout user space shares.
 */

#pragma once

#include "common.h"
#include "parse.h"

/* Sizes are the defaults; the Go loader overrides max_entries before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_slots SEC(".maps");

/* The template of every maglev table; BPF_F_INNER_MAP lets each table
 * have its own size, BPF_F_MMAPABLE lets user space fill it through a
 * mapping (a twentieth of the kernel's work of a batch update). */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16381);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
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
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity SEC(".maps");

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

/* pick_backend chooses a new flow's backend among those the service's
 * slots or Maglev table name: NULL if it finds none that is the
 * service's. */
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
