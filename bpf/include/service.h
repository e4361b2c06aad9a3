/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * What a packet is for: the service maps that name frontends (services,
 * the addresses that belong to services alone, their source ranges) and
 * the frontend a reply must seem to come from (revnat). The maps live
 * here; their layouts are in xdplane.h, which user space writes them
 * through.
 */

#pragma once

#include "common.h"
#include "parse.h"

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
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct revnat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} revnat SEC(".maps");

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

/* source_allowed reports whether a service admits a new flow from f's
 * source: any source, unless it has source ranges. */
static __always_inline bool source_allowed(const struct svc_value *svc, const struct flow *f)
{
	struct src_range_key rk = {.prefixlen = 32 + 128, .svc_id = bpf_htonl(svc->id)};

	if (!(svc->flags & SVC_SOURCE_RANGES))
		return true;
	__builtin_memcpy(rk.addr, f->saddr.b, 16);
	return bpf_map_lookup_elem(&source_ranges, &rk) != NULL;
}
