package bpf

// The C sources live in bpf/ at the top of the module; bpf2go compiles
// them and writes the object and its Go bindings here, out of importers'
// reach. They compile to little-endian BPF only: every platform xdplane
// targets (amd64, arm64) is little-endian. Include paths list both Debian
// multiarch directories; clang ignores the one that does not exist.
//go:generate go tool bpf2go -go-package bpf -target bpfel -type svc_key -type svc_value -type slot_key -type backend -type revnat_value -type ct_key -type ct_value -type ct_stat -type counter -type stat -type src_range_key -type vip_key -type endpoint -type peer_key -type peer_hkey -type peer_value -type port_inline -type plens -type port_key -type port_hkey -type pct_key -type pct_value -type frag_key -type frag_value -type prefilter_key -type ep_counter -type drop_reason -type drop_event -type bw_key -type bw_value -type bw_counter Xdplane ../../bpf/xdplane.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
