package packets

import (
	"encoding/binary"
	"net/netip"
	"testing"

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
