/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * What every other header needs: the kernel and libbpf headers, the
 * address form the maps use, and the per-CPU counter helper. It holds no
 * map: a map lives with the concern that reads it.
 */

#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <stdbool.h>
#include <stddef.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdplane.h"

#define NSEC_PER_SEC 1000000000ULL

/* An address as the maps hold it: 16 bytes, IPv4 v4-mapped. */
union addr {
	__u8 b[16];
	__be32 w[4];
};

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

/* count adds a packet of len bytes to entry idx of a per-CPU array of
 * struct counter. */
static __always_inline void count(__u32 idx, void *map, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

/*
 * quiesce is never read by a program. User space updates it to wait for
 * the programs running now to end (kernel.Handle.WaitForPrograms): the
 * kernel runs synchronize_rcu() after every successful update of a map of
 * maps, and an array's one slot can always be updated.
 */
struct quiesce_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct quiesce_inner);
} quiesce SEC(".maps");
