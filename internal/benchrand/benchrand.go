package benchrand

import (
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	mrand "math/rand/v2"
	"os"
	"sync"
	"testing"
)

var seedFlag = flag.Uint64("xdplane.bench-seed", 0,
	"seed of the benchmarks' random draws; 0 (the default) draws a fresh seed each run and prints it")

var (
	mu   sync.Mutex
	seed uint64
	// out is where Seed prints the seed. Standard output, because b.Logf
	// in a benchmark that has sub-benchmarks shows only with -v.
	out io.Writer = os.Stdout
)

// Seed returns the run's seed: -xdplane.bench-seed if set, else one drawn
// from crypto/rand, never 0. The first call in a process prints it as a
// configuration line of Go's benchmark format ("xdplane.bench-seed: N"),
// which benchstat and internal/benchtable read past, so that a run's
// output says how to repeat it. Call it first thing in a top-level
// benchmark: printed from inside a sub-benchmark, the line would split
// that sub-benchmark's result line.
func Seed(tb testing.TB) uint64 {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if seed != 0 {
		return seed
	}
	s := *seedFlag
	for s == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			tb.Fatalf("draw a benchmark seed: %v", err)
		}
		s = binary.LittleEndian.Uint64(b[:])
	}
	seed = s
	fmt.Fprintf(out, "xdplane.bench-seed: %d\n", seed)
	return seed
}

// New returns a generator of the run's draws for one purpose: different
// purposes draw different sequences, and a purpose draws the same one
// every time in a run, and in every run with the same seed.
func New(tb testing.TB, purpose string) *mrand.Rand {
	tb.Helper()
	h := fnv.New64a()
	h.Write([]byte(purpose))
	return mrand.New(mrand.NewPCG(Seed(tb), h.Sum64()))
}
