package policy

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
)

// FuzzPolicy sends arbitrary frames through both tc programs at two
// endpoints. At one, both directions deny everything: nothing but ARP and
// IPv6 neighbour discovery may pass, however malformed. At the other, the golden policy: a well-formed first
// packet of a TCP, UDP or SCTP flow (not a fragment) must get exactly
// what Decide, the reference meaning, gives it.
func FuzzPolicy(f *testing.F) {
	for _, c := range goldenCases(f) {
		f.Add(c.frame, c.dir == Egress)
	}
	r := newFuzzRig(f)
	deny := Policy{Ingress: Rules{Isolated: true}, Egress: Rules{Isolated: true}}
	r.ns.MustDo(func() error { return r.m.SetPolicy("pol1", deny) })
	golden := goldenPolicy()
	f.Fuzz(func(t *testing.T, frame []byte, egress bool) {
		dir := Ingress
		if egress {
			dir = Egress
		}
		r.t = t
		if len(frame) < 14 {
			return // BPF_PROG_TEST_RUN wants an Ethernet header
		}
		// Judged afresh each time: no flow of an earlier input is known.
		clearMap(t, kernel.Of(r.dp).Maps.PolicyCt)
		clearMap(t, kernel.Of(r.dp).Maps.Frags)

		et := binary.BigEndian.Uint16(frame[12:])
		ret, _, err := r.tryRun(r.ifindex2, dir, frame)
		if errors.Is(err, unix.EINVAL) {
			return // refused before any program ran
		}
		if err != nil {
			t.Fatal(err)
		}
		if et != 0x0806 && ret != tcActShot && !neighbourDiscovery(frame) {
			t.Fatalf("a frame other than ARP passed a deny-all direction (%s): %x", dir, frame)
		}

		peer, proto, port, ok := firstPacket(frame, dir)
		if !ok {
			return
		}
		ret, _ = r.runOn(r.ifindex, dir, frame)
		want := golden.Decide(dir, peer, proto, port) == Allowed
		if got := ret == tcActUnspc; got != want {
			t.Fatalf("%s %s proto %d port %d: datapath passes=%v, Decide allows=%v\n%x", dir, peer, proto, port, got, want, frame)
		}
	})
}

// firstPacket reads a frame with gopacket and reports its peer, protocol
// and destination port if it is a whole, well-formed TCP, UDP or SCTP
// packet that the datapath must judge by the rules.
func firstPacket(frame []byte, dir Direction) (netip.Addr, Protocol, uint16, bool) {
	// IP right after the Ethernet header only: gopacket also decodes
	// through VLAN tags, which the datapath cannot judge past and drops
	// where rules apply (the golden tests' VLAN cases), and the length
	// read below is at IPv4's offset in an untagged frame.
	if et := binary.BigEndian.Uint16(frame[12:]); et != 0x0800 && et != 0x86dd {
		return netip.Addr{}, 0, 0, false
	}
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	if pkt.ErrorLayer() != nil {
		return netip.Addr{}, 0, 0, false
	}
	var src, dst netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		// The length as sent: gopacket takes 0 for a TSO packet and
		// fills it in.
		tot := int(binary.BigEndian.Uint16(frame[16:]))
		if ip.Version != 4 || ip.IHL < 5 || ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 || tot > len(frame)-14 || tot < int(ip.IHL)*4 {
			return netip.Addr{}, 0, 0, false
		}
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		// Extension headers are covered by the golden tests; here only
		// a plain header, whose payload the frame holds.
		if ip.Version != 6 || ip.NextHeader != layers.IPProtocolTCP && ip.NextHeader != layers.IPProtocolUDP && ip.NextHeader != layers.IPProtocolSCTP {
			return netip.Addr{}, 0, 0, false
		}
		if ip.Length == 0 || int(ip.Length)+40 > len(frame)-14 {
			return netip.Addr{}, 0, 0, false
		}
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		if src.Is4In6() || dst.Is4In6() {
			return netip.Addr{}, 0, 0, false
		}
	default:
		return netip.Addr{}, 0, 0, false
	}
	var proto Protocol
	var port uint16
	var need int
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		proto, port, need = TCP, uint16(l.DstPort), 20
	case *layers.UDP:
		proto, port, need = UDP, uint16(l.DstPort), 8
	case *layers.SCTP:
		proto, port, need = SCTP, uint16(l.DstPort), 12
	default:
		return netip.Addr{}, 0, 0, false
	}
	// The transport header must lie within the IP packet's own length.
	ipLayer := pkt.NetworkLayer()
	if len(ipLayer.LayerPayload()) < need {
		return netip.Addr{}, 0, 0, false
	}
	if ip4, ok := ipLayer.(*layers.IPv4); ok && int(binary.BigEndian.Uint16(frame[16:]))-int(ip4.IHL)*4 < need {
		return netip.Addr{}, 0, 0, false
	}
	if ip6, ok := ipLayer.(*layers.IPv6); ok && int(ip6.Length) < need {
		return netip.Addr{}, 0, 0, false
	}
	peer := src
	if dir == Egress {
		peer = dst
	}
	return peer, proto, port, true
}

func clearMap(t *testing.T, mp *ebpf.Map) {
	t.Helper()
	var keys [][]byte
	var k, v []byte
	it := mp.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := mp.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzRig is a rig with a second endpoint, pol1.
type fuzzRig struct {
	*rig
	ifindex2 uint32
}

func newFuzzRig(f *testing.F) *fuzzRig {
	r := newRig(f, datapath.Limits{})
	fr := &fuzzRig{rig: r}
	r.ns.MustDo(func() error {
		if err := r.m.AddEndpoint(Endpoint{Interface: "pol1"}); err != nil {
			return err
		}
		ifc, err := net.InterfaceByName("pol1")
		if err != nil {
			return err
		}
		fr.ifindex2 = uint32(ifc.Index)
		return r.m.SetPolicy("pol0", goldenPolicy())
	})
	return fr
}

// neighbourDiscovery reports whether frame may be an ICMPv6 neighbour
// discovery or multicast listener message, which no policy judges.
func neighbourDiscovery(frame []byte) bool {
	l, err := packets.Parse(frame)
	if err != nil || !l.V6 || l.Proto != layers.IPProtocolICMPv6 || l.L4 >= len(frame) {
		return false
	}
	typ := frame[l.L4]
	return typ >= 130 && typ <= 137 || typ == 143
}
