package lb_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

var (
	fuzzClient     = netip.MustParseAddrPort("10.0.0.2:40000")
	fuzzVIPTCP     = netip.MustParseAddrPort("10.96.0.10:80")
	fuzzVIPUDP     = netip.MustParseAddrPort("10.96.0.10:53")
	fuzzBackendTCP = netip.MustParseAddrPort("10.0.1.2:8080")
	fuzzBackendUDP = netip.MustParseAddrPort("10.0.1.2:5353")

	fuzzClient6     = netip.MustParseAddrPort("[fd00:9::2]:40000")
	fuzzVIP6TCP     = netip.MustParseAddrPort("[fd00::10]:80")
	fuzzVIP6UDP     = netip.MustParseAddrPort("[fd00::10]:53")
	fuzzBackend6TCP = netip.MustParseAddrPort("[fd00:1::2]:8080")
	fuzzBackend6UDP = netip.MustParseAddrPort("[fd00:1::2]:5353")
)

// FuzzPrograms feeds arbitrary frames to the three programs, with one TCP
// and one UDP service per address family installed and, before every
// input, conntrack emptied and one TCP and one UDP flow from fuzzClient and
// from fuzzClient6 established (so that replies to them can be
// translated). It checks what must hold for any input:
//   - nothing is dropped (every service has a backend);
//   - tc ingress only ever DNATs, tc egress only ever reverse-NATs, and
//     XDP does whichever of the two applies, with the same bytes; in
//     either order of the hooks, so both the new-flow and the
//     established-flow paths of each are compared;
//   - a rewritten frame differs only in the fields NAT owns (addresses,
//     ports, checksums; IPv6 has no header checksum), now names the
//     backend (or, for a reply, the frontend) of its own address family,
//     and keeps valid checksums valid.
func FuzzPrograms(f *testing.F) {
	for _, p := range []packets.IPv4{
		{Src: fuzzClient, Dst: fuzzVIPTCP, Proto: layers.IPProtocolTCP, Payload: []byte("GET / HTTP/1.1\r\n")},
		{Src: fuzzClient, Dst: fuzzVIPUDP, Proto: layers.IPProtocolUDP, Payload: []byte("query")},
		{Src: fuzzClient, Dst: fuzzVIPUDP, Proto: layers.IPProtocolUDP, UDPNoChecksum: true},
		{Src: fuzzClient, Dst: fuzzVIPTCP, Proto: layers.IPProtocolTCP, Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}},
		{Src: fuzzBackendTCP, Dst: fuzzClient, Proto: layers.IPProtocolTCP, Payload: []byte("HTTP/1.1 200 OK\r\n")},
		{Src: fuzzBackendUDP, Dst: fuzzClient, Proto: layers.IPProtocolUDP, Payload: []byte("answer")},
		{Src: fuzzClient, Dst: fuzzVIPTCP, Proto: layers.IPProtocolTCP, Flags: layers.IPv4MoreFragments},
	} {
		b, err := p.Build()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	hop := netip.MustParseAddr("fd00:5::1")
	for _, p := range []packets.IPv6{
		{Src: fuzzClient6, Dst: fuzzVIP6TCP, Proto: layers.IPProtocolTCP, Payload: []byte("GET / HTTP/1.1\r\n")},
		{Src: fuzzClient6, Dst: fuzzVIP6UDP, Proto: layers.IPProtocolUDP, Payload: []byte("query")},
		{Src: fuzzBackend6TCP, Dst: fuzzClient6, Proto: layers.IPProtocolTCP, Payload: []byte("HTTP/1.1 200 OK\r\n")},
		{Src: fuzzBackend6UDP, Dst: fuzzClient6, Proto: layers.IPProtocolUDP, Payload: []byte("answer")},
		{Src: fuzzClient6, Dst: fuzzVIP6TCP, Proto: layers.IPProtocolTCP, Ext: []packets.IPv6Ext{packets.HopByHop, packets.Routing(0, 0, hop), packets.DestOpts}},
		{Src: fuzzClient6, Dst: fuzzVIP6UDP, Proto: layers.IPProtocolUDP, Payload: []byte("q"), Ext: []packets.IPv6Ext{packets.AH}},
		{Src: fuzzBackend6UDP, Dst: fuzzClient6, Proto: layers.IPProtocolUDP, Payload: []byte("a"), Ext: []packets.IPv6Ext{packets.DestOpts, packets.AH}},
		{Src: fuzzBackend6TCP, Dst: fuzzClient6, Proto: layers.IPProtocolTCP, Ext: []packets.IPv6Ext{packets.HopByHop, packets.DestOpts, packets.Routing(2, 0, hop), packets.AH}},
		{Src: fuzzClient6, Dst: fuzzVIP6TCP, Proto: layers.IPProtocolTCP, Ext: []packets.IPv6Ext{packets.Fragment(0, true, 1)}},
		{Src: fuzzClient6, Dst: fuzzVIP6UDP, Proto: layers.IPProtocolUDP, NoL4Header: true, Payload: []byte("tail"), Ext: []packets.IPv6Ext{packets.Fragment(9, false, 1)}},
		{Src: fuzzClient6, Dst: netip.AddrPortFrom(netip.AddrFrom16(fuzzVIPTCP.Addr().As16()), 80), Proto: layers.IPProtocolTCP},
	} {
		b, err := p.Build()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	dir := testutil.BPFFS(f)
	// A small conntrack: it is emptied for every input, by iterating it.
	dp, err := datapath.Open(datapath.Options{Dir: dir, Limits: datapath.Limits{ConntrackSize: 1024}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		dp.Close()
		datapath.Remove(dir)
	})
	m, err := lb.NewManager(dp)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() }) // before Remove, which refuses while it is open
	if _, err := m.Sync([]lb.Service{
		{Frontend: lb.Frontend{Address: fuzzVIPTCP, Protocol: lb.TCP}, Backends: []lb.Backend{{Address: fuzzBackendTCP}}},
		{Frontend: lb.Frontend{Address: fuzzVIPUDP, Protocol: lb.UDP}, Backends: []lb.Backend{{Address: fuzzBackendUDP}}},
		{Frontend: lb.Frontend{Address: fuzzVIP6TCP, Protocol: lb.TCP}, Backends: []lb.Backend{{Address: fuzzBackend6TCP}}},
		{Frontend: lb.Frontend{Address: fuzzVIP6UDP, Protocol: lb.UDP}, Backends: []lb.Backend{{Address: fuzzBackend6UDP}}},
	}); err != nil {
		f.Fatal(err)
	}
	progs := kernel.Of(dp).Programs

	ct := kernel.Of(dp).Maps.Conntrack
	flush := func(t *testing.T) {
		var keys []bpf.XdplaneCtKey
		var k bpf.XdplaneCtKey
		var v bpf.XdplaneCtValue
		it := ct.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, k)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := ct.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
	}

	var established [][]byte
	for _, p := range []packets.IPv4{
		{Src: fuzzClient, Dst: fuzzVIPTCP, Proto: layers.IPProtocolTCP},
		{Src: fuzzClient, Dst: fuzzVIPUDP, Proto: layers.IPProtocolUDP},
	} {
		b, err := p.Build()
		if err != nil {
			f.Fatal(err)
		}
		established = append(established, b)
	}
	for _, p := range []packets.IPv6{
		{Src: fuzzClient6, Dst: fuzzVIP6TCP, Proto: layers.IPProtocolTCP},
		{Src: fuzzClient6, Dst: fuzzVIP6UDP, Proto: layers.IPProtocolUDP},
	} {
		b, err := p.Build()
		if err != nil {
			f.Fatal(err)
		}
		established = append(established, b)
	}
	reset := func(t *testing.T) {
		flush(t)
		for _, b := range established {
			if _, _, err := fuzzRun(progs.XdplaneXdp, b); err != nil {
				t.Fatal(err)
			}
		}
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > testutil.XDPLinearMax {
			return // XDP would see only part of it; see testutil.XDPLinearMax
		}
		type result struct {
			ret uint32
			out []byte
			err error
		}
		hooks := map[string]*ebpf.Program{"xdp": progs.XdplaneXdp, "tc ingress": progs.XdplaneTcIngress, "tc egress": progs.XdplaneTcEgress}
		var orders [2]map[string]result
		for i, order := range [][]string{{"xdp", "tc ingress", "tc egress"}, {"tc ingress", "tc egress", "xdp"}} {
			reset(t)
			orders[i] = map[string]result{}
			for _, name := range order {
				ret, out, err := fuzzRun(hooks[name], in)
				// The kernel refuses some frames (shorter than Ethernet;
				// for tc, an IPv4 frame without a full IPv4 header)
				// before any program runs.
				if errors.Is(err, unix.EINVAL) {
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				want := uint32(0xffffffff) // TC_ACT_UNSPEC
				if name == "xdp" {
					want = 2 // XDP_PASS
				}
				if ret != want {
					t.Fatalf("%s: verdict %#x, want pass (every service has a backend)", name, ret)
				}
				orders[i][name] = result{ret, out, err}
			}
		}
		for name := range hooks {
			if a, b := orders[0][name].out, orders[1][name].out; !bytes.Equal(a, b) {
				t.Fatalf("%s gives different bytes depending on which hook saw the flow first:\n in %x\n %x\n %x", name, in, a, b)
			}
		}
		x, ing, eg := orders[0]["xdp"].out, orders[0]["tc ingress"].out, orders[0]["tc egress"].out
		changedIn, changedEg := !bytes.Equal(ing, in), !bytes.Equal(eg, in)
		switch {
		case changedIn && changedEg:
			t.Fatalf("tc ingress and tc egress both rewrote:\n in %x\n ingress %x\n egress %x", in, ing, eg)
		case changedIn && !bytes.Equal(x, ing):
			t.Fatalf("XDP and tc ingress disagree:\n in %x\n xdp %x\n tc  %x", in, x, ing)
		case changedEg && !bytes.Equal(x, eg):
			t.Fatalf("XDP and tc egress disagree:\n in %x\n xdp %x\n tc  %x", in, x, eg)
		case !changedIn && !changedEg && !bytes.Equal(x, in):
			t.Fatalf("XDP rewrote what neither tc hook did:\n in  %x\n xdp %x", in, x)
		}
		if !bytes.Equal(x, in) {
			if err := fuzzCheckRewrite(in, x, changedEg); err != nil {
				t.Fatalf("%v\n in  %x\n out %x", err, in, x)
			}
			if packets.VerifyChecksums(in) == nil {
				if err := packets.VerifyChecksums(x); err != nil {
					t.Fatalf("valid checksums made invalid: %v\n in  %x\n out %x", err, in, x)
				}
			}
		}
	})
}

