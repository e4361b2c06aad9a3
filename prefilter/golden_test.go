package prefilter

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

// runXDP sends frame through the XDP program and returns its verdict and
// the bytes after.
func runXDP(t *testing.T, dp *datapath.Datapath, frame []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&opts)
	if err != nil {
		t.Fatal(err)
	}
	return ret, opts.DataOut
}

func TestPrefilterGolden(t *testing.T) {
	dp := dptest.Open(t, nil, datapath.Options{})
	list := []netip.Prefix{pfx("192.0.2.0/24"), pfx("198.51.100.7/32"), pfx("2001:db8:bad::/48"), pfx("10.66.0.0/16")}
	ch, err := Set(dp, list)
	if err != nil || ch != (Change{Added: 4}) {
		t.Fatalf("SetPrefilter: %+v, %v", ch, err)
	}
	rd, err := dp.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	for _, c := range []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"v4 source in a /24", packets.TCP4("192.0.2.77:1234", "10.96.0.10:80"), true},
		{"v4 source is the /32", packets.UDP4("198.51.100.7:1234", "10.96.0.10:53"), true},
		{"v4 next to the /32", packets.UDP4("198.51.100.8:1234", "10.96.0.10:53"), false},
		{"v4 just below the /24", packets.TCP4("192.0.1.255:1234", "10.96.0.10:80"), false},
		{"v4 destination in the list, source not", packets.TCP4("10.0.0.2:1234", "192.0.2.1:80"), false},
		{"v4 any protocol", packets.Raw4("10.66.3.3", "10.96.0.10", layers.IPProtocolGRE, make([]byte, 8)), true},
		{"v4 a later fragment", packets.Must(testFrag4("10.66.3.3", "10.96.0.10")), true},
		{"v6 source in the /48", packets.TCP6("[2001:db8:bad:1::1]:1234", "[fd00::10]:80"), true},
		{"v6 outside the /48", packets.TCP6("[2001:db8:bae::1]:1234", "[fd00::10]:80"), false},
		{"v6 neighbour solicitation from a listed source", packets.ICMP6Hop("2001:db8:bad::5", "ff02::1:ff00:1", 135, 255, 16), false},
		{"v6 neighbour solicitation from a listed source, forwarded", packets.ICMP6Hop("2001:db8:bad::5", "ff02::1:ff00:1", 135, 64, 16), true},
		{"v6 neighbour solicitation from a listed source, with data", packets.ICMP6Hop("2001:db8:bad::5", "ff02::1:ff00:1", 135, 255, 400), true},
		{"v6 echo request from a listed source", packets.ICMP6Hop("2001:db8:bad::5", "fd00::10", 128, 255, 16), true},
		{"v4 listed source behind a VLAN tag", packets.VLAN(packets.TCP4("192.0.2.77:1234", "10.96.0.10:80"), 0x8100), true},
		{"v4 listed source behind two VLAN tags", packets.VLAN(packets.TCP4("192.0.2.77:1234", "10.96.0.10:80"), 0x88a8, 0x8100), true},
		{"v6 listed source behind a VLAN tag", packets.VLAN(packets.TCP6("[2001:db8:bad:1::1]:1234", "[fd00::10]:80"), 0x8100), true},
		{"v6 behind extension headers", packets.TCP6Ext("[2001:db8:bad::9]:1234", "[fd00::10]:80", packets.HopByHop, packets.DestOpts), true},
	} {
		ret, out := runXDP(t, dp, c.frame)
		switch {
		case c.drop && ret != xdpDrop:
			t.Errorf("%s: verdict %d, want XDP_DROP", c.name, ret)
		case !c.drop && (ret != xdpPass || string(out) != string(c.frame)):
			t.Errorf("%s: verdict %d, want XDP_PASS with the frame unchanged", c.name, ret)
		}
		if !c.drop {
			continue
		}
		rd.SetDeadline(time.Now().Add(time.Second))
		ev, err := rd.Read()
		if err != nil {
			t.Fatalf("%s: no event: %v", c.name, err)
		}
		l := describeAddrs(t, c.frame)
		if ev.Reason != datapath.DropPrefilter || ev.Endpoint != 0 || ev.Source.Addr() != l[0] || ev.Destination.Addr() != l[1] || ev.Length != uint32(len(c.frame)) {
			t.Errorf("%s: event %s, want a prefilter drop from %s to %s", c.name, ev, l[0], l[1])
		}
	}
	dc, err := dp.DropCounters()
	if err != nil {
		t.Fatal(err)
	}
	if dc.Packets[datapath.DropPrefilter] != 12 {
		t.Errorf("prefilter drops counted %d, want 12", dc.Packets[datapath.DropPrefilter])
	}

	// Replace the list: the change is reported, the map holds exactly
	// the new list, masked and deduplicated.
	ch, err = Set(dp, []netip.Prefix{pfx("192.0.2.9/24"), pfx("192.0.2.0/24"), pfx("203.0.113.0/24")})
	if err != nil || ch != (Change{Added: 1, Removed: 3}) {
		t.Fatalf("SetPrefilter again: %+v, %v", ch, err)
	}
	got, err := List(dp)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{pfx("192.0.2.0/24"), pfx("203.0.113.0/24")}; !slices.Equal(got, want) {
		t.Errorf("Prefilter() = %v, want %v", got, want)
	}
	if ret, _ := runXDP(t, dp, packets.UDP4("198.51.100.7:1234", "10.96.0.10:53")); ret != xdpPass {
		t.Errorf("a prefix taken off the list still drops")
	}

	// Bad input names the entry and changes nothing.
	for _, bad := range []netip.Prefix{{}, pfx("::ffff:10.0.0.0/104")} {
		_, err := Set(dp, []netip.Prefix{pfx("10.1.0.0/16"), bad})
		var ve *datapath.ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != "prefilter[1]" {
			t.Errorf("SetPrefilter with %v: %v, want an error on prefilter[1]", bad, err)
		}
	}
	if after, _ := List(dp); !slices.Equal(after, got) {
		t.Errorf("a refused list changed the prefilter: %v", after)
	}
}

