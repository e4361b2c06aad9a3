package lb_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/xdplane/xdplane/lb"
)

// Behavioural tests of session affinity, over real TCP and UDP sockets
// across namespaces.

// With session affinity, every new flow of a client reaches the backend
// of its first, under both algorithms; when that backend stops taking new
// flows (terminating, with active ones left) or goes, the client sticks to
// its next one; without affinity, new flows spread.
func TestBehaviourSessionAffinity(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			for _, fam := range families {
				for _, alg := range []lb.Algorithm{lb.Random, lb.Maglev} {
					t.Run(fam.name+"/"+alg.String(), func(t *testing.T) {
						v6 := fam == ipv6
						// set installs fam's services over the backends
						// in states, with the affinity timeout.
						set := func(affinity time.Duration, states map[int]lb.BackendState) {
							t.Helper()
							idx := slices.Sorted(maps.Keys(states))
							svcs := n.services(fam, idx...)
							for i := range svcs {
								svcs[i].Algorithm = alg
								svcs[i].SessionAffinity = affinity
								for j, k := range idx {
									svcs[i].Backends[j].State = states[k]
								}
							}
							if _, err := n.mgr.Sync(svcs); err != nil {
								t.Fatal(err)
							}
						}
						sticky := func(when string) int {
							t.Helper()
							name := only(t, fmt.Sprintf("TCP to %s with affinity, %s", fam.tcp, when), askMany(t, n, lb.TCP, fam.tcp, 50))
							return backendIndex(t, name, v6)
						}
						// Start afresh: no affinity left from an earlier run.
						if _, err := n.mgr.Sync(nil); err != nil {
							t.Fatal(err)
						}
						all := map[int]lb.BackendState{0: lb.Active, 1: lb.Active, 2: lb.Active}
						set(lb.DefaultSessionAffinity, all)
						only(t, fmt.Sprintf("UDP to %s with affinity", fam.udp), askMany(t, n, lb.UDP, fam.udp, 50))
						first := sticky("all active")

						states := maps.Clone(all)
						states[first] = lb.Terminating
						set(lb.DefaultSessionAffinity, states)
						second := sticky(fmt.Sprintf("after %s became terminating", backendName(first, v6)))
						if second == first {
							t.Fatalf("new connections went on reaching %s, terminating", backendName(first, v6))
						}

						delete(states, second)
						set(lb.DefaultSessionAffinity, states)
						if third := sticky(fmt.Sprintf("after %s left", backendName(second, v6))); third == first || third == second {
							t.Fatalf("new connections reached %s, want the one active backend left", backendName(third, v6))
						}

						// 60 tries miss one of three backends with
						// probability 3*(2/3)^60, about 1e-10.
						set(0, all)
						for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
							onlyFrom(t, fmt.Sprintf("%s to %s without affinity", proto, fam.vip(proto)), askMany(t, n, proto, fam.vip(proto), 60), v6, 0, 1, 2)
						}
					})
				}
			}
		})
	}
}
