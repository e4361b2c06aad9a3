/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Copyright The xdplane Authors */

/*
 * The load balancer's counters: per enum stat (what happened to a packet)
 * and per backend. Per-CPU arrays, so counting costs no atomic operation;
 * user space sums the CPUs. Their struct counter is in xdplane.h.
 */

#pragma once

#include "common.h"

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
