package packets

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Default MAC addresses of the frames Build makes.
var (
	DefaultSrcMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	DefaultDstMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// Sizes of the headers Build writes.
const (
	EthLen  = 14
	IPv4Len = 20
	IPv6Len = 40
	TCPLen  = 20
	UDPLen  = 8
)

// IPv4 describes an Ethernet + IPv4 + TCP, UDP or ICMP frame. The zero
// values of the optional fields give a plain, valid packet.
type IPv4 struct {
	// Src and Dst are the addresses and, for TCP and UDP, the ports.
	Src, Dst netip.AddrPort
	// Proto is layers.IPProtocolTCP, UDP or ICMPv4.
	Proto layers.IPProtocol
	// Payload follows the transport header.
	Payload []byte

	// Optional.
	SrcMAC, DstMAC net.HardwareAddr
	ID             uint16
	TTL            uint8 // default 64
	TOS            uint8
	Flags          layers.IPv4Flag
	FragOffset     uint16 // in 8-byte units
	Options        []layers.IPv4Option
	TCPFlags       TCPFlags
	Seq, Ack       uint32
	// UDPNoChecksum sends the UDP datagram with checksum 0 ("none").
	UDPNoChecksum bool
	// Pad appends bytes after the IP packet, as Ethernet padding.
	Pad int
	// NoL4Header puts Payload right after the IPv4 header, with no
	// transport header: the body of a later fragment.
	NoL4Header bool
}

// TCPFlags selects the TCP flags of a segment.
type TCPFlags struct {
	SYN, ACK, PSH, FIN, RST bool
}

// Serialize serializes ls with lengths and checksums computed. A TCP or
// UDP layer takes the IPv4 or IPv6 layer before it for its pseudo-header.
func Serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	var nl gopacket.NetworkLayer
	for _, l := range ls {
		switch v := l.(type) {
		case *layers.IPv4:
			nl = v
		case *layers.IPv6:
			nl = v
		case *layers.TCP:
			if nl != nil {
				if err := v.SetNetworkLayerForChecksum(nl); err != nil {
					return nil, err
				}
			}
		case *layers.UDP:
			if nl != nil {
				if err := v.SetNetworkLayerForChecksum(nl); err != nil {
					return nil, err
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, err
	}
	return append([]byte(nil), buf.Bytes()...), nil
}

// Build serializes p.
func (p IPv4) Build() ([]byte, error) {
	if !p.Src.Addr().Is4() || !p.Dst.Addr().Is4() {
		return nil, fmt.Errorf("packets: %v -> %v: want IPv4 addresses", p.Src, p.Dst)
	}
	eth := &layers.Ethernet{
		SrcMAC:       orMAC(p.SrcMAC, DefaultSrcMAC),
		DstMAC:       orMAC(p.DstMAC, DefaultDstMAC),
		EthernetType: layers.EthernetTypeIPv4,
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = 64
	}
	ip := &layers.IPv4{
		Version:    4,
		TOS:        p.TOS,
		Id:         p.ID,
		Flags:      p.Flags,
		FragOffset: p.FragOffset,
		TTL:        ttl,
		Protocol:   p.Proto,
		SrcIP:      p.Src.Addr().AsSlice(),
		DstIP:      p.Dst.Addr().AsSlice(),
		Options:    p.Options,
	}
	ls := []gopacket.SerializableLayer{eth, ip}
	switch {
	case p.NoL4Header:
		ls = append(ls, gopacket.Payload(p.Payload))
		return Serialize(ls...)
	}
	switch p.Proto {
	case layers.IPProtocolTCP:
		ls = append(ls, &layers.TCP{
			SrcPort: layers.TCPPort(p.Src.Port()),
			DstPort: layers.TCPPort(p.Dst.Port()),
			Seq:     p.Seq,
			Ack:     p.Ack,
			SYN:     p.TCPFlags.SYN,
			ACK:     p.TCPFlags.ACK,
			PSH:     p.TCPFlags.PSH,
			FIN:     p.TCPFlags.FIN,
			RST:     p.TCPFlags.RST,
			Window:  64240,
		})
	case layers.IPProtocolUDP:
		ls = append(ls, &layers.UDP{
			SrcPort: layers.UDPPort(p.Src.Port()),
			DstPort: layers.UDPPort(p.Dst.Port()),
		})
	case layers.IPProtocolICMPv4:
		ls = append(ls, &layers.ICMPv4{
			TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0),
			Id:       p.Src.Port(),
			Seq:      1,
		})
	default:
		return nil, fmt.Errorf("packets: protocol %v not supported", p.Proto)
	}
	ls = append(ls, gopacket.Payload(p.Payload))
	b, err := Serialize(ls...)
	if err != nil {
		return nil, err
	}
	if p.Proto == layers.IPProtocolUDP && p.UDPNoChecksum {
		off := EthLen + int(b[EthLen]&0x0f)*4 + 6
		b[off], b[off+1] = 0, 0
	}
	if p.Pad > 0 {
		b = append(b, make([]byte, p.Pad)...)
	}
	return b, nil
}

func orMAC(a, def net.HardwareAddr) net.HardwareAddr {
	if a == nil {
		return def
	}
	return a
}

// Layout is where the headers of a frame start, and what the transport
// checksum's pseudo-header is made of.
type Layout struct {
	IP  int  // offset of the IP header
	IHL int  // length of the IPv4 header in bytes; 40 for IPv6, its fixed header
	L4  int  // offset of the transport header (IPv6: after the extension headers)
	End int  // end of the IP packet (IP header + its total or payload length)
	V6  bool // the frame is IPv6

	// Proto is the transport protocol: IPv4's protocol field, IPv6's last
	// next header (which may be ESP, No Next Header or anything unknown).
	Proto layers.IPProtocol
	// Fragment is set for an IPv4 fragment (MF or an offset) and for an
	// IPv6 packet with a fragment header that has M or an offset (an
	// atomic fragment, with neither, is a whole packet).
	Fragment bool
	// Exts counts the IPv6 extension headers ahead of L4.
	Exts int
	// Src and Dst are the addresses of the transport pseudo-header. For
	// IPv6 with a routing header whose segments left is not 0, Dst is the
	// final destination, the last address of a type 0 or 2 routing header
	// (RFC 8200, 8.1); it is the zero Addr if the routing type does not
	// say.
	Src, Dst netip.Addr
}

// Parse finds the headers of an Ethernet + IPv4 or IPv6 frame, trusting its
// lengths only as far as the frame reaches. IPv6 extension headers
// (hop-by-hop, routing, fragment, destination options, AH) are walked,
// however many there are, up to the first other next header.
func Parse(frame []byte) (Layout, error) {
	if len(frame) < EthLen {
		return Layout{}, errors.New("frame too short for Ethernet")
	}
	switch et := binary.BigEndian.Uint16(frame[12:]); et {
	case uint16(layers.EthernetTypeIPv4):
		return parse4(frame)
	case uint16(layers.EthernetTypeIPv6):
		return parse6(frame)
	default:
		return Layout{}, fmt.Errorf("ethertype %#04x is neither IPv4 nor IPv6", et)
	}
}

func parse4(frame []byte) (Layout, error) {
	if len(frame) < EthLen+IPv4Len {
		return Layout{}, errors.New("frame too short for Ethernet + IPv4")
	}
	ip := frame[EthLen:]
	if ip[0]>>4 != 4 {
		return Layout{}, fmt.Errorf("IP version %d", ip[0]>>4)
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < IPv4Len {
		return Layout{}, fmt.Errorf("IHL %d bytes", ihl)
	}
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if tot < ihl || EthLen+tot > len(frame) {
		return Layout{}, fmt.Errorf("total length %d with IHL %d in a frame of %d bytes", tot, ihl, len(frame))
	}
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	return Layout{
		IP: EthLen, IHL: ihl, L4: EthLen + ihl, End: EthLen + tot,
		Proto:    layers.IPProtocol(ip[9]),
		Fragment: ip[6]&0x3f != 0 || ip[7] != 0,
		Src:      src, Dst: dst,
	}, nil
}

func parse6(frame []byte) (Layout, error) {
	if len(frame) < EthLen+IPv6Len {
		return Layout{}, errors.New("frame too short for Ethernet + IPv6")
	}
	ip := frame[EthLen:]
	if ip[0]>>4 != 6 {
		return Layout{}, fmt.Errorf("IP version %d", ip[0]>>4)
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen == 0 {
		return Layout{}, errors.New("IPv6 payload length 0 (a jumbogram, or nothing)")
	}
	l := Layout{IP: EthLen, IHL: IPv6Len, End: EthLen + IPv6Len + plen, V6: true}
	if l.End > len(frame) {
		return Layout{}, fmt.Errorf("IPv6 payload length %d in a frame of %d bytes", plen, len(frame))
	}
	l.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	l.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	next, off := layers.IPProtocol(ip[6]), EthLen+IPv6Len
	for {
		var n int
		switch next {
		case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Destination:
			if off+2 > l.End {
				return Layout{}, fmt.Errorf("extension header %d at byte %d cut short", next, off)
			}
			n = (int(frame[off+1]) + 1) * 8
		case layers.IPProtocolAH:
			if off+2 > l.End {
				return Layout{}, fmt.Errorf("AH at byte %d cut short", off)
			}
			n = (int(frame[off+1]) + 2) * 4
		case layers.IPProtocolIPv6Fragment:
			n = 8
		default:
			l.L4, l.Proto = off, next
			return l, nil
		}
		if off+n > l.End {
			return Layout{}, fmt.Errorf("extension header %d of %d bytes at byte %d beyond the payload, which ends at %d", next, n, off, l.End)
		}
		h := frame[off : off+n]
		switch next {
		case layers.IPProtocolIPv6Routing:
			if segs := h[3]; segs != 0 {
				l.Dst = netip.Addr{}
				// Types 0 and 2 list addresses after 4 reserved bytes.
				if typ := h[2]; (typ == 0 || typ == 2) && n >= 24 {
					l.Dst = netip.AddrFrom16([16]byte(h[n-16 : n]))
				}
			}
		case layers.IPProtocolIPv6Fragment:
			if binary.BigEndian.Uint16(h[2:])&0xfff9 != 0 {
				l.Fragment = true
			}
		}
		l.Exts++
		next, off = layers.IPProtocol(h[0]), off+n
	}
}

// Sum is the 16-bit one's complement sum of b, folded, with b taken as
// big-endian words (an odd last byte padded with zero), added to initial.
func Sum(initial uint32, b []byte) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// VerifyChecksums checks an Ethernet + IPv4 or IPv6 frame: an IPv4 header
// sums to 0xffff, and a TCP, UDP (or ICMPv6) segment's checksum over the
// pseudo-header and the segment is valid. Over IPv4 a UDP checksum of 0
// means none and is accepted; over IPv6 it is invalid. It is written from
// RFC 791, 768, 793 and 8200, not from gopacket.
func VerifyChecksums(frame []byte) error {
	l, err := Parse(frame)
	if err != nil {
		return err
	}
	if !l.V6 {
		ip := frame[l.IP : l.IP+l.IHL]
		if s := Sum(0, ip); s != 0xffff {
			return fmt.Errorf("IPv4 header checksum %#04x is wrong: header sums to %#04x",
				binary.BigEndian.Uint16(ip[10:]), s)
		}
	}
	if l.Fragment {
		return nil // its checksum covers the reassembled datagram
	}
	seg := frame[l.L4:l.End]
	// The pseudo-header without its length, added below: the length is
	// the segment's for TCP, UDP's own length field for UDP.
	pseudo := func() (uint32, error) {
		if !l.Dst.IsValid() {
			return 0, errors.New("a routing header hides the final destination of the pseudo-header")
		}
		s, d := l.Src.AsSlice(), l.Dst.AsSlice()
		return uint32(Sum(0, s)) + uint32(Sum(0, d)) + uint32(l.Proto), nil
	}
	switch l.Proto {
	case layers.IPProtocolTCP:
		if len(seg) < TCPLen {
			return fmt.Errorf("TCP segment of %d bytes", len(seg))
		}
		p, err := pseudo()
		if err != nil {
			return err
		}
		if s := Sum(p+uint32(len(seg)), seg); s != 0xffff {
			return fmt.Errorf("TCP checksum %#04x is wrong: sums to %#04x",
				binary.BigEndian.Uint16(seg[16:]), s)
		}
	case layers.IPProtocolUDP:
		if len(seg) < UDPLen {
			return fmt.Errorf("UDP datagram of %d bytes", len(seg))
		}
		ulen := int(binary.BigEndian.Uint16(seg[4:]))
		if ulen < UDPLen || ulen > len(seg) {
			return fmt.Errorf("UDP length %d in %d bytes", ulen, len(seg))
		}
		if binary.BigEndian.Uint16(seg[6:]) == 0 {
			if l.V6 {
				return errors.New("UDP checksum 0 over IPv6 (RFC 8200, 8.1)")
			}
			return nil
		}
		p, err := pseudo()
		if err != nil {
			return err
		}
		seg = seg[:ulen]
		if s := Sum(p+uint32(ulen), seg); s != 0xffff {
			return fmt.Errorf("UDP checksum %#04x is wrong: sums to %#04x",
				binary.BigEndian.Uint16(seg[6:]), s)
		}
	case layers.IPProtocolICMPv6:
		if !l.V6 {
			return nil
		}
		if len(seg) < 4 {
			return fmt.Errorf("ICMPv6 message of %d bytes", len(seg))
		}
		p, err := pseudo()
		if err != nil {
			return err
		}
		if s := Sum(p+uint32(len(seg)), seg); s != 0xffff {
			return fmt.Errorf("ICMPv6 checksum %#04x is wrong: sums to %#04x",
				binary.BigEndian.Uint16(seg[2:]), s)
		}
	}
	return nil
}

// FixIPv4Checksum recomputes the IPv4 header checksum of frame in place
// over its IHL (or as much of the header as the frame holds), so that a
// deliberately malformed header is wrong only where it is meant to be.
func FixIPv4Checksum(frame []byte) {
	if len(frame) < EthLen+IPv4Len {
		return
	}
	ip := frame[EthLen:]
	n := int(ip[0]&0x0f) * 4
	if n < IPv4Len {
		n = IPv4Len
	}
	if n > len(ip) {
		n = len(ip)
	}
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^Sum(0, ip[:n]))
}

// ARPRequest builds a broadcast ARP who-has for target from sender.
func ARPRequest(sender, target netip.Addr) ([]byte, error) {
	eth := &layers.Ethernet{
		SrcMAC:       DefaultSrcMAC,
		DstMAC:       net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		EthernetType: layers.EthernetTypeARP,
	}
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         layers.ARPRequest,
		SourceHwAddress:   DefaultSrcMAC,
		SourceProtAddress: sender.AsSlice(),
		DstHwAddress:      make([]byte, 6),
		DstProtAddress:    target.AsSlice(),
	}
	return Serialize(eth, arp)
}
