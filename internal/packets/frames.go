package packets

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/gopacket/layers"
)

// Short builders of the frames the golden tests of policy, bandwidth and
// prefilter send. Addresses are written as netip parses them; a frame
// that cannot be built is a bug in the test, and panics.

// Must takes a builder's result, panicking on its error.
func Must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TCP4 is a TCP SYN from src to dst ("10.0.0.1:1234").
func TCP4(src, dst string) []byte {
	return Must(IPv4{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolTCP, TCPFlags: TCPFlags{SYN: true}}.Build())
}

// UDP4 is a UDP datagram from src to dst carrying "hello".
func UDP4(src, dst string) []byte {
	return Must(IPv4{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolUDP, Payload: []byte("hello")}.Build())
}

// TCP6 is TCP4 over IPv6 ("[fd00::1]:1234").
func TCP6(src, dst string) []byte {
	return Must(IPv6{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolTCP, TCPFlags: TCPFlags{SYN: true}}.Build())
}

// UDP6 is UDP4 over IPv6.
func UDP6(src, dst string) []byte {
	return Must(IPv6{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolUDP, Payload: []byte("hello")}.Build())
}

// Raw4 is an IPv4 packet of protocol proto whose body is l4, verbatim.
func Raw4(src, dst string, proto layers.IPProtocol, l4 []byte) []byte {
	return Must(IPv4{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: proto, NoL4Header: true, Payload: l4}.Build())
}

// Raw6 is Raw4 over IPv6, with extension headers ext.
func Raw6(src, dst string, proto layers.IPProtocol, l4 []byte, ext ...IPv6Ext) []byte {
	return Must(IPv6{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: proto, NoL4Header: true, Payload: l4, Ext: ext}.Build())
}

// FlowStart is the first packet of a TCP, UDP or SCTP flow from src to
// dst, in the family of their addresses.
func FlowStart(proto layers.IPProtocol, src, dst string) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	v4 := s.Addr().Is4()
	switch {
	case proto == layers.IPProtocolSCTP && v4:
		return Raw4(s.Addr().String(), d.Addr().String(), proto, SCTPHeader(s.Port(), d.Port()))
	case proto == layers.IPProtocolSCTP:
		return Raw6(s.Addr().String(), d.Addr().String(), proto, SCTPHeader(s.Port(), d.Port()))
	case proto == layers.IPProtocolUDP && v4:
		return UDP4(src, dst)
	case proto == layers.IPProtocolUDP:
		return UDP6(src, dst)
	case v4:
		return TCP4(src, dst)
	}
	return TCP6(src, dst)
}

// Echo is an ICMP message of type typ (ICMPv6 between IPv6 addresses)
// with identifier id, sequence 1: an echo request or reply for the types
// that are.
func Echo(src, dst string, typ uint8, id uint16) []byte {
	msg := ICMPMsg(typ, 0, uint32(id)<<16|1, []byte("ping"))
	if netip.MustParseAddr(src).Is4() {
		return Raw4(src, dst, layers.IPProtocolICMPv4, msg)
	}
	return Raw6(src, dst, layers.IPProtocolICMPv6, msg)
}

// ICMP6Hop is an ICMPv6 message of type typ with body bytes of body, sent
// with hop limit hop.
func ICMP6Hop(src, dst string, typ, hop uint8, body int) []byte {
	return Must(IPv6{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: layers.IPProtocolICMPv6, NoL4Header: true, HopLimit: hop, Payload: ICMPMsg(typ, 0, 0, make([]byte, body))}.Build())
}

// SCTPHeader is an SCTP common header and one empty INIT chunk header:
// enough for the ports.
func SCTPHeader(sport, dport uint16) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x1234)
	b[12] = 1 // INIT
	binary.BigEndian.PutUint16(b[14:], 4)
	return b
}

// ICMPMsg is an ICMP message of type typ with rest as its second word and
// body after it. The checksum is ICMPv4's (ICMPv6's covers a
// pseudo-header too); the programs do not read it.
func ICMPMsg(typ, code uint8, rest uint32, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], rest)
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], ^Sum(0, b))
	return b
}

// VLAN inserts tags with the given TPIDs (outermost first, VLAN id 0)
// between frame's MAC addresses and its EtherType.
func VLAN(frame []byte, tpids ...uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	for _, tpid := range tpids {
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = append(out, 0, 0)
	}
	return append(out, frame[12:]...)
}

// TCP6Ext is TCP6 with extension headers ext before the TCP header.
func TCP6Ext(src, dst string, ext ...IPv6Ext) []byte {
	return Must(IPv6{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolTCP, TCPFlags: TCPFlags{SYN: true}, Ext: ext}.Build())
}
