// Package benchrand gives the benchmarks their random draws (keys, flows,
// rules) from a seed chosen afresh for each run of a test binary, so that
// a figure reflects random keys in general rather than one sequence that
// happens to suit the caches. The seed is printed ("xdplane.bench-seed: N"),
// and the flag -xdplane.bench-seed=N repeats a run's draws exactly.
//
// Within one run every generator is derived from the one seed and a
// purpose string, so the repetitions of a case (-count) draw alike and
// cases that should compare the same data (the same rules for xdplane and
// iptables) get it.
package benchrand
