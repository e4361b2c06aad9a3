package lb_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// tcpFrame is a TCP packet from src to dst with flags.
func tcpFrame(t *testing.T, src, dst netip.AddrPort, f packets.TCPFlags) []byte {
	t.Helper()
	b, err := packets.IPv4{Src: src, Dst: dst, Proto: goldenIPProto(lb.TCP), TCPFlags: f}.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (g *golden) collect(t *testing.T) lb.CollectResult {
	t.Helper()
	res, err := lb.CollectConntrack(g.dp)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The collector removes the entries of flows idle past their timeout and
// of UDP flows whose backend left the service, both directions, and keeps
// the rest; its counts add up.
func TestCollectConntrackExpiredAndStale(t *testing.T) {
	fam := goldenIPv4
	a := fam.backends[0]
	x, y := netip.MustParseAddrPort("10.0.1.7:5353"), netip.MustParseAddrPort("10.0.1.8:5353")
	g := newGoldenWith(t, datapath.Options{Conntrack: goldenTimeouts},
		goldenService(lb.TCP, fam.vipTCP, a), goldenService(lb.UDP, fam.vipUDP, x))
	est, opening := fam.client, netip.AddrPortFrom(fam.client.Addr(), fam.client.Port()+1)
	g.pass(t, goldenXDP, tcpFrame(t, est, fam.vipTCP, packets.TCPFlags{SYN: true}))
	g.pass(t, goldenXDP, tcpFrame(t, a, est, packets.TCPFlags{SYN: true, ACK: true}))
	g.pass(t, goldenXDP, tcpFrame(t, opening, fam.vipTCP, packets.TCPFlags{SYN: true}))
	g.age(t, 25*time.Second) // past TCPOpening, under TCPEstablished
	udp, err := packets.IPv4{Src: fam.client, Dst: fam.vipUDP, Proto: goldenIPProto(lb.UDP), Payload: []byte("q")}.Build()
	if err != nil {
		t.Fatal(err)
	}
	g.pass(t, goldenXDP, udp)
	g.upsert(t, goldenService(lb.UDP, fam.vipUDP, y)) // x leaves

	res := g.collect(t)
	if res.Expired != 2 || res.Stale != 2 {
		t.Fatalf("removed %d expired and %d stale entries, want 2 and 2", res.Expired, res.Stale)
	}
	ct := g.conntrack(t)
	if len(ct) != 2 {
		t.Fatalf("%d entries left, want the established flow's 2: %v", len(ct), ct)
	}
	g.requireFlow(t, lb.Frontend{Address: fam.vipTCP, Protocol: lb.TCP}, est, a)
	want := lb.ConntrackStats{Entries: 2, Limit: int(datapath.DefaultConntrackSize), Created: 6, Expired: 2, Stale: 2}
	if res.Stats != want {
		t.Fatalf("stats %+v, want %+v", res.Stats, want)
	}
	// A second pass finds nothing more to do.
	if res := g.collect(t); res.Expired+res.Stale != 0 || res.Stats != want {
		t.Fatalf("second pass: %+v, want nothing removed and %+v", res, want)
	}
}

// A reply entry of a client port that has moved to another backend is
// removed once idle past the grace its protocol's opening timeout gives;
// the flow that moved keeps both its entries.
func TestCollectConntrackOrphanReplies(t *testing.T) {
	fam := goldenIPv4
	a, b := fam.backends[0], fam.backends[1]
	g := newGoldenWith(t, datapath.Options{Conntrack: goldenTimeouts}, goldenService(lb.TCP, fam.vipTCP, a))
	c := fam.client
	g.pass(t, goldenXDP, tcpFrame(t, c, fam.vipTCP, packets.TCPFlags{SYN: true}))
	g.pass(t, goldenXDP, tcpFrame(t, a, c, packets.TCPFlags{RST: true, ACK: true}))
	g.upsert(t, goldenService(lb.TCP, fam.vipTCP, b))
	g.pass(t, goldenXDP, tcpFrame(t, c, fam.vipTCP, packets.TCPFlags{SYN: true}))
	g.pass(t, goldenXDP, tcpFrame(t, b, c, packets.TCPFlags{SYN: true, ACK: true}))
	if res := g.collect(t); res.Expired+res.Stale != 0 {
		t.Fatalf("a fresh orphan was removed: %+v", res)
	}
	g.age(t, 25*time.Second)
	res := g.collect(t)
	if res.Expired != 0 || res.Stale != 1 {
		t.Fatalf("removed %d expired and %d stale entries, want the orphan reply alone", res.Expired, res.Stale)
	}
	if _, ok := g.conntrack(t)[goldenCtKey(a, c, lb.TCP, gCTReply)]; ok {
		t.Fatal("the orphan reply entry is still there")
	}
	g.requireFlow(t, lb.Frontend{Address: fam.vipTCP, Protocol: lb.TCP}, c, b)
}

// When the map is full the kernel evicts, and Evicted says so: it is
// what was made less what is there, nothing having been collected.
func TestConntrackStatsEvicted(t *testing.T) {
	fam := goldenIPv4
	const size = 256
	g := newGoldenWith(t, datapath.Options{Limits: datapath.Limits{ConntrackSize: size}}, goldenService(lb.TCP, fam.vipTCP, fam.backends[0]))
	for port := range uint16(1000) {
		g.pass(t, goldenXDP, tcpFrame(t, netip.AddrPortFrom(fam.client.Addr(), 2000+port), fam.vipTCP, packets.TCPFlags{SYN: true}))
	}
	st := g.ctStats(t)
	if st.Created != 2000 || st.Entries > size || st.Limit != size {
		t.Fatalf("stats %+v: want 2000 made, at most %d in use, of %d", st, size, size)
	}
	if st.Evicted != st.Created-uint64(st.Entries) || st.Evicted < 2000-size {
		t.Fatalf("Evicted %d, want %d - %d", st.Evicted, st.Created, st.Entries)
	}
}

// One collector at a time: a pass while another holds the lock fails
// with ErrBusy, and a datapath without programs has no timeouts to judge
// by.
func TestCollectConntrackRefuses(t *testing.T) {
	g := newGoldenWith(t, datapath.Options{})
	release, err := kernel.Lock(kernel.Of(g.dp).Dir, "conntrack-gc", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lb.CollectConntrack(g.dp); !errors.Is(err, lb.ErrBusy) {
		t.Fatalf("collect under another's lock: %v, want ErrBusy", err)
	}
	release()
	ro, err := datapath.OpenPinned(kernel.Of(g.dp).Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := lb.CollectConntrack(ro); !errors.Is(err, datapath.ErrNoPrograms) {
		t.Fatalf("collect without programs: %v, want ErrNoPrograms", err)
	}
	if _, err := lb.ReadConntrackStats(ro); err != nil {
		t.Fatalf("stats without programs: %v", err)
	}
}

// RunConntrackCollector collects on its interval, reports each pass, and
// returns when its context ends.
func TestRunConntrackCollector(t *testing.T) {
	fam := goldenIPv4
	g := newGoldenWith(t, datapath.Options{Conntrack: goldenTimeouts}, goldenService(lb.TCP, fam.vipTCP, fam.backends[0]))
	g.pass(t, goldenXDP, tcpFrame(t, fam.client, fam.vipTCP, packets.TCPFlags{SYN: true}))
	g.age(t, 25*time.Second) // past TCPOpening
	ctx, cancel := context.WithCancel(context.Background())
	reports := make(chan lb.CollectResult, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lb.RunConntrackCollector(ctx, g.dp, 10*time.Millisecond, func(res lb.CollectResult, err error) {
			if err != nil {
				t.Error(err)
			}
			select {
			case reports <- res:
			default: // the test reads the first few
			}
		})
	}()
	if res := <-reports; res.Expired != 2 || res.Stats.Entries != 0 {
		t.Errorf("first pass %+v, want the flow's 2 entries removed and none left", res)
	}
	cancel()
	<-done
	if n := len(g.conntrack(t)); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}
