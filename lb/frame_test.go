package lb

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// gopacketFrame builds what simFrame builds, with gopacket: the reference.
func gopacketFrame(t *testing.T, src, dst netip.AddrPort, proto Protocol) []byte {
	t.Helper()
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
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), l4); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// simFrame's frames are gopacket's, byte for byte (checksums included),
// and simDestination reads their destination back.
func TestSimFrame(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"10.0.0.2:1000", "10.96.0.10:80"},
		{"192.168.255.254:65535", "172.16.0.1:1"},
		{"[fd00::2]:1000", "[fd00::10]:53"},
		{"[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:40000", "[fe80::1]:8080"},
		{"0.0.0.0:0", "255.255.255.255:65535"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		for _, proto := range []Protocol{TCP, UDP} {
			got, err := simFrame(src, dst, proto)
			if err != nil {
				t.Fatalf("simFrame(%s, %s, %s): %v", src, dst, proto, err)
			}
			if want := gopacketFrame(t, src, dst, proto); !bytes.Equal(got, want) {
				t.Errorf("simFrame(%s, %s, %s) =\n%x\nwant (gopacket)\n%x", src, dst, proto, got, want)
			}
			if back, err := simDestination(got); err != nil || back != dst {
				t.Errorf("simDestination of the frame to %s = %s, %v", dst, back, err)
			}
		}
	}
	// A UDP checksum that computes to zero goes out as all ones, as RFC
	// 768 asks: zero would mean "no checksum". (gopacket writes zero.)
	src, dst := netip.MustParseAddrPort("10.0.0.2:0"), netip.MustParseAddrPort("10.96.0.10:53")
	found := false
	for port := range uint16(65535) {
		src = netip.AddrPortFrom(src.Addr(), port)
		got, err := simFrame(src, dst, UDP)
		if err != nil {
			t.Fatal(err)
		}
		want := gopacketFrame(t, src, dst, UDP)
		at := ethLen + ipv4Len + 6
		if want[at] != 0 || want[at+1] != 0 {
			continue
		}
		found = true
		if got[at] != 0xff || got[at+1] != 0xff || !bytes.Equal(got[:at], want[:at]) || !bytes.Equal(got[at+2:], want[at+2:]) {
			t.Errorf("simFrame(%s, %s, udp) =\n%x\nwant gopacket's with a checksum of ffff\n%x", src, dst, got, want)
		}
		break
	}
	if !found {
		t.Errorf("no source port gives %s a UDP checksum of zero", dst)
	}
	for _, bad := range [][2]string{{"10.0.0.2:1", "[fd00::1]:1"}, {"[::ffff:10.0.0.2]:1", "[::ffff:10.0.0.3]:1"}} {
		if _, err := simFrame(netip.MustParseAddrPort(bad[0]), netip.MustParseAddrPort(bad[1]), TCP); !errors.Is(err, ErrInvalid) {
			t.Errorf("simFrame(%s, %s): %v, want ErrInvalid", bad[0], bad[1], err)
		}
	}
	for _, frame := range [][]byte{nil, make([]byte, 14), append([]byte{12: 8, 13: 0}, make([]byte, 19)...)} {
		if _, err := simDestination(frame); err == nil {
			t.Errorf("simDestination(%x): nil error", frame)
		}
	}
}

// Library code does not import gopacket: only tests build packets with it.
func TestNoGopacketInLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "gopacket") {
			t.Errorf("package lb depends on %s", dep)
		}
	}
}
