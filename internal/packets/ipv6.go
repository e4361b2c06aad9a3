package packets

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// IPv6 describes an Ethernet + IPv6 frame with optional extension headers
// and a TCP, UDP or ICMPv6 (echo request) message. The zero values of the
// optional fields give a plain, valid packet.
type IPv6 struct {
	// Src and Dst are the addresses and, for TCP and UDP, the ports.
	Src, Dst netip.AddrPort
	// Proto is the upper-layer protocol, after any extension headers:
	// layers.IPProtocolTCP, UDP or ICMPv6; with NoL4Header, any next
	// header (ESP, No Next Header, ...).
	Proto layers.IPProtocol
	// Payload follows the transport header.
	Payload []byte
	// Ext are the extension headers, in order, between the IPv6 header
	// and the transport header.
	Ext []IPv6Ext

	// Optional.
	SrcMAC, DstMAC net.HardwareAddr
	HopLimit       uint8 // default 64
	TrafficClass   uint8
	FlowLabel      uint32
	TCPFlags       TCPFlags
	Seq, Ack       uint32
	// UDPZeroChecksum sends the UDP datagram with checksum 0, which IPv6
	// does not allow (RFC 8200, 8.1).
	UDPZeroChecksum bool
	// Pad appends bytes after the IP packet, as Ethernet padding.
	Pad int
	// NoL4Header puts Payload right after the extension headers, with no
	// transport header: the body of a later fragment, or of ESP.
	NoL4Header bool
}

// IPv6Ext is one IPv6 extension header. Build writes its next header and
// length fields; the other fields that apply to Type describe the rest.
type IPv6Ext struct {
	// Type is layers.IPProtocolIPv6HopByHop, IPv6Routing,
	// IPv6Fragment, IPv6Destination or AH.
	Type layers.IPProtocol

	// Options of a hop-by-hop or destination options header, each
	// written as type, length, data; Build pads the header to a multiple
	// of 8 bytes with Pad1 or PadN.
	Options []IPv6Option

	// RoutingType, SegmentsLeft and Addresses of a routing header, the
	// addresses after 4 reserved bytes as in types 0 and 2.
	RoutingType, SegmentsLeft uint8
	Addresses                 []netip.Addr

	// FragOffset (in 8-byte units), MoreFragments and ID of a fragment
	// header.
	FragOffset    uint16
	MoreFragments bool
	ID            uint32

	// SPI, AHSeq and ICV of an authentication header; the ICV's length
	// must make the header a multiple of 8 bytes (12 does).
	SPI, AHSeq uint32
	ICV        []byte
}

// IPv6Option is a type-length-value option of a hop-by-hop or destination
// options header.
type IPv6Option struct {
	Type uint8
	Data []byte
}

// Extension headers with typical contents.
var (
	// HopByHop carries a router alert (RFC 2711).
	HopByHop = IPv6Ext{Type: layers.IPProtocolIPv6HopByHop, Options: []IPv6Option{{Type: 5, Data: []byte{0, 0}}}}
	// DestOpts carries one 4-byte option of an unknown type whose top
	// bits say "skip" (RFC 8200, 4.2), and padding.
	DestOpts = IPv6Ext{Type: layers.IPProtocolIPv6Destination, Options: []IPv6Option{{Type: 0x1e, Data: []byte{1, 2, 3, 4}}}}
	// AH is an authentication header with a 12-byte ICV: 24 bytes.
	AH = IPv6Ext{Type: layers.IPProtocolAH, SPI: 0x1000, AHSeq: 7, ICV: []byte{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac}}
)

// Routing returns a routing header of type typ with segments left segs and
// addrs.
func Routing(typ, segs uint8, addrs ...netip.Addr) IPv6Ext {
	return IPv6Ext{Type: layers.IPProtocolIPv6Routing, RoutingType: typ, SegmentsLeft: segs, Addresses: addrs}
}

// Fragment returns a fragment header.
func Fragment(offset uint16, more bool, id uint32) IPv6Ext {
	return IPv6Ext{Type: layers.IPProtocolIPv6Fragment, FragOffset: offset, MoreFragments: more, ID: id}
}

// bytes serializes e followed by next.
func (e IPv6Ext) bytes(next layers.IPProtocol) ([]byte, error) {
	b := []byte{byte(next), 0}
	switch e.Type {
	case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Destination:
		for _, o := range e.Options {
			if len(o.Data) > 255 {
				return nil, fmt.Errorf("packets: option %d of %d bytes", o.Type, len(o.Data))
			}
			b = append(b, o.Type, byte(len(o.Data)))
			b = append(b, o.Data...)
		}
		switch pad := (8 - len(b)%8) % 8; pad {
		case 0:
		case 1:
			b = append(b, 0) // Pad1
		default:
			b = append(b, 1, byte(pad-2)) // PadN
			b = append(b, make([]byte, pad-2)...)
		}
		b[1] = byte(len(b)/8 - 1)
	case layers.IPProtocolIPv6Routing:
		b = append(b, e.RoutingType, e.SegmentsLeft, 0, 0, 0, 0)
		for _, a := range e.Addresses {
			if !a.Is6() {
				return nil, fmt.Errorf("packets: routing header address %v is not IPv6", a)
			}
			s := a.As16()
			b = append(b, s[:]...)
		}
		b[1] = byte(len(b)/8 - 1)
	case layers.IPProtocolIPv6Fragment:
		fo := e.FragOffset << 3
		if e.MoreFragments {
			fo |= 1
		}
		b = binary.BigEndian.AppendUint16(b, fo)
		b = binary.BigEndian.AppendUint32(b, e.ID)
	case layers.IPProtocolAH:
		b = append(b, 0, 0)
		b = binary.BigEndian.AppendUint32(b, e.SPI)
		b = binary.BigEndian.AppendUint32(b, e.AHSeq)
		b = append(b, e.ICV...)
		if len(b)%8 != 0 {
			return nil, fmt.Errorf("packets: AH of %d bytes is not a multiple of 8", len(b))
		}
		b[1] = byte(len(b)/4 - 2)
	default:
		return nil, fmt.Errorf("packets: extension header type %v not supported", e.Type)
	}
	if len(b) > 2048 {
		return nil, fmt.Errorf("packets: extension header of %d bytes", len(b))
	}
	return b, nil
}