func fuzzRun(p *ebpf.Program, in []byte) (uint32, []byte, error) {
	out := make([]byte, len(in)+256)
	opts := ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := p.Run(&opts)
	return ret, opts.DataOut, err
}

// fuzzCheckRewrite checks that out is in with only NAT's fields changed:
// towards a backend, or, for a reply, back to the frontend, in the frame's
// own address family.
func fuzzCheckRewrite(in, out []byte, reply bool) error {
	if len(in) != len(out) {
		return fmt.Errorf("length changed from %d to %d", len(in), len(out))
	}
	l, err := packets.Parse(in)
	if err != nil {
		return fmt.Errorf("rewrote a frame that packets.Parse rejects: %v", err)
	}
	if l.Fragment {
		return errors.New("rewrote a fragment")
	}
	proto := byte(l.Proto)
	csum := l.L4 + 16
	if proto == byte(layers.IPProtocolUDP) {
		csum = l.L4 + 6
	} else if proto != byte(layers.IPProtocolTCP) {
		return fmt.Errorf("rewrote protocol %d", proto)
	}
	// Where the addresses are, and how long; IPv4 alone has a header
	// checksum.
	src, dst, alen, ipCsum := l.IP+12, l.IP+16, 4, l.IP+10
	if l.V6 {
		src, dst, alen, ipCsum = l.IP+8, l.IP+24, 16, -1
	}
	allowed := func(i int) bool {
		return (ipCsum >= 0 && i >= ipCsum && i < ipCsum+2) ||
			(i >= src && i < src+alen) || (i >= dst && i < dst+alen) ||
			(i >= l.L4 && i < l.L4+4) || // ports
			(i >= csum && i < csum+2)
	}
	for i := range in {
		if in[i] != out[i] && !allowed(i) {
			return fmt.Errorf("byte %d changed (%#02x to %#02x) outside the NAT fields", i, in[i], out[i])
		}
	}
	addrPort := func(b []byte, addrOff, portOff int) netip.AddrPort {
		a, _ := netip.AddrFromSlice(b[addrOff : addrOff+alen])
		return netip.AddrPortFrom(a, uint16(b[portOff])<<8|uint16(b[portOff+1]))
	}
	srcIn, dstIn := addrPort(in, src, l.L4), addrPort(in, dst, l.L4+2)
	srcOut, dstOut := addrPort(out, src, l.L4), addrPort(out, dst, l.L4+2)
	type service struct{ vip, backend, client netip.AddrPort }
	services := map[byte][]service{
		6:  {{fuzzVIPTCP, fuzzBackendTCP, fuzzClient}, {fuzzVIP6TCP, fuzzBackend6TCP, fuzzClient6}},
		17: {{fuzzVIPUDP, fuzzBackendUDP, fuzzClient}, {fuzzVIP6UDP, fuzzBackend6UDP, fuzzClient6}},
	}
	for _, s := range services[proto] {
		switch {
		case !reply && dstIn == s.vip:
			if dstOut != s.backend || srcOut != srcIn {
				return fmt.Errorf("DNAT of %s->%s gave %s->%s, want %s->%s", srcIn, dstIn, srcOut, dstOut, srcIn, s.backend)
			}
			return nil
		case reply && srcIn == s.backend && dstIn == s.client:
			if srcOut != s.vip || dstOut != dstIn {
				return fmt.Errorf("reverse NAT of %s->%s gave %s->%s, want %s->%s", srcIn, dstIn, srcOut, dstOut, s.vip, dstIn)
			}
			return nil
		}
	}
	return fmt.Errorf("rewrote %s->%s/%d, which is neither for a service nor a reply to a tracked flow", srcIn, dstIn, proto)
}

