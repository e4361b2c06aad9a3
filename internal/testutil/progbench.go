package testutil

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/benchrand"
)

// progTestRunAttr mirrors the BPF_PROG_TEST_RUN member of union bpf_attr
// (include/uapi/linux/bpf.h), on a 64-bit machine: the __aligned_u64
// pointers are unsafe.Pointer, so that the collector sees them.
type progTestRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      unsafe.Pointer
	dataOut     unsafe.Pointer
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       unsafe.Pointer
	ctxOut      unsafe.Pointer
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// RunTimed runs prog once on frame with ctx as its context, through
// BPF_PROG_TEST_RUN, and returns the verdict and the time the kernel
// measured around the run: cilium/ebpf's Run takes a context but drops
// the time, and its Benchmark keeps the time but takes no context. A tc
// program's context names the interface, whose index is looked up in the
// calling thread's network namespace.
func RunTimed(prog *ebpf.Program, frame, ctx []byte) (uint32, time.Duration, error) {
	if unsafe.Sizeof(progTestRunAttr{}) != 80 {
		return 0, 0, errors.New("BPF_PROG_TEST_RUN from a test: 64-bit machines only")
	}
	attr := progTestRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(frame)),
		dataIn:     unsafe.Pointer(unsafe.SliceData(frame)),
		repeat:     1,
		ctxSizeIn:  uint32(len(ctx)),
		ctxIn:      unsafe.Pointer(unsafe.SliceData(ctx)),
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(frame)
	runtime.KeepAlive(ctx)
	if errno != 0 {
		return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
	}
	return attr.retval, time.Duration(attr.duration), nil
}

// MeasureProg runs prog once per iteration of b.Loop on the frame next
// returns (drawing from benchrand's generator for b.Name()), with ctx as
// its context, inside ns on a thread pinned to the last CPU it may use,
// so that consecutive runs find the caches they warmed. Every run must
// return verdict. It reports the kernel's mean time per packet
// ("ns/pkt"), its median and 99th percentile, and returns the mean and
// the number of packets. A top-level benchmark calls benchrand.Seed
// first, so that the seed is not printed inside a sub-benchmark's line.
func MeasureProg(b *testing.B, ns *NS, prog *ebpf.Program, ctx []byte, verdict uint32, next func(*rand.Rand) []byte) (float64, int) {
	b.Helper()
	r := benchrand.New(b, b.Name())
	var times []uint32
	// b.Loop runs on the namespace's thread, which is safe because Do
	// waits for it; nothing inside calls b.Fatal.
	err := ns.Do(func() error {
		unpin, err := pinLastCPU()
		if err != nil {
			return err
		}
		defer unpin()
		for b.Loop() {
			ret, d, err := RunTimed(prog, next(r), ctx)
			if err != nil {
				return err
			}
			if ret != verdict {
				return fmt.Errorf("packet %d: verdict %d, want %d", len(times)+1, int32(ret), int32(verdict))
			}
			times = append(times, uint32(d.Nanoseconds()))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(times) == 0 {
		return 0, 0
	}
	var sum float64
	for _, v := range times {
		sum += float64(v)
	}
	mean := sum / float64(len(times))
	slices.Sort(times)
	b.ReportMetric(mean, "ns/pkt")
	b.ReportMetric(float64(times[len(times)/2]), "p50-ns")
	b.ReportMetric(float64(times[len(times)*99/100]), "p99-ns")
	return mean, len(times)
}

// pinLastCPU binds the calling thread, which the caller has locked, to
// the last CPU it may run on, and returns the function that restores its
// affinity.
func pinLastCPU() (restore func(), err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("CPU affinity: %w", err)
	}
	cpu := -1
	for i := range len(old) * 64 {
		if old.IsSet(i) {
			cpu = i
		}
	}
	if cpu < 0 {
		return nil, errors.New("CPU affinity: empty set")
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() { unix.SchedSetaffinity(0, &old) }, nil
}

// TrivialProgram loads a program of type typ that only returns ret: the
// baseline a benchmark subtracts. It is closed when tb ends.
func TrivialProgram(tb testing.TB, typ ebpf.ProgramType, ret int32) *ebpf.Program {
	tb.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xdplane_trivial",
		Type:         typ,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		tb.Fatalf("load a trivial %s program: %v", typ, err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog
}
