// Package packets builds Ethernet frames for golden-packet tests with
// gopacket, and checks IPv4, TCP and UDP checksums with its own arithmetic,
// independent of gopacket's serializer.
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

// Layout is where the headers of a frame Build made start.
type Layout struct {
	IP  int // offset of the IPv4 header
	IHL int // its length in bytes
	L4  int // offset of the transport header
	End int // end of the IP packet (Ethernet header + total length)
}

// Parse finds the headers of an Ethernet + IPv4 frame, trusting its IHL and
// total length only as far as the frame reaches.
func Parse(frame []byte) (Layout, error) {
	if len(frame) < EthLen+IPv4Len {
		return Layout{}, errors.New("frame too short for Ethernet + IPv4")
	}
	if et := binary.BigEndian.Uint16(frame[12:]); et != uint16(layers.EthernetTypeIPv4) {
		return Layout{}, fmt.Errorf("ethertype %#04x is not IPv4", et)
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
	return Layout{IP: EthLen, IHL: ihl, L4: EthLen + ihl, End: EthLen + tot}, nil
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

// VerifyChecksums checks an Ethernet + IPv4 frame: the IPv4 header sums to
// 0xffff, and a TCP or UDP segment's checksum over the pseudo-header and the
// segment is valid (a UDP checksum of 0 means none and is accepted). It is
// written from RFC 791, 768 and 793, not from gopacket.
func VerifyChecksums(frame []byte) error {
	l, err := Parse(frame)
	if err != nil {
		return err
	}
	ip := frame[l.IP : l.IP+l.IHL]
	if s := Sum(0, ip); s != 0xffff {
		return fmt.Errorf("IPv4 header checksum %#04x is wrong: header sums to %#04x",
			binary.BigEndian.Uint16(ip[10:]), s)
	}
	if ip[6]&0x3f != 0 || ip[7] != 0 {
		return nil // a fragment: its checksum covers the reassembled datagram
	}
	proto := ip[9]
	seg := frame[l.L4:l.End]
	var pseudo uint32
	pseudo += uint32(Sum(0, ip[12:20])) // source and destination
	pseudo += uint32(proto)
	pseudo += uint32(len(seg))
	switch layers.IPProtocol(proto) {
	case layers.IPProtocolTCP:
		if len(seg) < TCPLen {
			return fmt.Errorf("TCP segment of %d bytes", len(seg))
		}
		if s := Sum(pseudo, seg); s != 0xffff {
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
			return nil
		}
		seg = seg[:ulen]
		pseudo = uint32(Sum(0, ip[12:20])) + uint32(proto) + uint32(ulen)
		if s := Sum(pseudo, seg); s != 0xffff {
			return fmt.Errorf("UDP checksum %#04x is wrong: sums to %#04x",
				binary.BigEndian.Uint16(seg[6:]), s)
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

// IPv6TCP builds an Ethernet + IPv6 + TCP SYN frame.
func IPv6TCP(src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: DefaultSrcMAC, DstMAC: DefaultDstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{
		Version:    6,
		NextHeader: layers.IPProtocolTCP,
		HopLimit:   64,
		SrcIP:      src.Addr().AsSlice(),
		DstIP:      dst.Addr().AsSlice(),
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()),
		DstPort: layers.TCPPort(dst.Port()),
		SYN:     true,
		Window:  64240,
	}
	return Serialize(eth, ip, tcp, gopacket.Payload(payload))
}
