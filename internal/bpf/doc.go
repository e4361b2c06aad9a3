// Package bpf holds what bpf2go generates from xdplane's C sources in the
// module's bpf/ folder: the little-endian object, embedded, and its Go
// bindings. The files are committed, so importers need no clang; `make
// generate` rebuilds them and CI fails if the result differs from what is
// committed.
//
// The Go types (XdplaneSvcKey, XdplaneCtKey, ...) are generated from the
// object's BTF, so they match the C structs by construction. Ports and
// addresses in them are in network byte order, as the programs see them.
//
// The package is internal: map layouts change between versions, and no
// importer may depend on them. Package datapath loads the object; the
// feature packages (lb, policy, bandwidth, prefilter) reach its maps
// through package kernel.
package bpf
