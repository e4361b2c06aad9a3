package lb

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/bpf"
	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
)

// modelServices exercise every decision the datapath makes: both
// algorithms and families, weights, a terminating backend, affinity,
// source ranges, a Local policy with nothing local, and no backends.
func modelServices() []Service {
	mk := func(fe string, alg Algorithm, backends ...string) Service {
		s := svc(fe, backends...)
		s.Algorithm = alg
		return s
	}
	web := mk("10.96.0.10:80/tcp", Random, "10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080")
	web.VirtualIP = true // other ports of 10.96.0.10 are rejected
	web.Backends[1].Weight, web.Backends[2].State = 2, Terminating
	dns := mk("10.96.0.10:53/udp", Maglev, "10.0.1.2:5353", "10.0.2.2:5353")
	dns.SessionAffinity = DefaultSessionAffinity
	ranged := mk("10.96.0.12:80/tcp", Random, "10.0.1.2:8080")
	ranged.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	web6 := mk("[fd00::10]:80/tcp", Maglev, "[fd00:1::2]:8080", "[fd00:2::2]:8080", "[fd00:3::2]:8080")
	dns6 := mk("[fd00::10]:53/udp", Random, "[fd00:1::2]:5353", "[fd00:2::2]:5353")
	dns6.SessionAffinity = 30 * 1e9
	local6 := mk("[fd00::11]:80/tcp", Random, "[fd00:1::2]:8080") // a backend, none local: drop
	local6.TrafficPolicy = Local
	dns.Backends[1].State = Maintenance // affinity must not lead a client there
	return []Service{web, dns, ranged, web6, dns6, local6, mk("10.96.0.11:80/tcp", Random)}
}

var modelClients = []Flow{
	{Source: netip.MustParseAddrPort("10.0.0.2:40000"), Destination: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: TCP},
	{Source: netip.MustParseAddrPort("10.0.0.2:40000"), Destination: netip.MustParseAddrPort("10.96.0.10:53"), Protocol: UDP},
	{Source: netip.MustParseAddrPort("[fd00:9::2]:40000"), Destination: netip.MustParseAddrPort("[fd00::10]:80"), Protocol: TCP},
	{Source: netip.MustParseAddrPort("[fd00:9::2]:40000"), Destination: netip.MustParseAddrPort("[fd00::10]:53"), Protocol: UDP},
}