// rawLayer serializes bytes as they are, labelled as layer type typ.
type rawLayer struct {
	typ gopacket.LayerType
	b   []byte
}

func (r rawLayer) LayerType() gopacket.LayerType { return r.typ }

func (r rawLayer) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	p, err := b.PrependBytes(len(r.b))
	if err != nil {
		return err
	}
	copy(p, r.b)
	return nil
}

// Build serializes p. The transport checksum's pseudo-header uses the final
// destination: the last address of a routing header whose segments left is
// not 0, else Dst.
func (p IPv6) Build() ([]byte, error) {
	if !p.Src.Addr().Is6() || !p.Dst.Addr().Is6() {
		return nil, fmt.Errorf("packets: %v -> %v: want IPv6 addresses", p.Src, p.Dst)
	}
	eth := &layers.Ethernet{
		SrcMAC:       orMAC(p.SrcMAC, DefaultSrcMAC),
		DstMAC:       orMAC(p.DstMAC, DefaultDstMAC),
		EthernetType: layers.EthernetTypeIPv6,
	}
	hop := p.HopLimit
	if hop == 0 {
		hop = 64
	}
	ip := &layers.IPv6{
		Version:      6,
		TrafficClass: p.TrafficClass,
		FlowLabel:    p.FlowLabel,
		NextHeader:   p.Proto,
		HopLimit:     hop,
		SrcIP:        p.Src.Addr().AsSlice(),
		DstIP:        p.Dst.Addr().AsSlice(),
	}
	// The pseudo-header's network layer: the IPv6 header, with the final
	// destination of a routing header that has segments left.
	pseudo := &layers.IPv6{SrcIP: ip.SrcIP, DstIP: ip.DstIP}
	ls := []gopacket.SerializableLayer{eth, ip}
	for i, e := range p.Ext {
		if i == 0 {
			ip.NextHeader = e.Type
		}
		next := p.Proto
		if i+1 < len(p.Ext) {
			next = p.Ext[i+1].Type
		}
		b, err := e.bytes(next)
		if err != nil {
			return nil, err
		}
		if e.Type == layers.IPProtocolIPv6Routing && e.SegmentsLeft != 0 && len(e.Addresses) > 0 {
			pseudo.DstIP = e.Addresses[len(e.Addresses)-1].AsSlice()
		}
		ls = append(ls, rawLayer{e.Type.LayerType(), b})
	}
	if p.NoL4Header {
		ls = append(ls, gopacket.Payload(p.Payload))
		return serializeV6(p.Pad, ls...)
	}
	switch p.Proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{
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
		}
		if err := tcp.SetNetworkLayerForChecksum(pseudo); err != nil {
			return nil, err
		}
		ls = append(ls, tcp)
	case layers.IPProtocolUDP:
		udp := &layers.UDP{
			SrcPort: layers.UDPPort(p.Src.Port()),
			DstPort: layers.UDPPort(p.Dst.Port()),
		}
		if err := udp.SetNetworkLayerForChecksum(pseudo); err != nil {
			return nil, err
		}
		ls = append(ls, udp)
	case layers.IPProtocolICMPv6:
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
		if err := icmp.SetNetworkLayerForChecksum(pseudo); err != nil {
			return nil, err
		}
		ls = append(ls, icmp, &layers.ICMPv6Echo{Identifier: p.Src.Port(), SeqNumber: 1})
	default:
		return nil, fmt.Errorf("packets: protocol %v not supported", p.Proto)
	}
	ls = append(ls, gopacket.Payload(p.Payload))
	b, err := serializeV6(p.Pad, ls...)
	if err != nil {
		return nil, err
	}
	if p.Proto == layers.IPProtocolUDP && p.UDPZeroChecksum {
		l, err := Parse(b)
		if err != nil {
			return nil, err
		}
		b[l.L4+6], b[l.L4+7] = 0, 0
	}
	return b, nil
}

func serializeV6(pad int, ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, err
	}
	b := append([]byte(nil), buf.Bytes()...)
	return append(b, make([]byte, pad)...), nil
}

// IPv6TCP builds an Ethernet + IPv6 + TCP SYN frame.
func IPv6TCP(src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	return IPv6{Src: src, Dst: dst, Proto: layers.IPProtocolTCP, Payload: payload, TCPFlags: TCPFlags{SYN: true}}.Build()
}
