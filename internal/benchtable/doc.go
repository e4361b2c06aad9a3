// Command benchtable reads `go test -bench` output on stdin and prints it
// as Markdown tables:
//
//   - lb's BenchmarkPacket: per-packet cost with its ratio to the trivial
//     program measured in the same run, and the cost of installing the
//     services;
//   - policy's BenchmarkPolicyPacket: per-packet cost at each rule count,
//     with its ratio to the trivial program and what it adds to the same
//     program at an interface that is no endpoint; the cost at the largest
//     rule count over the smallest; and the cost of installing the rules;
//   - policy's BenchmarkConnPolicy: time per connection with no filtering,
//     through iptables and through xdplane, with the ratio to no
//     filtering, and xdplane against iptables at each rule count.
//
// Each table appears only when its benchmark is in the input. With -count
// above 1, every figure is the median over the runs. `make bench` pipes
// into it (internal/scripts/bench.sh).
package main
