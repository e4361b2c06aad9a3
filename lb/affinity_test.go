package lb

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

func TestValidateSessionAffinity(t *testing.T) {
	s := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	for _, d := range []time.Duration{-time.Second, 1500 * time.Millisecond, MaxSessionAffinity + time.Second} {
		s.SessionAffinity = d
		var ve *ValidationError
		if err := s.Validate(); !errors.As(err, &ve) || ve.Field != "sessionAffinity" {
			t.Errorf("affinity %s: %v, want an error on sessionAffinity", d, err)
		}
	}
	for _, d := range []time.Duration{0, time.Second, DefaultSessionAffinity, MaxSessionAffinity} {
		s.SessionAffinity = d
		if err := s.Validate(); err != nil {
			t.Errorf("affinity %s: %v", d, err)
		}
	}
}

// runFlow sends the first packet of a flow from src to the frontend through
// XDP and returns the backend it went to.
func runFlow(t *testing.T, dp *datapath.Datapath, proto Protocol, src, fe netip.AddrPort) netip.AddrPort {
	t.Helper()
	frame := maglevFrame(t, proto, src, fe)
	out := make([]byte, len(frame)+64)
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	if ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&opts); err != nil || ret != 2 {
		t.Fatalf("run: %d, %v", ret, err)
	}
	return maglevDst(t, opts.DataOut)
}

// With session affinity, every new flow of a client reaches the same
// backend, under both algorithms, until the backend leaves or the timeout
// passes; without it, new flows spread.
func TestSessionAffinityDatapath(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	rng := rand.New(rand.NewPCG(3, 4))
	type family struct {
		name     string
		fe       string
		backends []string
		clients  []netip.Addr
	}
	for _, fam := range []family{
		{"ipv4", "10.96.0.10:80/tcp", []string{"10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080", "10.0.4.2:8080"},
			[]netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")}},
		{"ipv6", "[fd00::10]:80/tcp", []string{"[fd00:1::2]:8080", "[fd00:2::2]:8080", "[fd00:3::2]:8080", "[fd00:4::2]:8080"},
			[]netip.Addr{netip.MustParseAddr("fd00:9::2"), netip.MustParseAddr("fd00:9::3"), netip.MustParseAddr("fd00:9::4")}},
	} {
		for i, alg := range []Algorithm{Random, Maglev} {
			t.Run(fam.name+"/"+alg.String(), func(t *testing.T) {
				// A frontend port of its own, so that no conntrack entry
				// of an earlier subtest turns a new flow here into an
				// established one.
				s := svc(fam.fe, fam.backends...)
				s.Frontend.Address = netip.AddrPortFrom(s.Frontend.Address.Addr(), 80+uint16(i))
				s.Algorithm = alg
				s.SessionAffinity = DefaultSessionAffinity
				if err := m.Upsert(s); err != nil {
					t.Fatal(err)
				}
				clients := fam.clients
				first := map[netip.Addr]netip.AddrPort{}
				for range 50 {
					for _, c := range clients {
						got := runFlow(t, dp, TCP, netip.AddrPortFrom(c, uint16(20000+rng.IntN(40000))), s.Frontend.Address)
						if want, ok := first[c]; ok && got != want {
							t.Fatalf("client %s: new flow went to %s, its earlier ones to %s", c, got, want)
						}
						first[c] = got
					}
				}

				// Its backend leaves: the client gets another, and keeps that.
				c := clients[0]
				var rest []Backend
				for _, b := range s.Backends {
					if b.Address != first[c] {
						rest = append(rest, b)
					}
				}
				s.Backends = rest
				if err := m.Upsert(s); err != nil {
					t.Fatal(err)
				}
				next := runFlow(t, dp, TCP, netip.AddrPortFrom(c, 5000), s.Frontend.Address)
				if next == first[c] {
					t.Fatalf("client %s still sent to removed backend %s", c, next)
				}
				for port := uint16(5001); port < 5030; port++ {
					if got := runFlow(t, dp, TCP, netip.AddrPortFrom(c, port), s.Frontend.Address); got != next {
						t.Fatalf("after its backend left, client %s went to %s and then %s", c, next, got)
					}
				}

				// Its new backend goes into maintenance (or terminates while
				// others are active): affinity must not send it new flows.
				// Each state gets ports of its own, so that every flow is new.
				for j, st := range []BackendState{Maintenance, Terminating} {
					for i := range s.Backends {
						s.Backends[i].State = Active
						if s.Backends[i].Address == next {
							s.Backends[i].State = st
						}
					}
					if err := m.Upsert(s); err != nil {
						t.Fatal(err)
					}
					base := uint16(5100 + 100*j)
					for port := base; port < base+30; port++ {
						if got := runFlow(t, dp, TCP, netip.AddrPortFrom(c, port), s.Frontend.Address); got == next {
							t.Fatalf("affinity sent a new flow to %s, which is %s", next, st)
						}
					}
				}
				for i := range s.Backends {
					s.Backends[i].State = Active
				}
				if err := m.Upsert(s); err != nil {
					t.Fatal(err)
				}
				// A new flow, so that the client has an affinity entry to age.
				runFlow(t, dp, TCP, netip.AddrPortFrom(c, 5400), s.Frontend.Address)

				// The timeout: age the client's entry past it.
				key := bpf.XdplaneAffinityKey{Client: c.As16(), SvcId: m.services[s.Frontend].id}
				var av bpf.XdplaneAffinityValue
				if err := kernel.Of(dp).Maps.Affinity.Lookup(key, &av); err != nil {
					t.Fatal(err)
				}
				av.LastUsed -= uint64(DefaultSessionAffinity + time.Second)
				if err := kernel.Of(dp).Maps.Affinity.Put(key, av); err != nil {
					t.Fatal(err)
				}
				seen := map[netip.AddrPort]bool{}
				for port := uint16(6000); port < 6200; port++ {
					// Age it again after every flow, so each one is past the timeout.
					seen[runFlow(t, dp, TCP, netip.AddrPortFrom(c, port), s.Frontend.Address)] = true
					if err := kernel.Of(dp).Maps.Affinity.Lookup(key, &av); err != nil {
						t.Fatal(err)
					}
					av.LastUsed -= uint64(DefaultSessionAffinity + time.Second)
					if err := kernel.Of(dp).Maps.Affinity.Put(key, av); err != nil {
						t.Fatal(err)
					}
				}
				if len(seen) < 2 {
					t.Fatalf("past the timeout, 200 new flows all went to %v", seen)
				}
			})
		}
	}

	// Without affinity, one client's new flows spread.
	s := svc("10.96.0.11:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080")
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.AddrPort]bool{}
	for port := uint16(7000); port < 7100; port++ {
		seen[runFlow(t, dp, TCP, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port), s.Frontend.Address)] = true
	}
	if len(seen) != 3 {
		t.Fatalf("without affinity, 100 flows of one client reached %v", seen)
	}
}
