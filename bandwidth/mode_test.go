package bandwidth

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/xdplane/xdplane/internal/testutil"
)

// The main goroutine keeps the main thread, which Go cannot end: it wedges
// it instead, in whatever namespace it is. TestInNewNetNSThread counts the
// threads left in the probe's namespace, so the goroutine it leaves locked
// must run on a thread Go can end.
func init() { runtime.LockOSThread() }

// The fq probe's thread: when it cannot switch back to its namespace,
// inNewNetNS leaves it locked, so that Go ends it with its goroutine
// instead of running other goroutines in the probe's namespace; when it
// can, the thread is unlocked once, back where it was.
func TestInNewNetNSThread(t *testing.T) {
	testutil.RequireRoot(t)
	// Every thread but a namespace helper's is in the process's
	// namespace, this test's too.
	self, err := nsInode("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, back := range []bool{true, false} {
		t.Run(fmt.Sprintf("way back works=%v", back), func(t *testing.T) {
			realSet, realUnlock := setNS, unlockThread
			t.Cleanup(func() { setNS, unlockThread = realSet, realUnlock })
			var unlocks atomic.Int32
			unlockThread = func() { unlocks.Add(1); realUnlock() }
			if !back {
				setNS = func(netns.NsHandle) error { return errors.New("refused by the test") }
			}

			// A goroutine of its own: a thread left locked ends with it.
			type result struct {
				probe, after uint64 // the namespaces inside f, and after
				err          error
			}
			done := make(chan result, 1)
			go func() {
				var res result
				_, res.err = inNewNetNS(func() (bool, error) {
					var err error
					res.probe, err = nsInode("/proc/thread-self/ns/net")
					return true, err
				})
				after, err := nsInode("/proc/thread-self/ns/net")
				res.after = after
				res.err = errors.Join(res.err, err)
				done <- res
			}()
			res := <-done
			if res.probe == 0 || res.probe == self {
				t.Fatalf("f ran in namespace %d, want a new one (the process is in %d)", res.probe, self)
			}
			if back {
				if res.err != nil || unlocks.Load() != 1 || res.after != self {
					t.Errorf("way back works: err %v, %d unlocks, then in namespace %d; want no error, one unlock, back in %d",
						res.err, unlocks.Load(), res.after, self)
				}
			} else if res.err == nil || unlocks.Load() != 0 {
				t.Errorf("way back refused: err %v, %d unlocks; want an error and the thread kept locked", res.err, unlocks.Load())
			}

			// Whatever happened, no thread of the process is left in the
			// probe's namespace once the goroutine is gone: either it came
			// back, or Go ended it.
			deadline := time.Now().Add(5 * time.Second)
			for {
				n, err := threadsIn(res.probe)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d threads of the process still in the probe's namespace %d, 5 s after its goroutine ended", n, res.probe)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// nsInode identifies the network namespace a /proc ns file names.
func nsInode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// threadsIn counts the process's threads in the network namespace ino.
func threadsIn(ino uint64) (int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, task := range tasks {
		// A thread that ended since the listing is in no namespace.
		if got, err := nsInode("/proc/self/task/" + task.Name() + "/ns/net"); err == nil && got == ino {
			n++
		}
	}
	return n, nil
}
