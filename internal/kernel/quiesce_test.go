package kernel_test

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// WaitForPrograms waits for a grace period: it takes as long as an update
// of a map of maps that the kernel is known to make wait, not as long as
// a plain syscall. Judged against both, measured in the same run.
func TestWaitForProgramsWaits(t *testing.T) {
	spec, err := bpf.LoadXdplane()
	if err != nil {
		t.Fatal(err)
	}
	var maps bpf.XdplaneMaps
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
	if err := spec.LoadAndAssign(&maps, nil); err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	h := &kernel.Handle{Maps: &maps}
	fastest := func(f func()) time.Duration {
		best := time.Hour
		for range 5 {
			start := time.Now()
			f()
			best = min(best, time.Since(start))
		}
		return best
	}
	wait := fastest(func() {
		if err := h.WaitForPrograms(); err != nil {
			t.Fatal(err)
		}
	})
	plain := fastest(func() { maps.Services.Lookup(bpf.XdplaneSvcKey{}, new(bpf.XdplaneSvcValue)) })
	// A grace period spans a scheduler tick on every CPU: far longer than
	// a lookup, whatever the machine's load.
	if wait < 20*plain {
		t.Fatalf("WaitForPrograms took %s, a map lookup %s: it cannot have waited for a grace period", wait, plain)
	}
	t.Logf("WaitForPrograms %s, lookup %s", wait, plain)
}
