// Package bpf holds xdplane's eBPF programs: the C sources (lb.c and the
// map layouts in include/xdplane.h) and what bpf2go generates from them,
// the little-endian object and its Go bindings. The generated files are
// committed, so importers need no clang; `make generate` rebuilds them and
// CI fails if the result differs from what is committed.
//
// The Go types (XdplaneSvcKey, XdplaneCtKey, ...) are generated from the
// object's BTF, so they match the C structs by construction. Ports and
// addresses in them are in network byte order, as the programs see them.
//
// The C code is dual-licensed GPL-2.0-only OR BSD-2-Clause (its SPDX lines
// and license section say so); the rest of xdplane is Apache-2.0.
//
// Users do not load this package's objects themselves: package datapath
// does, and packages lb and policy write the maps.
package bpf
