package dptest

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// AgeConntrack makes every load-balancer conntrack entry of dp d older,
// as if its flow had been idle that long more. Times are the monotonic
// clock's, which starts at boot: on a machine up for less than d and a
// second, it first waits until it is not.
func AgeConntrack(tb testing.TB, dp *datapath.Datapath, d time.Duration) {
	tb.Helper()
	for {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			tb.Fatal(err)
		}
		if time.Duration(ts.Nano()) > d+time.Second {
			break
		}
		time.Sleep(time.Second)
	}
	ct := kernel.Of(dp).Maps.Conntrack
	err := kernel.Scan(ct, func(k bpf.XdplaneCtKey, v bpf.XdplaneCtValue) error {
		v.LastSeen -= uint64(d)
		return ct.Update(k, v, ebpf.UpdateExist)
	})
	if err != nil {
		tb.Fatal(err)
	}
}