// TestFuzzCheckRewrite shows that FuzzPrograms' oracle accepts the
// translations golden tests expect and rejects others, in both families.
func TestFuzzCheckRewrite(t *testing.T) {
	build := func(p interface{ Build() ([]byte, error) }) []byte {
		t.Helper()
		b, err := p.Build()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fwd6 := packets.IPv6{Src: fuzzClient6, Dst: fuzzVIP6TCP, Proto: layers.IPProtocolTCP, Payload: []byte("x"),
		Ext: []packets.IPv6Ext{packets.HopByHop, packets.AH}, FlowLabel: 0x12345}
	reply6 := packets.IPv6{Src: fuzzBackend6UDP, Dst: fuzzClient6, Proto: layers.IPProtocolUDP, Payload: []byte("y")}
	fwd4 := packets.IPv4{Src: fuzzClient, Dst: fuzzVIPUDP, Proto: layers.IPProtocolUDP, Payload: []byte("z")}
	dnat6, snat6 := fwd6, reply6
	dnat6.Dst, snat6.Src = fuzzBackend6TCP, fuzzVIP6UDP
	dnat4 := fwd4
	dnat4.Dst = fuzzBackendUDP
	for _, c := range []struct {
		name    string
		in, out []byte
		reply   bool
	}{
		{"ipv6 dnat", build(fwd6), build(dnat6), false},
		{"ipv6 reverse nat", build(reply6), build(snat6), true},
		{"ipv4 dnat", build(fwd4), build(dnat4), false},
	} {
		if err := fuzzCheckRewrite(c.in, c.out, c.reply); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if fuzzCheckRewrite(c.in, c.out, !c.reply) == nil {
			t.Fatalf("%s: accepted as the other direction", c.name)
		}
		l, err := packets.Parse(c.in)
		if err != nil {
			t.Fatal(err)
		}
		// A change outside the NAT fields: the IP header's second byte
		// (IPv6 traffic class and flow label, IPv4 TOS), its eighth (hop
		// limit, fragment offset), the last byte of the frame, and the
		// last of the extension headers.
		offs := []int{l.IP + 1, l.IP + 7, len(c.in) - 1}
		if l.Exts > 0 {
			offs = append(offs, l.L4-1)
		}
		for _, off := range offs {
			bad := append([]byte(nil), c.out...)
			bad[off] ^= 0x40
			if fuzzCheckRewrite(c.in, bad, c.reply) == nil {
				t.Fatalf("%s: a change at byte %d was accepted", c.name, off)
			}
		}
	}
	// The other family's backend, or the wrong one of the family.
	wrong := fwd6
	wrong.Dst = netip.MustParseAddrPort("[fd00:1::3]:8080")
	if fuzzCheckRewrite(build(fwd6), build(wrong), false) == nil {
		t.Fatal("DNAT to a backend not of the service was accepted")
	}
	rewritten := build(fwd6)
	notForUs := fwd6
	notForUs.Dst = netip.MustParseAddrPort("[fd00::11]:80")
	if fuzzCheckRewrite(build(notForUs), rewritten, false) == nil {
		t.Fatal("a rewrite of a packet for no service was accepted")
	}
}