// FuzzModel feeds the same frames to the reference model and to all three
// programs, and requires the same decision: the counter the packet lands
// in, the verdict, and the packet's new address (any of a Random service's
// eligible backends for a new flow; exactly the one otherwise). Before
// every input, conntrack and affinity are emptied and the flows of
// modelClients established, so replies to them are translated.
func FuzzModel(f *testing.F) {
	for _, c := range modelClients {
		for _, fl := range []Flow{c, {Source: netip.AddrPortFrom(c.Source.Addr(), 40001), Destination: c.Destination, Protocol: c.Protocol}} {
			b, err := simFrame(fl.Source, fl.Destination, fl.Protocol)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, fl := range []Flow{
		{Source: netip.MustParseAddrPort("10.0.1.2:8080"), Destination: netip.MustParseAddrPort("10.0.0.2:40000"), Protocol: TCP},
		{Source: netip.MustParseAddrPort("[fd00:2::2]:5353"), Destination: netip.MustParseAddrPort("[fd00:9::2]:40000"), Protocol: UDP},
		{Source: netip.MustParseAddrPort("10.0.0.9:1000"), Destination: netip.MustParseAddrPort("10.96.0.12:80"), Protocol: TCP},
		{Source: netip.MustParseAddrPort("10.1.0.9:1000"), Destination: netip.MustParseAddrPort("10.96.0.12:80"), Protocol: TCP},
		{Source: netip.MustParseAddrPort("10.0.0.2:1000"), Destination: netip.MustParseAddrPort("10.96.0.11:80"), Protocol: TCP},
		{Source: netip.MustParseAddrPort("[fd00:9::2]:1000"), Destination: netip.MustParseAddrPort("[fd00::11]:80"), Protocol: TCP},
	} {
		b, err := simFrame(fl.Source, fl.Destination, fl.Protocol)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	dp, _ := openDatapath(f, datapath.Limits{ConntrackSize: 1024, AffinitySize: 1024})
	m, err := NewManager(dp)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	if _, err := m.Sync(modelServices()); err != nil {
		f.Fatal(err)
	}
	maps, progs := dp.Maps(), dp.Programs()
	hooks := []struct {
		name           string
		prog           *ebpf.Program
		forward, reply bool
		xdp            bool
	}{
		{"xdp", progs.XdplaneXdp, true, true, true},
		{"tc ingress", progs.XdplaneTcIngress, true, false, false},
		{"tc egress", progs.XdplaneTcEgress, false, true, false},
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > testutil.XDPLinearMax {
			return // XDP would see only part of it; see testutil.XDPLinearMax
		}
		modelReset(t, dp)
		for _, c := range modelClients {
			b, _ := simFrame(c.Source, c.Destination, c.Protocol)
			if _, err := progs.XdplaneXdp.Run(&ebpf.RunOptions{Data: b, DataOut: make([]byte, len(b)+256)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range hooks {
			want, err := modelDecide(maps, in, h.forward, h.reply)
			if err != nil {
				t.Fatal(err)
			}
			before := modelCounts(t, dp)
			out := make([]byte, len(in)+256)
			opts := ebpf.RunOptions{Data: in, DataOut: out}
			ret, err := h.prog.Run(&opts)
			if err != nil {
				// The kernel refuses some frames before any program runs.
				return
			}
			after := modelCounts(t, dp)
			got := -1
			for s := range after {
				if after[s] != before[s] {
					if got != -1 {
						t.Fatalf("%s: counted in two stats: %v -> %v", h.name, before, after)
					}
					got = s
				}
			}
			if modelStat(got) != want.stat {
				t.Fatalf("%s: kernel counted stat %d, model says %d (%+v)\n in %x", h.name, got, want.stat, want, in)
			}
			if err := modelCheck(h.xdp, want, ret, in, opts.DataOut); err != nil {
				t.Fatalf("%s: %v\n in  %x\n out %x", h.name, err, in, opts.DataOut)
			}
		}
	})
}

// modelReset empties conntrack and affinity.
func modelReset(t *testing.T, dp *datapath.Datapath) {
	t.Helper()
	for _, mp := range []*ebpf.Map{dp.Maps().Conntrack, dp.Maps().Affinity} {
		var keys [][]byte
		var k, v []byte
		it := mp.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, slices.Clone(k))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := mp.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func modelCounts(t *testing.T, dp *datapath.Datapath) [int(bpf.XdplaneStatSTAT_MAX)]uint64 {
	t.Helper()
	var out [int(bpf.XdplaneStatSTAT_MAX)]uint64
	for s := range out {
		var per []bpf.XdplaneCounter
		if err := dp.Maps().Stats.Lookup(bpf.XdplaneStat(s), &per); err != nil {
			t.Fatal(err)
		}
		for _, c := range per {
			out[s] += c.Packets
		}
	}
	return out
}

// modelCheck compares a run's verdict and output with the model's decision.
func modelCheck(xdp bool, want modelDecision, ret uint32, in, out []byte) error {
	const (
		xdpDrop, xdpPass, xdpTX      = 1, 2, 3
		tcUnspec, tcShot, tcRedirect = 0xffffffff, 2, 7
	)
	verdict := map[modelStat][2]uint32{
		mPass: {xdpPass, tcUnspec}, mMalformed: {xdpPass, tcUnspec}, mFragment: {xdpPass, tcUnspec},
		mForwardNew: {xdpPass, tcUnspec}, mForwardEst: {xdpPass, tcUnspec}, mReply: {xdpPass, tcUnspec},
		mNoBackend: {xdpTX, tcRedirect}, mUnknownPort: {xdpTX, tcRedirect},
		mSourceDenied: {xdpDrop, tcShot}, mCTFull: {xdpDrop, tcShot},
	}[want.stat]
	if want.stat == mNoBackend && want.drop {
		verdict = [2]uint32{xdpDrop, tcShot}
	}
	wantRet := verdict[1]
	if xdp {
		wantRet = verdict[0]
	}
	if ret != wantRet {
		return fmt.Errorf("verdict %d, model says %d", ret, wantRet)
	}
	switch want.stat {
	case mPass, mMalformed, mFragment:
		if !bytes.Equal(in, out) {
			return fmt.Errorf("passed with changes; the model says untouched")
		}
	case mForwardNew, mForwardEst, mReply:
		fin, _ := modelParse(in)
		fout, why := modelParse(out)
		if why != 0 {
			return fmt.Errorf("output does not parse (%d)", why)
		}
		src, dst := netip.AddrPortFrom(fout.src, fout.sport), netip.AddrPortFrom(fout.dst, fout.dport)
		inSrc, inDst := netip.AddrPortFrom(fin.src, fin.sport), netip.AddrPortFrom(fin.dst, fin.dport)
		if want.stat == mReply {
			if src != want.frontend || dst != inDst {
				return fmt.Errorf("reply %s -> %s, model says %s -> %s", src, dst, want.frontend, inDst)
			}
		} else if src != inSrc || !slices.Contains(want.backends, dst) {
			return fmt.Errorf("sent %s -> %s, model says %s -> one of %v", src, dst, inSrc, want.backends)
		}
		if packets.VerifyChecksums(in) == nil {
			if err := packets.VerifyChecksums(out); err != nil {
				return fmt.Errorf("valid checksums made invalid: %v", err)
			}
		}
	}
	return nil
}
