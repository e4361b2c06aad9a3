package lb

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// A frontend with no usable backend answers every new flow with an ICMP
// (ICMPv6) port unreachable from the frontend, quoting the IP header and
// 8 bytes, sent back where the packet came from: XDP_TX, or a redirect
// out of the same interface on tc. Exact bytes, built with gopacket.
func TestRejectWithoutBackends(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	clientMAC := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	nodeMAC := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	const (
		xdpTX       = 3 // XDP_TX
		tcRedirect  = 7 // TC_ACT_REDIRECT
		payloadText = "GET / HTTP/1.1\r\n\r\n"
	)
	for _, tc := range []struct {
		name    string
		fe      string
		client  string
		options []layers.IPv4Option
	}{
		{"tcp", "10.96.0.10:80/tcp", "10.0.0.2:40000", nil},
		{"udp", "10.96.0.10:53/udp", "10.0.0.2:40000", nil},
		{"tcp with ip options", "10.96.0.10:80/tcp", "10.0.0.2:40001",
			[]layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}},
		{"tcp6", "[fd00::10]:80/tcp", "[fd00:9::2]:40000", nil},
		{"udp6", "[fd00::10]:53/udp", "[fd00:9::2]:40000", nil},
	} {
		s := svc(tc.fe)
		if err := m.Upsert(s); err != nil {
			t.Fatal(err)
		}
		client := netip.MustParseAddrPort(tc.client)
		in := rejectInput(t, clientMAC, nodeMAC, s.Frontend, client, tc.options, []byte(payloadText))
		want := rejectWant(t, nodeMAC, clientMAC, s.Frontend.Address.Addr(), client.Addr(), in[14:])
		for _, h := range []struct {
			name    string
			prog    *ebpf.Program
			verdict uint32
		}{
			{"xdp", kernel.Of(dp).Programs.XdplaneXdp, xdpTX},
			{"tc", kernel.Of(dp).Programs.XdplaneTcIngress, tcRedirect},
		} {
			before, _ := dp.Counters()
			out := make([]byte, len(in)+256)
			opts := ebpf.RunOptions{Data: in, DataOut: out}
			ret, err := h.prog.Run(&opts)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.name, h.name, err)
			}
			if ret != h.verdict {
				t.Fatalf("%s %s: verdict %d, want %d", tc.name, h.name, ret, h.verdict)
			}
			if !bytes.Equal(opts.DataOut, want) {
				t.Fatalf("%s %s: got\n%s\nwant\n%s", tc.name, h.name, hex.Dump(opts.DataOut), hex.Dump(want))
			}
			after, _ := dp.Counters()
			if after.NoBackend.Packets != before.NoBackend.Packets+1 {
				t.Fatalf("%s %s: NoBackend counted %d", tc.name, h.name, after.NoBackend.Packets-before.NoBackend.Packets)
			}
		}
	}
}

func rejectInput(t *testing.T, src, dst net.HardwareAddr, fe Frontend, client netip.AddrPort, opts []layers.IPv4Option, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst}
	var ip gopacket.NetworkLayer
	next := layers.IPProtocolTCP
	if fe.Protocol == UDP {
		next = layers.IPProtocolUDP
	}
	if client.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip = &layers.IPv4{Version: 4, TTL: 63, Id: 0x1234, Flags: layers.IPv4DontFragment, Protocol: next,
			SrcIP: client.Addr().AsSlice(), DstIP: fe.Address.Addr().AsSlice(), Options: opts}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: next, SrcIP: client.Addr().AsSlice(), DstIP: fe.Address.Addr().AsSlice()}
	}
	var l4 interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	}
	if fe.Protocol == TCP {
		l4 = &layers.TCP{SrcPort: layers.TCPPort(client.Port()), DstPort: layers.TCPPort(fe.Address.Port()), SYN: true, Seq: 77, Window: 64240}
	} else {
		l4 = &layers.UDP{SrcPort: layers.UDPPort(client.Port()), DstPort: layers.UDPPort(fe.Address.Port())}
	}
	l4.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), l4, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rejectWant builds the expected reply: quoting the offending IP packet's
// header and the 8 bytes after it, or the whole TCP header.
func rejectWant(t *testing.T, src, dst net.HardwareAddr, from, to netip.Addr, offending []byte) []byte {
	t.Helper()
	l4 := 8
	if proto := offending[9]; (to.Is4() && proto == 6) || (!to.Is4() && offending[6] == 6) {
		l4 = 20 // TCP: the whole header
	}
	n := 40 + l4
	if to.Is4() {
		n = int(offending[0]&0x0f)*4 + l4
	}
	b, err := rejectFrame(src, dst, from, to, offending[:n])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rejectFrame builds, with gopacket, an ICMP (ICMPv6) port unreachable
// from from to to, between the given MAC addresses, quoting quote.
func rejectFrame(src, dst net.HardwareAddr, from, to netip.Addr, quote []byte) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var err error
	if to.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: from.AsSlice(), DstIP: to.AsSlice()}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
		err = gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(quote))
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: from.AsSlice(), DstIP: to.AsSlice()}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6CodePortUnreachable)}
		if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, err
		}
		// The 4 unused bytes of the message come first in the payload.
		err = gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(append([]byte{0, 0, 0, 0}, quote...)))
	}
	return slices.Clone(buf.Bytes()), err
}

