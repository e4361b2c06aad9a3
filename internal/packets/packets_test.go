package packets

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestSumRFC1071(t *testing.T) {
	// The worked example of RFC 1071, section 3.
	if got := Sum(0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != 0xddf2 {
		t.Fatalf("Sum = %#04x, want 0xddf2", got)
	}
	// An odd length pads with a zero byte.
	if got := Sum(0, []byte{0x01, 0x02, 0x03}); got != 0x0402 {
		t.Fatalf("Sum = %#04x, want 0x0402", got)
	}
}

func TestVerifyChecksums(t *testing.T) {
	src := netip.MustParseAddrPort("10.0.0.1:40000")
	dst := netip.MustParseAddrPort("10.96.0.10:80")
	opts := []layers.IPv4Option{{OptionType: 1}, {OptionType: 7, OptionLength: 39, OptionData: append([]byte{4}, make([]byte, 36)...)}}
	for _, p := range []IPv4{
		{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: []byte("hello"), TCPFlags: TCPFlags{SYN: true}},
		{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: []byte("odd"), Options: opts},
		{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Payload: []byte("hello, world")},
		{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Payload: []byte("x"), Pad: 7},
		{Src: src, Dst: dst, Proto: layers.IPProtocolICMPv4, Payload: []byte("ping")},
	} {
		b, err := p.Build()
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyChecksums(b); err != nil {
			t.Fatalf("%v %v: %v", p.Proto, p.Payload, err)
		}
		l, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if p.Options != nil && l.IHL != 60 {
			t.Fatalf("options gave a header of %d bytes, want 60", l.IHL)
		}
		if p.Proto == layers.IPProtocolICMPv4 {
			continue
		}
		// Any flipped bit in the header or the segment is caught.
		for _, off := range []int{l.IP + 12, l.IP + 19, l.L4 + 1, l.End - 1} {
			c := append([]byte(nil), b...)
			c[off] ^= 0x10
			if VerifyChecksums(c) == nil {
				t.Fatalf("%v: a flipped bit at byte %d went unnoticed", p.Proto, off)
			}
		}
	}
}

func TestUDPNoChecksum(t *testing.T) {
	p := IPv4{
		Src:   netip.MustParseAddrPort("10.0.0.1:1000"),
		Dst:   netip.MustParseAddrPort("10.0.0.2:53"),
		Proto: layers.IPProtocolUDP, Payload: []byte("q"), UDPNoChecksum: true,
	}
	b, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	l, _ := Parse(b)
	if c := binary.BigEndian.Uint16(b[l.L4+6:]); c != 0 {
		t.Fatalf("UDP checksum %#04x, want 0", c)
	}
	if err := VerifyChecksums(b); err != nil {
		t.Fatal(err)
	}
	b[l.IP+10] ^= 1
	if VerifyChecksums(b) == nil {
		t.Fatal("a wrong IPv4 header checksum went unnoticed")
	}
}

func TestFixIPv4Checksum(t *testing.T) {
	b, err := IPv4{
		Src:   netip.MustParseAddrPort("10.0.0.1:1000"),
		Dst:   netip.MustParseAddrPort("10.0.0.2:53"),
		Proto: layers.IPProtocolUDP,
	}.Build()
	if err != nil {
		t.Fatal(err)
	}
	b[EthLen+8] = 1 // TTL
	if VerifyChecksums(b) == nil {
		t.Fatal("a changed TTL went unnoticed")
	}
	FixIPv4Checksum(b)
	if err := VerifyChecksums(b); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyChecksumsIPv6(t *testing.T) {
	src := netip.MustParseAddrPort("[fd00:9::2]:40000")
	dst := netip.MustParseAddrPort("[fd00::10]:80")
	hop := netip.MustParseAddr("fd00:5::1")
	for _, p := range []IPv6{
		{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: []byte("hello"), TCPFlags: TCPFlags{SYN: true}},
		{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: []byte("odd"), TrafficClass: 0xb8, FlowLabel: 0xabcde},
		{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Payload: []byte("hello, world")},
		{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Payload: []byte("x"), Pad: 7},
		{Src: src, Dst: dst, Proto: layers.IPProtocolICMPv6, Payload: []byte("ping")},
		{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: []byte("hbh"), Ext: []IPv6Ext{HopByHop}},
		{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Payload: []byte("chain"), Ext: []IPv6Ext{HopByHop, DestOpts, AH}},
		{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Payload: []byte("routed"), Ext: []IPv6Ext{Routing(0, 0, hop, dst.Addr())}},
		{Src: src, Dst: netip.AddrPortFrom(hop, 80), Proto: layers.IPProtocolTCP, Payload: []byte("via"), Ext: []IPv6Ext{Routing(0, 1, dst.Addr())}},
		{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: []byte("atomic"), Ext: []IPv6Ext{Fragment(0, false, 9)}},
	} {
		b, err := p.Build()
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyChecksums(b); err != nil {
			t.Fatalf("%v %q: %v", p.Proto, p.Payload, err)
		}
		l, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if !l.V6 || l.Proto != p.Proto || l.Exts != len(p.Ext) || l.Fragment {
			t.Fatalf("%q: Parse gave %+v", p.Payload, l)
		}
		// gopacket's decoder finds the same transport header.
		if p.Proto != layers.IPProtocolICMPv6 && len(p.Ext) > 0 && p.Ext[0].Type != layers.IPProtocolIPv6Fragment {
			tl := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default).TransportLayer()
			if tl == nil || !bytes.Equal(tl.LayerContents(), b[l.L4:l.L4+len(tl.LayerContents())]) {
				t.Fatalf("%q: gopacket decodes the transport layer elsewhere than byte %d", p.Payload, l.L4)
			}
		}
		// Any flipped bit in the addresses or the segment is caught; the
		// destination address only if it is the final one.
		offs := []int{l.IP + 8, l.IP + 23, l.L4 + 1, l.End - 1}
		if l.Dst == p.Dst.Addr() {
			offs = append(offs, l.IP+24, l.IP+39)
		}
		for _, off := range offs {
			c := append([]byte(nil), b...)
			c[off] ^= 0x10
			if VerifyChecksums(c) == nil {
				t.Fatalf("%v %q: a flipped bit at byte %d went unnoticed", p.Proto, p.Payload, off)
			}
		}
	}
}

func TestIPv6RoutingFinalDestination(t *testing.T) {
	src := netip.MustParseAddrPort("[fd00:9::2]:40000")
	hop := netip.MustParseAddrPort("[fd00:5::1]:80")
	final := netip.MustParseAddr("fd00::10")
	p := IPv6{Src: src, Dst: hop, Proto: layers.IPProtocolTCP, Payload: []byte("x"), Ext: []IPv6Ext{Routing(0, 1, final)}}
	b, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if l.Dst != final {
		t.Fatalf("pseudo-header destination %v, want the routing header's %v", l.Dst, final)
	}
	// With segments left 0 the IPv6 destination is the final one, and
	// the checksum computed for the other no longer holds.
	b[l.IP+IPv6Len+3] = 0
	if VerifyChecksums(b) == nil {
		t.Fatal("segments left 0 with a checksum over the routing header's address went unnoticed")
	}
	// A routing type that does not list addresses hides the destination.
	b[l.IP+IPv6Len+2], b[l.IP+IPv6Len+3] = 4, 1
	if VerifyChecksums(b) == nil {
		t.Fatal("an unknown final destination went unnoticed")
	}
}

func TestIPv6UDPZeroChecksum(t *testing.T) {
	p := IPv6{
		Src:   netip.MustParseAddrPort("[fd00:9::2]:1000"),
		Dst:   netip.MustParseAddrPort("[fd00::10]:53"),
		Proto: layers.IPProtocolUDP, Payload: []byte("q"), UDPZeroChecksum: true,
	}
	b, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	l, _ := Parse(b)
	if c := binary.BigEndian.Uint16(b[l.L4+6:]); c != 0 {
		t.Fatalf("UDP checksum %#04x, want 0", c)
	}
	if VerifyChecksums(b) == nil {
		t.Fatal("UDP checksum 0 over IPv6 was accepted")
	}
}

func TestParseIPv6(t *testing.T) {
	src := netip.MustParseAddrPort("[fd00:9::2]:40000")
	dst := netip.MustParseAddrPort("[fd00::10]:80")
	build := func(p IPv6) []byte {
		t.Helper()
		b, err := p.Build()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name string
		p    IPv6
		want Layout
	}{
		{"tcp", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolTCP}, Layout{L4: 54, End: 74, Proto: layers.IPProtocolTCP}},
		{"udp after hbh, dest opts, ah", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Ext: []IPv6Ext{HopByHop, DestOpts, AH}},
			Layout{L4: 54 + 8 + 8 + 24, End: 54 + 40 + 8, Proto: layers.IPProtocolUDP, Exts: 3}},
		{"routing with two addresses", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolUDP, Ext: []IPv6Ext{Routing(0, 0, dst.Addr(), dst.Addr())}},
			Layout{L4: 54 + 40, End: 54 + 40 + 8, Proto: layers.IPProtocolUDP, Exts: 1}},
		{"first fragment", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Ext: []IPv6Ext{Fragment(0, true, 1)}},
			Layout{L4: 62, End: 62 + 20, Proto: layers.IPProtocolTCP, Exts: 1, Fragment: true}},
		{"later fragment", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, NoL4Header: true, Payload: []byte("tail"), Ext: []IPv6Ext{Fragment(3, false, 1)}},
			Layout{L4: 62, End: 62 + 4, Proto: layers.IPProtocolTCP, Exts: 1, Fragment: true}},
		{"esp", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolESP, NoL4Header: true, Payload: make([]byte, 16)},
			Layout{L4: 54, End: 54 + 16, Proto: layers.IPProtocolESP}},
		{"no next header after dest opts", IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolNoNextHeader, NoL4Header: true, Ext: []IPv6Ext{DestOpts}},
			Layout{L4: 62, End: 62, Proto: layers.IPProtocolNoNextHeader, Exts: 1}},
	} {
		l, err := Parse(build(c.p))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		c.want.IP, c.want.IHL, c.want.V6, c.want.Src, c.want.Dst = EthLen, IPv6Len, true, src.Addr(), dst.Addr()
		if l != c.want {
			t.Fatalf("%s: Parse gave %+v, want %+v", c.name, l, c.want)
		}
	}

	tcp := build(IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Ext: []IPv6Ext{HopByHop}})
	for _, c := range []struct {
		name string
		mod  func(b []byte) []byte
	}{
		{"cut inside the header", func(b []byte) []byte { return b[:EthLen+IPv6Len-1] }},
		{"version 4", func(b []byte) []byte { b[EthLen] = 0x40; return b }},
		{"payload length 0", func(b []byte) []byte { b[EthLen+4], b[EthLen+5] = 0, 0; return b }},
		{"payload length beyond the frame", func(b []byte) []byte { b[EthLen+5]++; return b }},
		{"extension header beyond the payload", func(b []byte) []byte { b[EthLen+IPv6Len+1] = 4; return b }},
		{"extension header cut short", func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[EthLen+4:], 1)
			return b[:EthLen+IPv6Len+1]
		}},
	} {
		if l, err := Parse(c.mod(append([]byte(nil), tcp...))); err == nil {
			t.Fatalf("%s: parsed as %+v", c.name, l)
		}
	}
}
