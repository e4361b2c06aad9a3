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
)

// FuzzPrograms feeds arbitrary frames to the XDP and tc ingress programs,
// with one TCP and one UDP service installed, and checks what must hold for
// any input:
//   - nothing is dropped (every service has a backend);
//   - XDP and tc produce the same bytes;
//   - a rewritten frame differs only in the fields NAT owns (addresses,
//     ports, checksums), now names the backend (or, for a reply, the
//     frontend), and keeps valid checksums valid.
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

	dir := testutil.BPFFS(f)
	dp, err := datapath.Open(datapath.Options{Dir: dir})
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
	if _, err := m.Sync([]lb.Service{
		{Frontend: lb.Frontend{Address: fuzzVIPTCP, Protocol: lb.TCP}, Backends: []lb.Backend{{Address: fuzzBackendTCP}}},
		{Frontend: lb.Frontend{Address: fuzzVIPUDP, Protocol: lb.UDP}, Backends: []lb.Backend{{Address: fuzzBackendUDP}}},
	}); err != nil {
		f.Fatal(err)
	}
	progs := dp.Programs()

	f.Fuzz(func(t *testing.T, in []byte) {
		xret, xout, xerr := fuzzRun(progs.XdplaneXdp, in)
		tret, tout, terr := fuzzRun(progs.XdplaneTcIngress, in)
		// The kernel refuses some frames (shorter than Ethernet; for tc,
		// an IPv4 frame without a full IPv4 header) before any program runs.
		if errors.Is(xerr, unix.EINVAL) || errors.Is(terr, unix.EINVAL) {
			return
		}
		if xerr != nil || terr != nil {
			t.Fatalf("run: xdp %v, tc %v", xerr, terr)
		}
		if xret != 2 || tret != 0xffffffff {
			t.Fatalf("verdicts xdp %d, tc %#x; want pass on both (every service has a backend)", xret, tret)
		}
		if !bytes.Equal(xout, tout) {
			t.Fatalf("XDP and tc disagree:\n in  %x\n xdp %x\n tc  %x", in, xout, tout)
		}
		if bytes.Equal(in, xout) {
			return
		}
		if err := fuzzCheckRewrite(in, xout); err != nil {
			t.Fatalf("%v\n in  %x\n out %x", err, in, xout)
		}
		if packets.VerifyChecksums(in) == nil {
			if err := packets.VerifyChecksums(xout); err != nil {
				t.Fatalf("valid checksums made invalid: %v\n in  %x\n out %x", err, in, xout)
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

// fuzzCheckRewrite checks that out is in with only NAT's fields changed,
// towards a backend or back to a frontend.
func fuzzCheckRewrite(in, out []byte) error {
	if len(in) != len(out) {
		return fmt.Errorf("length changed from %d to %d", len(in), len(out))
	}
	l, err := packets.Parse(in)
	if err != nil {
		return fmt.Errorf("rewrote a frame that is not IPv4: %v", err)
	}
	proto := in[l.IP+9]
	csum := l.L4 + 16
	if proto == byte(layers.IPProtocolUDP) {
		csum = l.L4 + 6
	} else if proto != byte(layers.IPProtocolTCP) {
		return fmt.Errorf("rewrote protocol %d", proto)
	}
	allowed := func(i int) bool {
		return (i >= l.IP+10 && i < l.IP+12) || // IPv4 header checksum
			(i >= l.IP+12 && i < l.IP+20) || // addresses
			(i >= l.L4 && i < l.L4+4) || // ports
			(i >= csum && i < csum+2)
	}
	for i := range in {
		if in[i] != out[i] && !allowed(i) {
			return fmt.Errorf("byte %d changed (%#02x to %#02x) outside the NAT fields", i, in[i], out[i])
		}
	}
	addrPort := func(b []byte, addrOff, portOff int) netip.AddrPort {
		a, _ := netip.AddrFromSlice(b[addrOff : addrOff+4])
		return netip.AddrPortFrom(a, uint16(b[portOff])<<8|uint16(b[portOff+1]))
	}
	srcIn, dstIn := addrPort(in, l.IP+12, l.L4), addrPort(in, l.IP+16, l.L4+2)
	srcOut, dstOut := addrPort(out, l.IP+12, l.L4), addrPort(out, l.IP+16, l.L4+2)
	switch {
	case (dstIn == fuzzVIPTCP && proto == 6) || (dstIn == fuzzVIPUDP && proto == 17):
		want := map[byte]netip.AddrPort{6: fuzzBackendTCP, 17: fuzzBackendUDP}[proto]
		if dstOut != want || srcOut != srcIn {
			return fmt.Errorf("DNAT of %s->%s gave %s->%s, want %s->%s", srcIn, dstIn, srcOut, dstOut, srcIn, want)
		}
	case srcIn == fuzzBackendTCP || srcIn == fuzzBackendUDP:
		want := map[byte]netip.AddrPort{6: fuzzVIPTCP, 17: fuzzVIPUDP}[proto]
		if srcOut != want || dstOut != dstIn {
			return fmt.Errorf("reverse NAT of %s->%s gave %s->%s, want %s->%s", srcIn, dstIn, srcOut, dstOut, want, dstIn)
		}
	default:
		return fmt.Errorf("rewrote %s->%s, which is neither for a service nor from a backend", srcIn, dstIn)
	}
	return nil
}