// The list holds a million prefixes, and a lookup among them drops the
// right sources.
func TestPrefilterMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("installs a million prefixes")
	}
	dp := dptest.Open(t, nil, datapath.Options{})
	rng := rand.New(rand.NewPCG(9, 9))
	seen := make(map[netip.Prefix]bool)
	var list []netip.Prefix
	for len(list) < 1_000_000 {
		var p netip.Prefix
		if len(list)%4 == 3 {
			var a [16]byte
			a[0], a[1] = 0x20, 0x01
			for i := 2; i < 8; i++ {
				a[i] = byte(rng.Uint32())
			}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 64)
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + rng.IntN(200)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}), 32)
		}
		if !seen[p] {
			seen[p] = true
			list = append(list, p)
		}
	}
	start := time.Now()
	ch, err := Set(dp, list)
	if err != nil || ch.Added != len(list) {
		t.Fatalf("Set(1M): %+v, %v", ch, err)
	}
	t.Logf("installed %d prefixes in %s", len(list), time.Since(start).Round(time.Millisecond))
	for i := 0; i < len(list); i += 99_991 {
		p := list[i]
		src := p.Addr()
		var frame []byte
		if src.Is4() {
			frame = packets.TCP4(netip.AddrPortFrom(src, 1234).String(), "10.96.0.10:80")
		} else {
			frame = packets.TCP6(netip.AddrPortFrom(src.Next(), 1234).String(), "[fd00::10]:80")
		}
		if ret, _ := runXDP(t, dp, frame); ret != xdpDrop {
			t.Errorf("source %s in the list: verdict %d", src, ret)
		}
	}
	if ret, _ := runXDP(t, dp, packets.TCP4("10.0.0.2:1234", "10.96.0.10:80")); ret != xdpPass {
		t.Errorf("a source outside the list: verdict %d", ret)
	}
}

// testFrag4 is a later fragment of a UDP datagram.
func testFrag4(src, dst string) ([]byte, error) {
	return packets.IPv4{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: layers.IPProtocolUDP, ID: 300, FragOffset: 10, NoL4Header: true, Payload: make([]byte, 16)}.Build()
}

// describeAddrs returns the source and destination address of a frame.
func describeAddrs(t *testing.T, frame []byte) [2]netip.Addr {
	t.Helper()
	for frame[12] == 0x81 || frame[12] == 0x88 && frame[13] == 0xa8 {
		frame = append(append([]byte(nil), frame[:12]...), frame[16:]...)
	}
	if frame[12] == 0x08 {
		s, _ := netip.AddrFromSlice(frame[26:30])
		d, _ := netip.AddrFromSlice(frame[30:34])
		return [2]netip.Addr{s, d}
	}
	s, _ := netip.AddrFromSlice(frame[22:38])
	d, _ := netip.AddrFromSlice(frame[38:54])
	return [2]netip.Addr{s, d}
}

// An IPv6 prefix that holds ::ffff:0:0/96, where the map keeps IPv4,
// drops no IPv4 source; 0.0.0.0/0 listed as well does.
func TestPrefilterFamiliesApart(t *testing.T) {
	dp := dptest.Open(t, nil, datapath.Options{})
	v4, v6 := packets.TCP4("192.0.2.1:1234", "10.96.0.10:80"), packets.TCP6("[2001:db8::1]:1234", "[fd00::10]:80")
	for _, c := range []struct {
		list   []netip.Prefix
		v4, v6 bool // dropped
	}{
		{[]netip.Prefix{pfx("::/0")}, false, true},
		{[]netip.Prefix{pfx("::/80")}, false, false},
		{[]netip.Prefix{pfx("0.0.0.0/0"), pfx("::/0")}, true, true},
		{[]netip.Prefix{pfx("0.0.0.0/0")}, true, false},
		{[]netip.Prefix{pfx("::fffe:0:0/95")}, false, false},
		{nil, false, false},
	} {
		if _, err := Set(dp, c.list); err != nil {
			t.Fatal(err)
		}
		got, err := List(dp)
		if err != nil || !slices.Equal(got, c.list) {
			t.Errorf("%v: Prefilter() = %v, %v", c.list, got, err)
		}
		if ret, _ := runXDP(t, dp, v4); (ret == xdpDrop) != c.v4 {
			t.Errorf("%v: IPv4 source verdict %d, want dropped=%v", c.list, ret, c.v4)
		}
		if ret, _ := runXDP(t, dp, v6); (ret == xdpDrop) != c.v6 {
			t.Errorf("%v: IPv6 source verdict %d, want dropped=%v", c.list, ret, c.v6)
		}
	}
	if n := count(t, dp); n != 0 {
		t.Errorf("%d entries left with an empty list", n)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// count is the number of entries in the prefilter map, exceptions too.
func count(t *testing.T, dp *datapath.Datapath) int {
	t.Helper()
	keys, err := kernel.Keys(kernel.Of(dp).Maps.Prefilter, func(bpf.XdplanePrefilterKey, uint8) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}
