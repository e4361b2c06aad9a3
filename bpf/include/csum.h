/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * One's complement arithmetic for the checksums the programs write by
 * hand: XDP's incremental updates (tc has the csum_replace helpers) and
 * the ICMP rejects built from scratch. Pure arithmetic, so no map here.
 */

#pragma once

#include "common.h"

/* RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m'). The sum is byte-order
 * independent, so raw network-order words are used. */
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

/* csum_fold64 folds a bpf_csum_diff sum (or a sum of them) to 16 bits. */
static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return csum_fold32((__u32)s + (__u32)(s >> 32));
}
