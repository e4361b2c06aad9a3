package lb_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Behavioural tests of Maglev: its weights, and how few flows move when a
// backend goes, over real TCP and UDP sockets across namespaces.

// Maglev honours weights: over 12000 new flows, each from a source port
// of its own, backends of weights 1, 2 and 3 get within 10% (of their own
// share) of 1/6, 2/6 and 3/6 of them. A TCP flow is a connection; a UDP
// flow is one datagram and the answer naming its backend. The source
// ports are fixed, so the result is the same on every run; and there are
// enough of them that the sampling error alone (about 2% of the smallest
// share, one standard deviation) would have to reach five deviations to
// fail it.
func TestBehaviourMaglevWeights(t *testing.T) {
	const flows = 12000
	weights := []uint16{1, 2, 3}
	total := 0
	for _, w := range weights {
		total += int(w)
	}
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, len(weights), v)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
						t.Run(proto.String(), func(t *testing.T) {
							vip := fam.vip(proto)
							s := n.service(proto, vip, servePort(proto), 0, 1, 2)
							s.Algorithm = lb.Maglev
							for i := range s.Backends {
								s.Backends[i].Weight = weights[i]
							}
							if _, err := n.mgr.Sync([]lb.Service{s}); err != nil {
								t.Fatal(err)
							}
							start := time.Now()
							names := askPorts(t, n, proto, vip, sourcePorts(n.clientAddr(fam), 20000, flows))
							elapsed := time.Since(start)
							counts := make([]int, len(weights))
							for _, name := range names {
								counts[backendIndex(t, name, fam == ipv6)]++
							}
							var report []string
							for i, w := range weights {
								share, want := float64(counts[i])/flows, float64(w)/float64(total)
								dev := (share - want) / want
								report = append(report, fmt.Sprintf("weight %d: %d (%.3f, want %.3f, %+.1f%%)", w, counts[i], share, want, 100*dev))
								if dev > 0.10 || dev < -0.10 {
									defer t.Errorf("backend %d of weight %d got %d of %d flows, %.3f; want %.3f within 10%%", i, w, counts[i], flows, share, want)
								}
							}
							t.Logf("%d %s flows in %v: %s", flows, proto, elapsed.Round(time.Millisecond), strings.Join(report, "; "))
						})
					}
				})
			}
		})
	}
}

// Maglev moves few flows when a backend goes: new flows (TCP connections,
// UDP datagrams) from the same source ports as before reach the same
// backends as before, except those that were on the removed one, give or
// take 1% of flows. Conntrack is flushed between the rounds, so that the
// choice is Maglev's alone, as on another node with the same backends.
func TestBehaviourMaglevDisruption(t *testing.T) {
	const (
		flows   = 4000
		removed = 2
	)
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 4, v)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
						t.Run(proto.String(), func(t *testing.T) {
							v6 := fam == ipv6
							vip := fam.vip(proto)
							s := n.service(proto, vip, servePort(proto), 0, 1, 2, 3)
							s.Algorithm = lb.Maglev
							if _, err := n.mgr.Sync([]lb.Service{s}); err != nil {
								t.Fatal(err)
							}
							locals := sourcePorts(n.clientAddr(fam), 20000, flows)
							before := askPorts(t, n, proto, vip, locals)
							perBackend := map[string]int{}
							for _, name := range before {
								backendIndex(t, name, v6)
								perBackend[name]++
							}
							onlyFrom(t, "before the removal", perBackend, v6, 0, 1, 2, 3)

							s = n.service(proto, vip, servePort(proto), 0, 1, 3)
							s.Algorithm = lb.Maglev
							if err := n.mgr.Upsert(s); err != nil {
								t.Fatal(err)
							}
							flushConntrack(t, n.dp)
							after := askPorts(t, n, proto, vip, locals)

							gone := backendName(removed, v6)
							var moved, wasOnRemoved int
							for i := range locals {
								backendIndex(t, after[i], v6)
								if after[i] == gone {
									t.Fatalf("from %s: reached the removed %s", locals[i], gone)
								}
								if before[i] == gone {
									wasOnRemoved++
								}
								if after[i] != before[i] {
									moved++
								}
							}
							extra := moved - wasOnRemoved
							t.Logf("%d %s flows: %d (%.1f%%) were on the removed backend (1/4 = 25%%); %d (%.1f%%) moved, %d (%.2f%%) of them from a backend that stayed",
								flows, proto, wasOnRemoved, 100*float64(wasOnRemoved)/flows, moved, 100*float64(moved)/flows, extra, 100*float64(extra)/flows)
							if extra > flows/100 {
								t.Errorf("%d of %d flows moved between backends that stayed, want at most 1%%", extra, flows)
							}
						})
					}
				})
			}
		})
	}
}

// sourcePorts returns count local addresses: addr with the ports from
// first on. They lie below the ephemeral range (32768 up), so the kernel
// gives none of them to another socket.
func sourcePorts(addr netip.Addr, first uint16, count int) []netip.AddrPort {
	out := make([]netip.AddrPort, count)
	for i := range out {
		out[i] = netip.AddrPortFrom(addr, first+uint16(i))
	}
	return out
}

// askPorts makes one flow of proto to vip from each of locals (a TCP
// connection, or a UDP datagram and its answer) and returns the answering
// backends' names, in order.
func askPorts(t *testing.T, n *lbNode, proto lb.Protocol, vip netip.AddrPort, locals []netip.AddrPort) []string {
	t.Helper()
	ask := testutil.AskTCPFrom
	if proto == lb.UDP {
		ask = testutil.AskUDPFromEach
	}
	names, err := ask(n.tp.Client, locals, vip, 2*time.Second, 4)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// flushConntrack deletes every conntrack entry, as if the flows had
// arrived at another node: the next packet of each is a new flow.
func flushConntrack(t *testing.T, dp *datapath.Datapath) {
	t.Helper()
	ct := kernel.Of(dp).Maps.Conntrack
	var (
		keys []bpf.XdplaneCtKey
		k    bpf.XdplaneCtKey
		v    bpf.XdplaneCtValue
	)
	it := ct.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate conntrack: %v", err)
	}
	for _, k := range keys {
		if err := ct.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("delete conntrack entry: %v", err)
		}
	}
}
