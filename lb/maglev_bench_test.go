package lb_test

import (
	"flag"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

var benchMaglev = flag.Int("xdplane.bench-maglev", 0,
	"Maglev services BenchmarkMaglevSync installs (default 10000, 1000 with -short)")

// BenchmarkMaglevSync measures what Maglev services cost the control
// plane, against Random services in the same run: Sync of N services into
// an empty datapath (Random, the baseline, then Maglev), an Upsert that
// changes one Maglev service's backends among the N, and the Sync that
// removes all N. It reports milliseconds per Sync, microseconds per
// service and per change, and the Maglev Sync as a multiple of the
// Random one; ns/op means nothing (0).
//
// Two shapes: every service with backends of its own ("distinct"), and
// Kubernetes-shaped services ("kube"), where every three frontends (a
// Service's cluster IP, node port and load balancer IP) share one backend
// set, and so one table layout.
func BenchmarkMaglevSync(b *testing.B) {
	testutil.RequireRoot(b)
	n := *benchMaglev
	if n == 0 {
		n = 10000
		if testing.Short() {
			n = 1000
		}
	}
	for _, c := range []struct {
		size  uint32
		shape string
	}{{lb.MinMaglevTableSize, "distinct"}, {lb.DefaultMaglevTableSize, "distinct"}, {lb.DefaultMaglevTableSize, "kube"}} {
		size := c.size
		b.Run(fmt.Sprintf("services=%d/table=%d/shape=%s", n, size, c.shape), func(b *testing.B) {
			dir := testutil.BPFFS(b)
			dp, err := datapath.Open(datapath.Options{Dir: dir, Limits: datapath.Limits{
				MaxServices: uint32(n), MaxBackends: uint32(4 * n), MaxBackendSlots: uint32(4 * n),
			}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				dp.Close()
				if err := datapath.Remove(dir); err != nil {
					b.Errorf("remove datapath: %v", err)
				}
			})
			m, err := lb.NewManager(dp)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			random, maglev := make([]lb.Service, n), make([]lb.Service, n)
			for i := range n {
				fe := lb.Frontend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 80), Protocol: lb.TCP}
				set := i
				if c.shape == "kube" {
					set = i / 3
				}
				var bes []lb.Backend
				for j := range 3 {
					bes = append(bes, lb.Backend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, byte(64 + j), byte(set >> 8), byte(set)}), 8080)})
				}
				random[i] = lb.Service{Frontend: fe, Backends: bes}
				maglev[i] = lb.Service{Frontend: fe, Backends: bes, Algorithm: lb.Maglev, MaglevTableSize: size}
			}
			sync := func(set []lb.Service) time.Duration {
				start := time.Now()
				if _, err := m.Sync(set); err != nil {
					b.Fatalf("Sync of %d services: %v", len(set), err)
				}
				return time.Since(start)
			}
			const changes = 20
			var randomAdd, maglevAdd, change, remove time.Duration
			runs := 0
			for b.Loop() {
				randomAdd += sync(random)
				sync(nil)
				maglevAdd += sync(maglev)
				// One service loses its first backend, then gets it
				// back: a table rewritten each time.
				for i := range changes {
					s := maglev[i*n/changes]
					if i%2 == 0 {
						s.Backends = s.Backends[1:]
					}
					start := time.Now()
					if err := m.Upsert(s); err != nil {
						b.Fatal(err)
					}
					change += time.Since(start)
				}
				if _, err := m.Sync(maglev); err != nil {
					b.Fatal(err)
				}
				remove += sync(nil)
				runs++
			}
			r := float64(runs)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(randomAdd.Seconds()*1e3/r, "random-sync-ms")
			b.ReportMetric(maglevAdd.Seconds()*1e3/r, "maglev-sync-ms")
			b.ReportMetric(maglevAdd.Seconds()*1e6/r/float64(n), "maglev-us/svc")
			b.ReportMetric(float64(maglevAdd)/float64(randomAdd), "x-random")
			b.ReportMetric(change.Seconds()*1e6/r/changes, "change-one-us")
			b.ReportMetric(remove.Seconds()*1e3/r, "remove-ms")
		})
	}
}
