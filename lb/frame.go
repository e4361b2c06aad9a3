package lb

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// What Simulate sends and reads back, built by hand: the frame is one
// fixed layout (Ethernet, an IPv4 or IPv6 header without options or
// extension headers, a TCP SYN or an empty UDP datagram), so a packet
// library would bring much and do little.

const (
	ethLen    = 14
	ethMinLen = 60
	ipv4Len   = 20
	ipv6Len   = 40
	tcpLen    = 20
	udpLen    = 8
	etherIP4  = 0x0800
	etherIP6  = 0x86dd
)

// simFrame builds a flow's first packet, from src to dst: a TCP SYN, or
// an empty UDP datagram, with every length and checksum filled in. Both
// addresses must be of one family (IPv4 unmapped).
func simFrame(src, dst netip.AddrPort, proto Protocol) ([]byte, error) {
	if !src.Addr().IsValid() || !dst.Addr().IsValid() || src.Addr().Is4() != dst.Addr().Is4() || src.Addr().Is4In6() || dst.Addr().Is4In6() {
		return nil, fmt.Errorf("%w: flow %s -> %s: want two addresses of one family", ErrInvalid, src, dst)
	}
	var l4 []byte
	switch proto {
	case TCP:
		l4 = make([]byte, tcpLen)
		l4[12] = tcpLen / 4 << 4 // data offset, in 32-bit words
		l4[13] = 0x02            // SYN
		binary.BigEndian.PutUint16(l4[14:], 64240)
	case UDP:
		l4 = make([]byte, udpLen)
		binary.BigEndian.PutUint16(l4[4:], udpLen)
	default:
		return nil, fmt.Errorf("%w: flow protocol %s: want %s", ErrInvalid, proto, protocols.Want())
	}
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())

	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	var ip []byte
	// The L4 checksum covers a pseudo-header: the addresses, the protocol
	// and the L4 length (RFC 793, RFC 768, RFC 8200 8.1).
	sum := sum16(0, s) + sum16(0, d) + uint32(proto) + uint32(len(l4))
	if src.Addr().Is4() {
		ip = make([]byte, ipv4Len)
		ip[0] = 4<<4 | ipv4Len/4 // version, header length in 32-bit words
		binary.BigEndian.PutUint16(ip[2:], uint16(ipv4Len+len(l4)))
		ip[8] = 64 // TTL
		ip[9] = uint8(proto)
		copy(ip[12:], s)
		copy(ip[16:], d)
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(0, ip)))
	} else {
		ip = make([]byte, ipv6Len)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6] = uint8(proto)
		ip[7] = 64 // hop limit
		copy(ip[8:], s)
		copy(ip[24:], d)
	}
	check := ^fold(sum16(sum, l4))
	if proto == UDP && check == 0 {
		check = 0xffff // 0 would mean "no checksum"
	}
	at := 16 // TCP's checksum field
	if proto == UDP {
		at = 6
	}
	binary.BigEndian.PutUint16(l4[at:], check)

	frame := make([]byte, 0, max(ethLen+len(ip)+len(l4), ethMinLen))
	frame = append(frame, 2, 0, 0, 0, 0, 2) // destination: locally administered
	frame = append(frame, 2, 0, 0, 0, 0, 1) // source
	if src.Addr().Is4() {
		frame = binary.BigEndian.AppendUint16(frame, etherIP4)
	} else {
		frame = binary.BigEndian.AppendUint16(frame, etherIP6)
	}
	frame = append(frame, ip...)
	frame = append(frame, l4...)
	// Padded as on the wire, to the 60 bytes an Ethernet frame has at
	// least without its FCS; the IP header's length says where the
	// packet ends.
	for len(frame) < ethMinLen {
		frame = append(frame, 0)
	}
	return frame, nil
}

// sum16 adds b to the one's complement sum s, as 16-bit big-endian words
// (an odd last byte padded with zero).
func sum16(s uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// fold folds a one's complement sum into 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// simDestination reads the destination address and port of a frame laid
// out as simFrame lays it out, as the XDP program forwarded it.
func simDestination(frame []byte) (netip.AddrPort, error) {
	bad := func(why string) (netip.AddrPort, error) {
		return netip.AddrPort{}, fmt.Errorf("read the forwarded frame's destination: %s in %x", why, frame)
	}
	if len(frame) < ethLen {
		return bad("no Ethernet header")
	}
	var (
		addr netip.Addr
		l4   []byte
	)
	switch ip := frame[ethLen:]; binary.BigEndian.Uint16(frame[12:]) {
	case etherIP4:
		if len(ip) < ipv4Len || ip[0]>>4 != 4 {
			return bad("a short IPv4 header")
		}
		hl := int(ip[0]&0x0f) * 4
		if hl < ipv4Len || len(ip) < hl {
			return bad("a bad IPv4 header length")
		}
		addr = netip.AddrFrom4([4]byte(ip[16:20]))
		l4 = ip[hl:]
	case etherIP6:
		if len(ip) < ipv6Len || ip[0]>>4 != 6 {
			return bad("a short IPv6 header")
		}
		addr = netip.AddrFrom16([16]byte(ip[24:40]))
		l4 = ip[ipv6Len:]
	default:
		return bad("no IP header")
	}
	if len(l4) < 4 {
		return bad("no ports")
	}
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(l4[2:])), nil
}
