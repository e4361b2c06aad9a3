package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// Flow is a connection as a client opens it: from Source to Destination.
type Flow struct {
	Source      netip.AddrPort
	Destination netip.AddrPort
	Protocol    Protocol
}

// Outcome is what the datapath does with a flow's packet.
type Outcome uint8

const (
	// Passed: not for a service; the packet goes on untouched.
	Passed Outcome = iota
	// Forwarded: sent to Backend.
	Forwarded
	// Rejected: the frontend has no backend that takes new flows; the
	// client gets an ICMP port unreachable.
	Rejected
	// Dropped: for example a source outside the service's ranges.
	Dropped
)

var outcomeNames = [...]string{"passed", "forwarded", "rejected", "dropped"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Simulation is the answer of Simulate.
type Simulation struct {
	Outcome Outcome
	// Backend is where a Forwarded flow goes.
	Backend netip.AddrPort
	// Established: the flow is already tracked and keeps its backend.
	Established bool
}

// Simulate answers which backend a flow would reach, by running its first
// packet through the datapath's real XDP program (BPF_PROG_TEST_RUN), for
// a user debugging a service. Conntrack and session affinity state that
// the run creates is removed again, so asking changes nothing a real flow
// would see; an established flow is reported as such and left alone. The
// datapath's packet counters do count the simulated packet. For a service
// with the Random algorithm the answer is one draw, as a real new flow's.
func Simulate(dp *datapath.Datapath, f Flow) (Simulation, error) {
	progs := kernel.Of(dp).Programs
	if progs == nil {
		return Simulation{}, datapath.ErrNoPrograms
	}
	src, dst := f.Source, f.Destination
	switch {
	case !src.Addr().IsValid() || !dst.Addr().IsValid() || src.Addr().Is4() != dst.Addr().Is4():
		return Simulation{}, fmt.Errorf("%w: flow %s -> %s: want two addresses of one family", ErrInvalid, src, dst)
	case !f.Protocol.IsValid():
		return Simulation{}, fmt.Errorf("%w: flow protocol %s: want tcp or udp", ErrInvalid, f.Protocol)
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())

	maps := kernel.Of(dp).Maps
	fwd := ctKey(src, dst, f.Protocol, 0)
	var ct bpf.XdplaneCtValue
	established := maps.Conntrack.Lookup(fwd, &ct) == nil
	svc, hasSvc := lookupService(maps, dst, f.Protocol)
	var aff bpf.XdplaneAffinityKey
	hadAffinity := false
	if hasSvc {
		aff = bpf.XdplaneAffinityKey{Client: src.Addr().As16(), SvcId: svc.Id}
		var av bpf.XdplaneAffinityValue
		hadAffinity = maps.Affinity.Lookup(aff, &av) == nil
	}

	frame, err := simFrame(src, dst, f.Protocol)
	if err != nil {
		return Simulation{}, err
	}
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := progs.XdplaneXdp.Run(&opts)
	if err != nil {
		return Simulation{}, fmt.Errorf("run the XDP program: %w", err)
	}

	sim := Simulation{Established: established}
	const xdpDrop, xdpPass, xdpTX = 1, 2, 3
	switch ret {
	case xdpDrop:
		sim.Outcome = Dropped
	case xdpTX:
		sim.Outcome = Rejected
	case xdpPass:
		be, changed := simDestination(opts.DataOut, dst)
		if changed {
			sim.Outcome, sim.Backend = Forwarded, be
		}
	default:
		return Simulation{}, fmt.Errorf("the XDP program returned %d", ret)
	}

	// Leave no trace: what the run created goes again.
	if !established {
		var errs []error
		if sim.Outcome == Forwarded {
			rev := ctKey(sim.Backend, src, f.Protocol, 1)
			errs = append(errs, kernel.IgnoreMissing(maps.Conntrack.Delete(rev)))
		}
		errs = append(errs, kernel.IgnoreMissing(maps.Conntrack.Delete(fwd)))
		if hasSvc && !hadAffinity {
			errs = append(errs, kernel.IgnoreMissing(maps.Affinity.Delete(aff)))
		}
		if err := errors.Join(errs...); err != nil {
			return sim, fmt.Errorf("remove the simulated flow's state: %w", err)
		}
	}
	return sim, nil
}

func ctKey(src, dst netip.AddrPort, proto Protocol, dir uint8) bpf.XdplaneCtKey {
	return bpf.XdplaneCtKey{
		Saddr: src.Addr().As16(), Daddr: dst.Addr().As16(),
		Sport: kernel.Htons(src.Port()), Dport: kernel.Htons(dst.Port()),
		Proto: uint8(proto), Dir: dir,
	}
}

func lookupService(maps *bpf.XdplaneMaps, dst netip.AddrPort, proto Protocol) (bpf.XdplaneSvcValue, bool) {
	var v bpf.XdplaneSvcValue
	err := maps.Services.Lookup(svcKey(Frontend{Address: dst, Protocol: proto}), &v)
	return v, err == nil
}

// simFrame builds a flow's first packet: a TCP SYN, or a UDP datagram.
func simFrame(src, dst netip.AddrPort, proto Protocol) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	next := layers.IPProtocolTCP
	if proto == UDP {
		next = layers.IPProtocolUDP
	}
	var ip gopacket.NetworkLayer
	if src.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: next, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	}
	var l4 interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	}
	if proto == TCP {
		l4 = &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), SYN: true, Window: 64240}
	} else {
		l4 = &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	}
	if err := l4.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), l4)
	return buf.Bytes(), err
}

// simDestination reads a frame's destination back and says whether it
// differs from dst.
func simDestination(frame []byte, dst netip.AddrPort) (netip.AddrPort, bool) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.NoCopy)
	var addr netip.Addr
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		addr, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		addr, _ = netip.AddrFromSlice(ip.DstIP)
	}
	var port uint16
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		port = uint16(l4.DstPort)
	case *layers.UDP:
		port = uint16(l4.DstPort)
	}
	got := netip.AddrPortFrom(addr, port)
	return got, got != dst
}