// Other ports of a virtual IP (a cluster IP) are rejected like a service
// without backends; other ports of a plain frontend address pass. The
// count of services per virtual IP survives a restart, and a damaged
// vips map is repaired then.
func TestRejectOtherPortsOfVirtualIP(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	clientMAC := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	nodeMAC := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	client := netip.MustParseAddrPort("10.0.0.2:40000")
	web := svc("10.96.0.20:80/tcp", "10.0.1.2:8080")
	web.VirtualIP = true
	dns := svc("10.96.0.20:53/udp", "10.0.1.2:5353")
	dns.VirtualIP = true
	plain := svc("10.96.0.21:80/tcp", "10.0.1.2:8080")
	web6 := svc("[fd00::20]:80/tcp", "[fd00:1::2]:8080")
	web6.VirtualIP = true
	if _, err := m.Sync([]Service{web, dns, plain, web6}); err != nil {
		t.Fatal(err)
	}
	run := func(proto Protocol, src netip.AddrPort, dst string) (uint32, []byte) {
		t.Helper()
		fe := Frontend{Address: netip.MustParseAddrPort(dst), Protocol: proto}
		in := rejectInput(t, clientMAC, nodeMAC, fe, src, nil, []byte("hello"))
		out := make([]byte, len(in)+256)
		opts := ebpf.RunOptions{Data: in, DataOut: out}
		ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&opts)
		if err != nil {
			t.Fatal(err)
		}
		if ret == 3 {
			want := rejectWant(t, nodeMAC, clientMAC, fe.Address.Addr(), src.Addr(), in[14:])
			if !bytes.Equal(opts.DataOut, want) {
				t.Fatalf("reject of %s to %s: got\n%s\nwant\n%s", proto, dst, hex.Dump(opts.DataOut), hex.Dump(want))
			}
		} else if !bytes.Equal(opts.DataOut, in) {
			t.Fatalf("%s to %s: verdict %d with changes", proto, dst, ret)
		}
		return ret, opts.DataOut
	}
	const pass, tx = 2, 3
	client6 := netip.MustParseAddrPort("[fd00:9::2]:40000")
	for _, tc := range []struct {
		proto Protocol
		src   netip.AddrPort
		dst   string
		want  uint32
	}{
		{TCP, client, "10.96.0.20:81", tx},
		{UDP, client, "10.96.0.20:54", tx},
		{TCP, client, "10.96.0.20:53", tx}, // the UDP service's port, over TCP
		{TCP, client6, "[fd00::20]:443", tx},
		{TCP, client, "10.96.0.21:81", pass}, // not a virtual IP
		{TCP, client, "10.96.0.22:81", pass},
	} {
		before, _ := dp.Counters()
		if got, _ := run(tc.proto, tc.src, tc.dst); got != tc.want {
			t.Errorf("%s to %s: verdict %d, want %d", tc.proto, tc.dst, got, tc.want)
		}
		after, _ := dp.Counters()
		if tc.want == tx && after.UnknownPort.Packets != before.UnknownPort.Packets+1 {
			t.Errorf("%s to %s: UnknownPort not counted", tc.proto, tc.dst)
		}
	}

	// One of two services on the address goes: still virtual. Both: not.
	if err := m.Delete(dns.Frontend); err != nil {
		t.Fatal(err)
	}
	if got, _ := run(TCP, client, "10.96.0.20:81"); got != tx {
		t.Fatalf("with one service left on the virtual IP: verdict %d", got)
	}
	web.VirtualIP = false
	if err := m.Upsert(web); err != nil {
		t.Fatal(err)
	}
	if got, _ := run(TCP, client, "10.96.0.20:81"); got != pass {
		t.Fatalf("no longer a virtual IP: verdict %d", got)
	}

	// Restart with the map damaged: repaired.
	web.VirtualIP = true
	if err := m.Upsert(web); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := kernel.Of(dp).Maps.Vips.Delete(bpf.XdplaneVipKey{Addr: netip.MustParseAddr("10.96.0.20").As16()}); err != nil {
		t.Fatal(err)
	}
	if err := kernel.Of(dp).Maps.Vips.Put(bpf.XdplaneVipKey{Addr: netip.MustParseAddr("10.96.0.21").As16()}, uint32(3)); err != nil {
		t.Fatal(err)
	}
	dp2, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	newManager(t, dp2)
	dp = dp2
	if got, _ := run(TCP, client, "10.96.0.20:81"); got != tx {
		t.Fatalf("after repair, the virtual IP: verdict %d", got)
	}
	if got, _ := run(TCP, client, "10.96.0.21:81"); got != pass {
		t.Fatalf("after repair, the plain address: verdict %d", got)
	}
}
