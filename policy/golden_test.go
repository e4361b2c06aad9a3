package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
)

// goldenPolicy is the policy of the golden tests' endpoint (10.0.1.2,
// fd00:1::2), the same in both families:
//
//	ingress, isolated:
//	  allow 10.0.0.0/16 except 10.0.5.0/24 (fd00:a::/64 except fd00:a::5:0/112)
//	        TCP 80, TCP 8000-8100, SCTP 9000
//	  allow 10.9.0.0/16 (fd00:9::/64) UDP 53
//	  allow everyone ICMP echo requests
//	  deny  10.0.7.0/24 (fd00:a::7:0/112), every port
//	egress, isolated:
//	  allow 10.1.0.0/16 (fd00:b::/64) TCP 443
//	  deny  10.1.9.9 (fd00:b::9) TCP 443
func goldenPolicy() Policy {
	return Policy{
		Ingress: Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{{Prefix: pfx("10.0.0.0/16"), Except: []netip.Prefix{pfx("10.0.5.0/24")}}, {Prefix: pfx("fd00:a::/64"), Except: []netip.Prefix{pfx("fd00:a::5:0/112")}}},
				Ports: []PortRange{{Protocol: TCP, Port: 80}, {Protocol: TCP, Port: 8000, EndPort: 8100}, {Protocol: SCTP, Port: 9000}}},
			{Peers: []Peer{{Prefix: pfx("10.9.0.0/16")}, {Prefix: pfx("fd00:9::/64")}}, Ports: []PortRange{{Protocol: UDP, Port: 53}}},
			{Ports: []PortRange{{Protocol: ICMP, Port: 8}, {Protocol: ICMP, Port: 128}}},
			{Action: Deny, Peers: []Peer{{Prefix: pfx("10.0.7.0/24")}, {Prefix: pfx("fd00:a::7:0/112")}}},
		}},
		Egress: Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{{Prefix: pfx("10.1.0.0/16")}, {Prefix: pfx("fd00:b::/64")}}, Ports: []PortRange{{Protocol: TCP, Port: 443}}},
			{Action: Deny, Peers: []Peer{{Prefix: pfx("10.1.9.9/32")}, {Prefix: pfx("fd00:b::9/128")}}, Ports: []PortRange{{Protocol: TCP, Port: 443}}},
		}},
	}
}

type goldenCase struct {
	name   string
	dir    Direction
	frame  []byte
	pass   bool
	reason datapath.DropReason // of the drop
}

// goldenCases are first packets of new flows, each judged on its own.
func goldenCases(t testing.TB) []goldenCase {
	return []goldenCase{
		// Peers, ports and ranges.
		{"v4 allowed peer, allowed port", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"), true, 0},
		{"v6 allowed peer, allowed port", Ingress, packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:80"), true, 0},
		{"v4 allowed peer, other port", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:81"), false, datapath.DropNoRule},
		{"v6 allowed peer, other port", Ingress, packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:81"), false, datapath.DropNoRule},
		{"v4 allowed port, UDP instead of TCP", Ingress, packets.UDP4("10.0.3.4:40000", "10.0.1.2:80"), false, datapath.DropNoRule},
		{"v6 allowed port, UDP instead of TCP", Ingress, packets.UDP6("[fd00:a::3:4]:40000", "[fd00:1::2]:80"), false, datapath.DropNoRule},
		{"v4 peer outside every prefix", Ingress, packets.TCP4("10.2.3.4:40000", "10.0.1.2:80"), false, datapath.DropNoRule},
		{"v6 peer outside every prefix", Ingress, packets.TCP6("[fd00:c::4]:40000", "[fd00:1::2]:80"), false, datapath.DropNoRule},
		{"v4 except prefix", Ingress, packets.TCP4("10.0.5.9:40000", "10.0.1.2:80"), false, datapath.DropNoRule},
		{"v6 except prefix", Ingress, packets.TCP6("[fd00:a::5:9]:40000", "[fd00:1::2]:80"), false, datapath.DropNoRule},
		{"v4 just outside the except prefix", Ingress, packets.TCP4("10.0.6.0:40000", "10.0.1.2:80"), true, 0},
		{"v4 range start", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:8000"), true, 0},
		{"v4 range end", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:8100"), true, 0},
		{"v4 below range", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:7999"), false, datapath.DropNoRule},
		{"v4 above range", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:8101"), false, datapath.DropNoRule},
		{"v6 range end", Ingress, packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:8100"), true, 0},
		{"v6 above range", Ingress, packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:8101"), false, datapath.DropNoRule},
		{"v4 UDP rule", Ingress, packets.UDP4("10.9.0.1:5353", "10.0.1.2:53"), true, 0},
		{"v6 UDP rule", Ingress, packets.UDP6("[fd00:9::1]:5353", "[fd00:1::2]:53"), true, 0},
		{"v4 UDP rule's peer, TCP", Ingress, packets.TCP4("10.9.0.1:5353", "10.0.1.2:53"), false, datapath.DropNoRule},
		{"v6 UDP rule's peer, TCP", Ingress, packets.TCP6("[fd00:9::1]:5353", "[fd00:1::2]:53"), false, datapath.DropNoRule},
		{"v4 SCTP allowed port", Ingress, packets.Raw4("10.0.3.4", "10.0.1.2", layers.IPProtocolSCTP, packets.SCTPHeader(5000, 9000)), true, 0},
		{"v4 SCTP other port", Ingress, packets.Raw4("10.0.3.4", "10.0.1.2", layers.IPProtocolSCTP, packets.SCTPHeader(5000, 9001)), false, datapath.DropNoRule},
		{"v6 SCTP allowed port", Ingress, packets.Raw6("fd00:a::3:4", "fd00:1::2", layers.IPProtocolSCTP, packets.SCTPHeader(5000, 9000)), true, 0},
		{"v6 SCTP other port", Ingress, packets.Raw6("fd00:a::3:4", "fd00:1::2", layers.IPProtocolSCTP, packets.SCTPHeader(5000, 9001)), false, datapath.DropNoRule},
		{"v4 ICMP echo request from anyone", Ingress, packets.Echo("192.0.2.1", "10.0.1.2", 8, 7), true, 0},
		{"v6 ICMPv6 echo request from anyone", Ingress, packets.Echo("2001:db8::1", "fd00:1::2", 128, 7), true, 0},
		{"v4 ICMP timestamp: another type", Ingress, packets.Echo("192.0.2.1", "10.0.1.2", 13, 7), false, datapath.DropNoRule},
		{"v6 ICMPv6 node information query: another type", Ingress, packets.Echo("2001:db8::1", "fd00:1::2", 139, 7), false, datapath.DropNoRule},
		{"v6 ICMPv6 echo reply with no request", Ingress, packets.Echo("2001:db8::1", "fd00:1::2", 129, 7), false, datapath.DropNoRule},
		{"v4 GRE from an allowed peer", Ingress, packets.Raw4("10.0.3.4", "10.0.1.2", layers.IPProtocolGRE, make([]byte, 8)), false, datapath.DropNoRule},
		{"v6 GRE from an allowed peer", Ingress, packets.Raw6("fd00:a::3:4", "fd00:1::2", layers.IPProtocolGRE, make([]byte, 8)), false, datapath.DropNoRule},
		{"v6 no next header from an allowed peer", Ingress, packets.Raw6("fd00:a::3:4", "fd00:1::2", layers.IPProtocolNoNextHeader, make([]byte, 8)), false, datapath.DropNoRule},

		// Deny beats allow.
		{"v4 denied prefix inside an allowed one", Ingress, packets.TCP4("10.0.7.7:40000", "10.0.1.2:80"), false, datapath.DropDenyRule},
		{"v6 denied prefix inside an allowed one", Ingress, packets.TCP6("[fd00:a::7:7]:40000", "[fd00:1::2]:80"), false, datapath.DropDenyRule},
		{"v4 denied prefix, ICMP allowed from everyone", Ingress, packets.Echo("10.0.7.7", "10.0.1.2", 8, 7), false, datapath.DropDenyRule},
		{"v4 egress allowed", Egress, packets.TCP4("10.0.1.2:40000", "10.1.2.3:443"), true, 0},
		{"v6 egress allowed", Egress, packets.TCP6("[fd00:1::2]:40000", "[fd00:b::3]:443"), true, 0},
		{"v4 egress denied host in allowed prefix", Egress, packets.TCP4("10.0.1.2:40000", "10.1.9.9:443"), false, datapath.DropDenyRule},
		{"v6 egress denied host in allowed prefix", Egress, packets.TCP6("[fd00:1::2]:40000", "[fd00:b::9]:443"), false, datapath.DropDenyRule},
		{"v4 egress other port", Egress, packets.TCP4("10.0.1.2:40000", "10.1.2.3:80"), false, datapath.DropNoRule},
		{"v6 egress other port", Egress, packets.TCP6("[fd00:1::2]:40000", "[fd00:b::3]:80"), false, datapath.DropNoRule},
		{"v4 egress judges the destination, not the source", Egress, packets.TCP4("10.1.2.3:40000", "10.0.3.4:80"), false, datapath.DropNoRule},
		{"v6 egress judges the destination, not the source", Egress, packets.TCP6("[fd00:b::3]:40000", "[fd00:a::3:4]:80"), false, datapath.DropNoRule},

		// IP options move the L4 header; they must not hide the port.
		{"v4 options, allowed port", Ingress, v4Options(t, "10.0.3.4:40000", "10.0.1.2:80"), true, 0},
		{"v4 options, other port", Ingress, v4Options(t, "10.0.3.4:40000", "10.0.1.2:81"), false, datapath.DropNoRule},
		{"v4 options, denied peer by Deny rule", Ingress, v4Options(t, "10.0.7.7:40000", "10.0.1.2:80"), false, datapath.DropDenyRule},
		// IPv6 extension headers likewise.
		{"v6 hop-by-hop and destination options, allowed port", Ingress,
			packets.TCP6Ext("[fd00:a::3:4]:40000", "[fd00:1::2]:80", packets.HopByHop, packets.DestOpts), true, 0},
		{"v6 hop-by-hop and destination options, other port", Ingress,
			packets.TCP6Ext("[fd00:a::3:4]:40000", "[fd00:1::2]:81", packets.HopByHop, packets.DestOpts), false, datapath.DropNoRule},
		{"v6 hop-by-hop and destination options, denied peer by Deny rule", Ingress,
			packets.TCP6Ext("[fd00:a::7:7]:40000", "[fd00:1::2]:80", packets.HopByHop, packets.DestOpts), false, datapath.DropDenyRule},
		{"v6 AH, other port", Ingress, packets.TCP6Ext("[fd00:a::3:4]:40000", "[fd00:1::2]:81", packets.AH), false, datapath.DropNoRule},
		{"v6 routing header, denied peer", Ingress,
			packets.TCP6Ext("[fd00:a::7:7]:40000", "[fd00:1::2]:80", packets.Routing(2, 0, netip.MustParseAddr("fd00:1::2"))), false, datapath.DropDenyRule},
		{"v6 nine extension headers: too deep to judge", Ingress,
			packets.TCP6Ext("[fd00:a::3:4]:40000", "[fd00:1::2]:80", packets.DestOpts, packets.DestOpts, packets.DestOpts, packets.DestOpts,
				packets.DestOpts, packets.DestOpts, packets.DestOpts, packets.DestOpts, packets.DestOpts), false, datapath.DropMalformed},
		{"v6 eight extension headers: still judged", Ingress,
			packets.TCP6Ext("[fd00:a::3:4]:40000", "[fd00:1::2]:80", packets.DestOpts, packets.DestOpts, packets.DestOpts, packets.DestOpts,
				packets.DestOpts, packets.DestOpts, packets.DestOpts, packets.DestOpts), true, 0},

		// What cannot be judged is denied where rules apply.
		{"v4 TCP header cut short", Ingress, packets.Raw4("10.0.3.4", "10.0.1.2", layers.IPProtocolTCP, []byte{0x9c, 0x40, 0, 80, 0, 0}), false, datapath.DropMalformed},
		{"v6 UDP header cut short", Ingress, packets.Raw6("fd00:9::1", "fd00:1::2", layers.IPProtocolUDP, []byte{0x14, 0xe9, 0, 53}), false, datapath.DropMalformed},
		{"v6 v4-mapped source", Ingress, packets.TCP6("[::ffff:10.0.3.4]:40000", "[fd00:1::2]:80"), false, datapath.DropMalformed},
		{"v4 IHL below 5", Ingress, badIHL(packets.TCP4("10.0.3.4:40000", "10.0.1.2:80")), false, datapath.DropMalformed},
		{"v6 carrying IPv4's ICMP", Ingress, packets.Raw6("2001:db8::1", "fd00:1::2", layers.IPProtocolICMPv4, packets.ICMPMsg(8, 0, 0, nil)), false, datapath.DropMalformed},
		{"v4 VLAN-tagged", Ingress, packets.VLAN(packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"), 0x8100), false, datapath.DropMalformed},
	}
}

// v4Options is a TCP SYN whose IPv4 header carries ipOptions.
func v4Options(t testing.TB, src, dst string) []byte {
	return packets.Must(packets.IPv4{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolTCP, TCPFlags: packets.TCPFlags{SYN: true},
		Options: ipOptions}.Build())
}

// ipOptions are 8 bytes of IPv4 options: seven no-ops and an end of list.
var ipOptions = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1},
	{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}

func badIHL(frame []byte) []byte {
	frame[packets.EthLen] = 0x44
	return frame
}

func TestGoldenPolicy(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.setPolicy(goldenPolicy())
	for _, c := range goldenCases(t) {
		r.expect(c.name, c.dir, c.frame, c.pass)
	}
}

// The reference semantics agree with every golden case that names a flow
// it can describe: the golden table is not a second opinion of its own.
func TestGoldenAgreesWithDecide(t *testing.T) {
	p := goldenPolicy()
	for _, c := range goldenCases(t) {
		if c.reason == datapath.DropMalformed {
			continue
		}
		l, err := packets.Parse(c.frame)
		if err != nil || l.Fragment {
			continue
		}
		peer, proto, port := describe(t, c.dir, c.frame)
		got := p.Decide(c.dir, peer, proto, port)
		want := Allowed
		switch c.reason {
		case datapath.DropDenyRule:
			want = DeniedByRule
		case datapath.DropNoRule:
			want = DeniedByDefault
		}
		if got != want {
			t.Errorf("%s: Decide says %s, the golden table %s", c.name, got, want)
		}
	}
}

// describe reads the peer, protocol and port of a golden frame the way the
// datapath does, with gopacket.
func describe(t *testing.T, dir Direction, frame []byte) (netip.Addr, Protocol, uint16) {
	t.Helper()
	l, err := packets.Parse(frame)
	if err != nil {
		t.Fatal(err)
	}
	src, dst, proto := l.Src, l.Dst, uint8(l.Proto)
	peer := src
	if dir == Egress {
		peer = dst
	}
	var port uint16
	switch proto {
	case 6, 17, 132:
		port = uint16(frame[l.L4+2])<<8 | uint16(frame[l.L4+3])
	case 1, 58:
		proto, port = 1, uint16(frame[l.L4])
	}
	return peer, Protocol(proto), port
}

// Drops are counted per endpoint and direction and by reason, and each
// is an event with its 5-tuple, endpoint and reason.
func TestGoldenCountersAndEvents(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.setPolicy(goldenPolicy())
	rd, err := r.dp.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	cases := goldenCases(t)
	want := map[Direction]*Counters{Ingress: {}, Egress: {}}
	drops := map[datapath.DropReason]uint64{}
	for _, c := range cases {
		r.expect(c.name, c.dir, c.frame, c.pass)
		if c.pass {
			want[c.dir].AllowedPackets++
			want[c.dir].AllowedBytes += uint64(len(c.frame))
			continue
		}
		want[c.dir].DeniedPackets++
		want[c.dir].DeniedBytes += uint64(len(c.frame))
		drops[c.reason]++

		// Read in the endpoint's namespace, where the reader names the
		// interface.
		var ev datapath.Event
		rd.SetDeadline(time.Now().Add(time.Second))
		if err := r.ns.Do(func() (err error) { ev, err = rd.Read(); return err }); err != nil {
			t.Fatalf("%s: no event: %v", c.name, err)
		}
		st, _ := r.m.Endpoint("pol0")
		if ev.Reason != c.reason || ev.Direction != c.dir || ev.Endpoint != st.ID || ev.Interface != "pol0" ||
			ev.Length != uint32(len(c.frame)) || ev.Ifindex != int(r.ifindex) {
			t.Errorf("%s: event %+v, want reason %s, direction %s, endpoint %d on pol0, length %d", c.name, ev, c.reason, c.dir, st.ID, len(c.frame))
		}
		if c.reason != datapath.DropMalformed {
			peer, proto, port := describe(t, c.dir, c.frame)
			evPeer, evPort := ev.Source.Addr(), ev.Destination.Port()
			if c.dir == Egress {
				evPeer = ev.Destination.Addr()
			}
			if proto == ICMP {
				evPort = port // an event carries the echo identifier, not the type
			}
			if evPeer != peer || evPort != port {
				t.Errorf("%s: event %s, want peer %s port %d", c.name, ev, peer, port)
			}
		}
		if time.Since(ev.Time).Abs() > time.Minute {
			t.Errorf("%s: event time %s is not now", c.name, ev.Time)
		}
	}
	got, err := r.m.Counters("pol0")
	if err != nil {
		t.Fatal(err)
	}
	if got.Ingress != *want[Ingress] || got.Egress != *want[Egress] {
		t.Errorf("counters %+v, want ingress %+v egress %+v", got, *want[Ingress], *want[Egress])
	}
	dc, err := r.dp.DropCounters()
	if err != nil {
		t.Fatal(err)
	}
	for reason, n := range drops {
		if dc.Packets[reason] != n {
			t.Errorf("drop counter %s = %d, want %d", reason, dc.Packets[reason], n)
		}
	}
	if dc.EventsLost != 0 {
		t.Errorf("%d events lost", dc.EventsLost)
	}
}

// With datapath.Options.EventSample N, every drop is counted and every
// N-th drop on each CPU becomes an event. The sampling is a count per CPU,
// not a random draw: what each CPU has counted since its last event stays
// in event_tick, and events × N plus those counts is the number of drops,
// exactly, however the runs fell on the CPUs (so the events number
// between ⌈(M − CPUs × (N−1)) / N⌉ and ⌊M/N⌋ for M drops).
func TestGoldenEventSampling(t *testing.T) {
	const n, m = 7, 200
	r := newRigWith(t, datapath.Options{EventSample: n})
	r.setPolicy(Policy{Ingress: Rules{Isolated: true}})
	rd, err := r.dp.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	for i := range m {
		sport := uint16(20000 + i)
		frame := packets.TCP4(hostPort("10.0.3.4", sport), "10.0.1.2:80")
		if i%2 == 1 {
			frame = packets.TCP6(hostPort("fd00:a::3:4", sport), "[fd00:1::2]:80")
		}
		r.expect(fmt.Sprintf("denied packet %d", i), Ingress, frame, false)
	}

	dc := r.dropCounters()
	if dc.Packets[datapath.DropNoRule] != m || dc.EventsLost != 0 {
		t.Errorf("drop counter %s = %d, %d events lost; want %d, none lost", datapath.DropNoRule, dc.Packets[datapath.DropNoRule], dc.EventsLost, m)
	}
	if c, err := r.m.Counters("pol0"); err != nil || c.Ingress.DeniedPackets != m {
		t.Errorf("endpoint counters %+v, %v; want %d ingress packets denied", c, err, m)
	}
	events := 0
	for {
		rd.SetDeadline(time.Now().Add(200 * time.Millisecond))
		ev, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Reason != datapath.DropNoRule || ev.Direction != Ingress || ev.Destination.Port() != 80 {
			t.Errorf("event %s, want one of the denied packets", ev)
		}
		events++
	}
	var ticks []uint32
	if err := kernel.Of(r.dp).Maps.EventTick.Lookup(uint32(0), &ticks); err != nil {
		t.Fatal(err)
	}
	left := 0
	for cpu, tick := range ticks {
		if tick >= n {
			t.Errorf("CPU %d has counted %d drops since its last event, want fewer than %d", cpu, tick, n)
		}
		left += int(tick)
	}
	if events*n+left != m {
		t.Errorf("%d events and %d drops counted towards the next (%v per CPU): %d × %d + %d != %d drops",
			events, left, ticks, events, n, left, m)
	}
}

// Without a policy, or with a direction not isolated and no deny rules,
// everything passes, even what cannot be parsed (the kernel decides).
func TestGoldenNoPolicyPassesAll(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	for _, c := range goldenCases(t) {
		r.expect("no policy: "+c.name, c.dir, c.frame, true)
	}
	// Deny rules alone: a direction that is not isolated denies only
	// what they match.
	// The flows above are tracked now, and stay allowed whatever the
	// policy becomes: every flow from here on is new.
	r.setPolicy(Policy{Ingress: Rules{Rules: []Rule{{Action: Deny, Peers: []Peer{{Prefix: pfx("10.0.7.0/24")}, {Prefix: pfx("fd00:a::7:0/112")}},
		Ports: []PortRange{{Protocol: TCP, Port: 80}}}}}})
	for _, c := range []goldenCase{
		{"v4 deny only, matched", Ingress, packets.TCP4("10.0.7.7:41000", "10.0.1.2:80"), false, datapath.DropDenyRule},
		{"v6 deny only, matched", Ingress, packets.TCP6("[fd00:a::7:7]:41000", "[fd00:1::2]:80"), false, datapath.DropDenyRule},
		{"v4 deny only, other port", Ingress, packets.TCP4("10.0.7.7:41000", "10.0.1.2:81"), true, 0},
		{"v6 deny only, other port", Ingress, packets.TCP6("[fd00:a::7:7]:41000", "[fd00:1::2]:81"), true, 0},
		{"v4 deny only, other protocol", Ingress, packets.UDP4("10.0.7.7:41000", "10.0.1.2:80"), true, 0},
		{"v6 deny only, other protocol", Ingress, packets.UDP6("[fd00:a::7:7]:41000", "[fd00:1::2]:80"), true, 0},
		{"v4 deny only, other peer", Ingress, packets.TCP4("10.0.8.7:41000", "10.0.1.2:80"), true, 0},
		{"v6 deny only, other peer", Ingress, packets.TCP6("[fd00:a::8:7]:41000", "[fd00:1::2]:80"), true, 0},
		{"v4 deny only, egress untouched", Egress, packets.TCP4("10.0.1.2:80", "10.0.7.7:80"), true, 0},
		{"v6 deny only, egress untouched", Egress, packets.TCP6("[fd00:1::2]:80", "[fd00:a::7:7]:80"), true, 0},
		// A deny rule on ports makes unparseable packets on that
		// direction deny: they could be hiding a denied port.
		{"v4 deny only, cut-short TCP", Ingress, packets.Raw4("10.0.7.7", "10.0.1.2", layers.IPProtocolTCP, []byte{0x9c, 0x40, 0, 80}), false, datapath.DropMalformed},
		{"v6 deny only, cut-short TCP", Ingress, packets.Raw6("fd00:a::7:7", "fd00:1::2", layers.IPProtocolTCP, []byte{0x9c, 0x40, 0, 80}), false, datapath.DropMalformed},
	} {
		r.expectCase(c)
	}

	// Isolated with no rules: deny all (Kubernetes' default-deny policy).
	r.setPolicy(Policy{Ingress: Rules{Isolated: true}, Egress: Rules{Isolated: true}})
	for _, c := range []goldenCase{
		{"v4 deny all", Ingress, packets.TCP4("10.0.3.4:41000", "10.0.1.2:80"), false, datapath.DropNoRule},
		{"v6 deny all", Ingress, packets.TCP6("[fd00:a::3:4]:41000", "[fd00:1::2]:80"), false, datapath.DropNoRule},
		{"v4 deny all, egress", Egress, packets.TCP4("10.0.1.2:41000", "10.0.3.4:80"), false, datapath.DropNoRule},
		{"v6 deny all, egress", Egress, packets.TCP6("[fd00:1::2]:41000", "[fd00:a::3:4]:80"), false, datapath.DropNoRule},
		{"v4 deny all, UDP", Ingress, packets.UDP4("10.9.0.1:41000", "10.0.1.2:53"), false, datapath.DropNoRule},
		{"v6 deny all, UDP", Ingress, packets.UDP6("[fd00:9::1]:41000", "[fd00:1::2]:53"), false, datapath.DropNoRule},
		{"v4 deny all, echo request", Ingress, packets.Echo("192.0.2.1", "10.0.1.2", 8, 41), false, datapath.DropNoRule},
		{"v6 deny all, echo request", Ingress, packets.Echo("2001:db8::1", "fd00:1::2", 128, 41), false, datapath.DropNoRule},
	} {
		r.expectCase(c)
	}
	// But IPv6's neighbour discovery and multicast listener messages
	// pass, as ARP does: without them nothing works. Only those that
	// cannot have left their link (hop limit 255 for neighbour
	// discovery, 1 for multicast listeners); out of the pod, only the
	// small messages a host sends.
	for _, c := range []struct {
		typ, hop uint8
		body     int
		in, out  bool
	}{
		{133, 255, 8, true, true}, {135, 255, 24, true, true}, {136, 255, 24, true, true},
		{134, 255, 24, true, false}, {137, 255, 40, true, false},
		{135, 255, 200, true, false},                              // a neighbour solicitation carrying data
		{135, 64, 24, false, false}, {136, 254, 24, false, false}, // forwarded: not from the link
		{130, 1, 16, true, true}, {131, 1, 16, true, true}, {132, 1, 16, true, true}, {143, 1, 16, true, true},
		{143, 64, 16, false, false},
		{128, 255, 16, false, false}, {129, 1, 16, false, false}, {138, 255, 16, false, false},
	} {
		nd := packets.ICMP6Hop("fe80::1", "ff02::1:ff00:2", c.typ, c.hop, c.body)
		r.expect(fmt.Sprintf("deny all, ICMPv6 type %d hop limit %d, %d bytes, in", c.typ, c.hop, c.body), Ingress, nd, c.in)
		r.expect(fmt.Sprintf("deny all, ICMPv6 type %d hop limit %d, %d bytes, out", c.typ, c.hop, c.body), Egress, nd, c.out)
	}
	// Anything but IP and ARP may carry IP past the policy (a second
	// VLAN tag the kernel takes off after tc): denied where rules apply.
	r.expect("deny all, a VLAN-tagged frame", Egress, packets.VLAN(packets.UDP4("10.0.1.2:5000", "10.0.3.4:53"), 0x8100), false)
	r.expect("deny all, a QinQ frame", Egress, packets.VLAN(packets.UDP4("10.0.1.2:5000", "10.0.3.4:53"), 0x88a8, 0x8100), false)
	r.setPolicy(Policy{})
	r.expect("no policy, a VLAN-tagged frame", Egress, packets.VLAN(packets.UDP4("10.0.1.2:5001", "10.0.3.4:53"), 0x8100), true)
}

// Replies of an allowed flow pass the other direction's rules, and so do
// ICMP errors about it; a packet that only looks like a reply does not.
func TestGoldenStateful(t *testing.T) {
	for _, fam := range []struct {
		name                      string
		out, reply, strayReply    []byte
		inOut, inReply            []byte
		errAbout, errAboutUnknown []byte
		errBack, errElsewhere     []byte
		errFromDenied             []byte
	}{
		{
			name:       "v4",
			out:        packets.TCP4("10.0.1.2:40000", "10.1.2.3:443"),
			reply:      packets.TCP4("10.1.2.3:443", "10.0.1.2:40000"),
			strayReply: packets.TCP4("10.1.2.3:443", "10.0.1.2:40001"),
			inOut:      packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"),
			inReply:    packets.TCP4("10.0.1.2:80", "10.0.3.4:40000"),
			errAbout: packets.Raw4("10.200.0.1", "10.0.1.2", layers.IPProtocolICMPv4,
				packets.ICMPMsg(3, 4, 1400, ipPacket(packets.TCP4("10.0.1.2:40000", "10.1.2.3:443"))[:28])),
			errAboutUnknown: packets.Raw4("10.200.0.1", "10.0.1.2", layers.IPProtocolICMPv4,
				packets.ICMPMsg(3, 4, 1400, ipPacket(packets.TCP4("10.0.1.2:40009", "10.1.2.3:443"))[:28])),
			errBack: packets.Raw4("10.0.1.2", "10.0.3.4", layers.IPProtocolICMPv4,
				packets.ICMPMsg(3, 3, 0, ipPacket(packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"))[:28])),
			errElsewhere: packets.Raw4("10.0.1.2", "203.0.113.9", layers.IPProtocolICMPv4,
				packets.ICMPMsg(3, 3, 0, append(ipPacket(packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"))[:28], make([]byte, 1200)...))),
			errFromDenied: packets.Raw4("10.0.7.7", "10.0.1.2", layers.IPProtocolICMPv4,
				packets.ICMPMsg(3, 4, 1400, ipPacket(packets.TCP4("10.0.1.2:40000", "10.1.2.3:443"))[:28])),
		},
		{
			name:       "v6",
			out:        packets.TCP6("[fd00:1::2]:40000", "[fd00:b::3]:443"),
			reply:      packets.TCP6("[fd00:b::3]:443", "[fd00:1::2]:40000"),
			strayReply: packets.TCP6("[fd00:b::3]:443", "[fd00:1::2]:40001"),
			inOut:      packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:80"),
			inReply:    packets.TCP6("[fd00:1::2]:80", "[fd00:a::3:4]:40000"),
			errAbout: packets.Raw6("fd00:200::1", "fd00:1::2", layers.IPProtocolICMPv6,
				packets.ICMPMsg(2, 0, 1280, ipPacket(packets.TCP6("[fd00:1::2]:40000", "[fd00:b::3]:443"))[:48])),
			errAboutUnknown: packets.Raw6("fd00:200::1", "fd00:1::2", layers.IPProtocolICMPv6,
				packets.ICMPMsg(2, 0, 1280, ipPacket(packets.TCP6("[fd00:1::2]:40009", "[fd00:b::3]:443"))[:48])),
			errBack: packets.Raw6("fd00:1::2", "fd00:a::3:4", layers.IPProtocolICMPv6,
				packets.ICMPMsg(1, 4, 0, ipPacket(packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:80"))[:48])),
			errElsewhere: packets.Raw6("fd00:1::2", "2001:db8::9", layers.IPProtocolICMPv6,
				packets.ICMPMsg(1, 4, 0, append(ipPacket(packets.TCP6("[fd00:a::3:4]:40000", "[fd00:1::2]:80"))[:48], make([]byte, 1000)...))),
			errFromDenied: packets.Raw6("fd00:a::7:7", "fd00:1::2", layers.IPProtocolICMPv6,
				packets.ICMPMsg(2, 0, 1280, ipPacket(packets.TCP6("[fd00:1::2]:40000", "[fd00:b::3]:443"))[:48])),
		},
	} {
		t.Run(fam.name, func(t *testing.T) {
			r := newRig(t, datapath.Limits{})
			r.setPolicy(goldenPolicy())
			r.expect("reply before the flow", Ingress, fam.reply, false)
			r.expect("ICMP error before the flow", Ingress, fam.errAbout, false)
			r.expect("flow out", Egress, fam.out, true)
			r.expect("its reply", Ingress, fam.reply, true)
			r.expect("its next packet", Egress, fam.out, true)
			r.expect("a stray packet like a reply", Ingress, fam.strayReply, false)
			r.expect("an ICMP error about it", Ingress, fam.errAbout, true)
			r.expect("an ICMP error about another flow", Ingress, fam.errAboutUnknown, false)
			r.expect("flow in", Ingress, fam.inOut, true)
			r.expect("its reply out, which egress rules deny", Egress, fam.inReply, true)
			// An error the pod sends about the flow in: to its sender
			// it passes; to anyone else it is no error about that flow.
			r.expect("the pod's ICMP error back to the flow's sender", Egress, fam.errBack, true)
			r.expect("the pod's ICMP error about it, sent elsewhere", Egress, fam.errElsewhere, false)
			r.expect("an ICMP error about a tracked flow from a denied peer", Ingress, fam.errFromDenied, false)
		})
	}
}

// UDP, SCTP and ICMP echo replies pass the other direction's rules as
// TCP's do (TestGoldenStateful), both for a flow the pod opens and for one
// it accepts; what only looks like a reply does not.
func TestGoldenStatefulProtocols(t *testing.T) {
	for _, fam := range []struct {
		name string
		// remote: a peer egress may open flows to; udpPeer and sctpPeer:
		// peers ingress accepts UDP 53 and SCTP 9000 from; anyone: a
		// peer ingress accepts only echo requests from.
		pod, remote, udpPeer, sctpPeer, anyone string
		request, reply                         uint8 // echo types
	}{
		{"v4", "10.0.1.2", "10.1.2.3", "10.9.0.1", "10.0.3.4", "192.0.2.1", 8, 0},
		{"v6", "fd00:1::2", "fd00:b::3", "fd00:9::1", "fd00:a::3:4", "2001:db8::1", 128, 129},
	} {
		t.Run(fam.name, func(t *testing.T) {
			r := newRig(t, datapath.Limits{})
			// Egress may also open UDP 53, SCTP 9000 and echo to the
			// peers of its TCP rule; ingress accepts none of their replies.
			p := goldenPolicy()
			p.Egress.Rules = append(p.Egress.Rules, Rule{Peers: p.Egress.Rules[0].Peers,
				Ports: []PortRange{{Protocol: UDP, Port: 53}, {Protocol: SCTP, Port: 9000}, {Protocol: ICMP, Port: 8}, {Protocol: ICMP, Port: 128}}})
			r.setPolicy(p)

			var cases []goldenCase
			for _, c := range []struct {
				proto  layers.IPProtocol
				port   uint16
				inPeer string
			}{
				{layers.IPProtocolUDP, 53, fam.udpPeer},
				{layers.IPProtocolSCTP, 9000, fam.sctpPeer},
			} {
				pkt := func(src string, sport uint16, dst string, dport uint16) []byte {
					return packets.FlowStart(c.proto, hostPort(src, sport), hostPort(dst, dport))
				}
				name := fam.name + " " + c.proto.String()
				cases = append(cases,
					goldenCase{name + " reply before the flow", Ingress, pkt(fam.remote, c.port, fam.pod, 5353), false, datapath.DropNoRule},
					goldenCase{name + " flow out", Egress, pkt(fam.pod, 5353, fam.remote, c.port), true, 0},
					goldenCase{name + " its reply, which ingress rules deny", Ingress, pkt(fam.remote, c.port, fam.pod, 5353), true, 0},
					goldenCase{name + " a stray packet like a reply", Ingress, pkt(fam.remote, c.port, fam.pod, 5354), false, datapath.DropNoRule},
					goldenCase{name + " reply out before the flow in", Egress, pkt(fam.pod, c.port, c.inPeer, 5353), false, datapath.DropNoRule},
					goldenCase{name + " flow in", Ingress, pkt(c.inPeer, 5353, fam.pod, c.port), true, 0},
					goldenCase{name + " its reply out, which egress rules deny", Egress, pkt(fam.pod, c.port, c.inPeer, 5353), true, 0},
					goldenCase{name + " a stray packet out like a reply", Egress, pkt(fam.pod, c.port, c.inPeer, 5354), false, datapath.DropNoRule},
				)
			}
			// An echo's flow is its identifier: a reply with another one
			// belongs to no request.
			name := fam.name + " echo"
			cases = append(cases,
				goldenCase{name + " reply before the request", Ingress, packets.Echo(fam.remote, fam.pod, fam.reply, 7), false, datapath.DropNoRule},
				goldenCase{name + " request out", Egress, packets.Echo(fam.pod, fam.remote, fam.request, 7), true, 0},
				goldenCase{name + " its reply, which ingress rules deny", Ingress, packets.Echo(fam.remote, fam.pod, fam.reply, 7), true, 0},
				goldenCase{name + " a reply with another identifier", Ingress, packets.Echo(fam.remote, fam.pod, fam.reply, 8), false, datapath.DropNoRule},
				goldenCase{name + " reply out before the request in", Egress, packets.Echo(fam.pod, fam.anyone, fam.reply, 9), false, datapath.DropNoRule},
				goldenCase{name + " request in", Ingress, packets.Echo(fam.anyone, fam.pod, fam.request, 9), true, 0},
				goldenCase{name + " its reply out, which egress rules deny", Egress, packets.Echo(fam.pod, fam.anyone, fam.reply, 9), true, 0},
				goldenCase{name + " a reply out with another identifier", Egress, packets.Echo(fam.pod, fam.anyone, fam.reply, 10), false, datapath.DropNoRule},
			)
			for _, c := range cases {
				r.expectCase(c)
			}
		})
	}
}

// A later fragment passes only when its datagram's first fragment did:
// the ports it lacks come from that one.
func TestGoldenFragments(t *testing.T) {
	const tcp, udp, sctp = layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolSCTP
	udpFrag := func(src, dst string, id uint32, offset uint16, more bool) []byte {
		return frag{proto: udp, src: src, dst: dst, id: id, offset: offset, more: more}.build()
	}
	// The body of a later fragment that reads as a UDP header from 5353
	// to 53, which the rules allow: a parser that took it for one would
	// let it pass.
	lookalike := append([]byte{0x14, 0xe9, 0, 53, 0, 64, 0, 0}, make([]byte, 56)...)
	r := newRig(t, datapath.Limits{})
	r.setPolicy(goldenPolicy())

	var cases []goldenCase
	add := func(cs ...goldenCase) { cases = append(cases, cs...) }

	// IPv4: 10.9.0.0/16 may send UDP 53.
	add(
		goldenCase{"v4 first fragment, allowed", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:53", 100, 0, true), true, 0},
		goldenCase{"v4 its later fragment", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:53", 100, 9, true), true, 0},
		goldenCase{"v4 its last fragment", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:53", 100, 18, false), true, 0},
		goldenCase{"v4 an allowed datagram's id, another protocol", Ingress,
			frag{proto: tcp, src: "10.9.0.1:5353", dst: "10.0.1.2:53", id: 100, offset: 9}.build(), false, datapath.DropFragment},
		goldenCase{"v4 first fragment, denied port", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:54", 101, 0, true), false, datapath.DropNoRule},
		goldenCase{"v4 the denied datagram's later fragment", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:54", 101, 9, false), false, datapath.DropFragment},
		goldenCase{"v4 a later fragment with no first", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:53", 102, 9, false), false, datapath.DropFragment},
		goldenCase{"v4 a later fragment with no first, its body like an allowed UDP header", Ingress,
			frag{proto: udp, src: "10.9.0.1:5353", dst: "10.0.1.2:53", id: 103, offset: 1, body: lookalike}.build(), false, datapath.DropFragment},
		goldenCase{"v4 an allowed datagram's id from another source", Ingress, udpFrag("10.9.0.2:5353", "10.0.1.2:53", 100, 9, false), false, datapath.DropFragment},
		// An id reused for a denied datagram must not inherit the ports
		// of the allowed one before it.
		goldenCase{"v4 id 100 reused, first fragment denied", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:54", 100, 0, true), false, datapath.DropNoRule},
		goldenCase{"v4 id 100 reused, later fragment", Ingress, udpFrag("10.9.0.1:5353", "10.0.1.2:54", 100, 9, false), false, datapath.DropFragment},
	)
	// The same datagrams in both families, TCP and SCTP in, TCP and UDP
	// out: peer may send TCP 80 and SCTP 9000, and the pod may send TCP
	// 443 to remote's prefix, but a Deny rule names denied and
	// deniedRemote.
	for _, fam := range []struct{ name, pod, peer, denied, remote, deniedRemote string }{
		{"v4", "10.0.1.2", "10.0.3.4", "10.0.7.7", "10.1.2.3", "10.1.9.9"},
		{"v6", "fd00:1::2", "fd00:a::3:4", "fd00:a::7:7", "fd00:b::3", "fd00:b::9"},
	} {
		dg := func(name string, dir Direction, proto layers.IPProtocol, src string, sport uint16, dst string, dport uint16, id uint32, reason datapath.DropReason) {
			f := frag{proto: proto, src: hostPort(src, sport), dst: hostPort(dst, dport), id: id}
			add(datagram(fam.name+" "+name, dir, f, reason)...)
		}
		dg("TCP allowed", Ingress, tcp, fam.peer, 40000, fam.pod, 80, 200, 0)
		dg("TCP other port", Ingress, tcp, fam.peer, 40000, fam.pod, 81, 201, datapath.DropNoRule)
		dg("TCP from a Deny rule's prefix inside an allowed one", Ingress, tcp, fam.denied, 40000, fam.pod, 80, 202, datapath.DropDenyRule)
		dg("SCTP allowed", Ingress, sctp, fam.peer, 5000, fam.pod, 9000, 203, 0)
		dg("SCTP other port", Ingress, sctp, fam.peer, 5000, fam.pod, 9001, 204, datapath.DropNoRule)
		dg("SCTP from a Deny rule's prefix", Ingress, sctp, fam.denied, 5000, fam.pod, 9000, 205, datapath.DropDenyRule)
		dg("egress TCP allowed", Egress, tcp, fam.pod, 40000, fam.remote, 443, 300, 0)
		dg("egress TCP to a Deny rule's host in the allowed prefix", Egress, tcp, fam.pod, 40000, fam.deniedRemote, 443, 301, datapath.DropDenyRule)
		dg("egress TCP other port", Egress, tcp, fam.pod, 40000, fam.remote, 80, 302, datapath.DropNoRule)
		dg("egress UDP", Egress, udp, fam.pod, 5353, fam.remote, 53, 303, datapath.DropNoRule)
	}

	// IP options move the transport header of the first fragment.
	add(datagram("v4 UDP with IP options, allowed", Ingress, frag{proto: udp, src: "10.9.0.1:5353", dst: "10.0.1.2:53", id: 206, opts: ipOptions}, 0)...)
	add(datagram("v4 UDP with IP options, other port", Ingress, frag{proto: udp, src: "10.9.0.1:5353", dst: "10.0.1.2:54", id: 207, opts: ipOptions}, datapath.DropNoRule)...)
	add(datagram("v4 TCP with IP options from a Deny rule's prefix", Ingress, frag{proto: tcp, src: "10.0.7.7:40000", dst: "10.0.1.2:80", id: 208, opts: ipOptions}, datapath.DropDenyRule)...)

	// IPv6: fd00:9::/64 may send UDP 53.
	add(
		goldenCase{"v6 first fragment, allowed", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:53", 7, 0, true), true, 0},
		goldenCase{"v6 its later fragment", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:53", 7, 9, false), true, 0},
		goldenCase{"v6 first fragment, denied port", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:54", 8, 0, true), false, datapath.DropNoRule},
		goldenCase{"v6 the denied datagram's later fragment", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:54", 8, 9, false), false, datapath.DropFragment},
		goldenCase{"v6 a later fragment with no first", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:53", 9, 9, false), false, datapath.DropFragment},
		goldenCase{"v6 a later fragment with no first, its body like an allowed UDP header", Ingress,
			frag{proto: udp, src: "[fd00:9::1]:5353", dst: "[fd00:1::2]:53", id: 13, offset: 1, body: lookalike}.build(), false, datapath.DropFragment},
	)
	// An extension header after the fragment header: later fragments'
	// fragment header names it, not UDP.
	firstFrag := packets.Must(packets.IPv6{Src: netip.MustParseAddrPort("[fd00:9::1]:5353"), Dst: netip.MustParseAddrPort("[fd00:1::2]:53"),
		Proto: layers.IPProtocolUDP, Payload: make([]byte, 64), Ext: []packets.IPv6Ext{packets.Fragment(0, true, 12), packets.DestOpts}}.Build())
	laterFrag := packets.Must(packets.IPv6{Src: netip.MustParseAddrPort("[fd00:9::1]:5353"), Dst: netip.MustParseAddrPort("[fd00:1::2]:53"),
		Proto: layers.IPProtocolIPv6Destination, NoL4Header: true, Payload: make([]byte, 64), Ext: []packets.IPv6Ext{packets.Fragment(9, false, 12)}}.Build())
	add(
		goldenCase{"v6 first fragment, destination options after the fragment header", Ingress, firstFrag, true, 0},
		goldenCase{"v6 its later fragment, whose fragment header names destination options", Ingress, laterFrag, true, 0},
		goldenCase{"v6 atomic fragment, allowed", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:53", 10, 0, false), true, 0},
		goldenCase{"v6 atomic fragment, denied", Ingress, udpFrag("[fd00:9::1]:5353", "[fd00:1::2]:54", 11, 0, false), false, datapath.DropNoRule},
	)
	// Extension headers ahead of the fragment header, in every fragment.
	hbh, hbhDest := []packets.IPv6Ext{packets.HopByHop}, []packets.IPv6Ext{packets.HopByHop, packets.DestOpts}
	add(datagram("v6 UDP after a hop-by-hop header, allowed", Ingress, frag{proto: udp, src: "[fd00:9::1]:5353", dst: "[fd00:1::2]:53", id: 206, ext: hbh}, 0)...)
	add(datagram("v6 UDP after a hop-by-hop header, other port", Ingress, frag{proto: udp, src: "[fd00:9::1]:5353", dst: "[fd00:1::2]:54", id: 207, ext: hbh}, datapath.DropNoRule)...)
	add(datagram("v6 TCP after hop-by-hop and destination options from a Deny rule's prefix", Ingress,
		frag{proto: tcp, src: "[fd00:a::7:7]:40000", dst: "[fd00:1::2]:80", id: 208, ext: hbhDest}, datapath.DropDenyRule)...)

	for _, c := range cases {
		r.expectCase(c)
	}
}

// frag is one fragment of a TCP, UDP or SCTP datagram from src to dst, in
// the family of their addresses. The first (offset 0) carries the
// transport header and body up to 72 bytes, so that the next starts at
// offset 9; a later one carries body alone.
type frag struct {
	proto    layers.IPProtocol
	src, dst string
	id       uint32
	offset   uint16 // in 8-byte units
	more     bool
	opts     []layers.IPv4Option // IPv4 options, in every fragment
	ext      []packets.IPv6Ext   // IPv6 extension headers ahead of the fragment header
	body     []byte              // a later fragment's; default 64 zero bytes
}

func (f frag) build() []byte {
	s, d := netip.MustParseAddrPort(f.src), netip.MustParseAddrPort(f.dst)
	body, raw := f.body, f.offset != 0
	if body == nil {
		body = make([]byte, 64)
	}
	if !raw {
		switch f.proto {
		case layers.IPProtocolSCTP:
			body, raw = append(packets.SCTPHeader(s.Port(), d.Port()), make([]byte, 72-16)...), true
		case layers.IPProtocolTCP:
			body = make([]byte, 72-packets.TCPLen)
		default:
			body = make([]byte, 72-packets.UDPLen)
		}
	}
	syn := packets.TCPFlags{SYN: true}
	if s.Addr().Is4() {
		p := packets.IPv4{Src: s, Dst: d, Proto: f.proto, ID: uint16(f.id), FragOffset: f.offset, Options: f.opts,
			TCPFlags: syn, NoL4Header: raw, Payload: body}
		if f.more {
			p.Flags = layers.IPv4MoreFragments
		}
		return packets.Must(p.Build())
	}
	return packets.Must(packets.IPv6{Src: s, Dst: d, Proto: f.proto, TCPFlags: syn, NoL4Header: raw, Payload: body,
		Ext: append(slices.Clone(f.ext), packets.Fragment(f.offset, f.more, f.id))}.Build())
}

// datagram is the first and the last fragment of f's datagram, the first
// judged by the rules (reason 0: allowed): the last shares its fate, and
// is dropped as a fragment whose first did not pass.
func datagram(name string, dir Direction, f frag, reason datapath.DropReason) []goldenCase {
	first, last := f, f
	first.more, last.offset = true, 9
	lastReason := datapath.DropReason(0)
	if reason != 0 {
		lastReason = datapath.DropFragment
	}
	return []goldenCase{
		{name + ", first fragment", dir, first.build(), reason == 0, reason},
		{name + ", its last fragment", dir, last.build(), reason == 0, lastReason},
	}
}

// A policy change judges new flows by the new rules, keeps the flows the
// old rules let through, and a failed change leaves the old rules whole.
func TestGoldenPolicyChange(t *testing.T) {
	r := newRig(t, datapath.Limits{MaxPolicyPrefixes: 64})
	r.setPolicy(goldenPolicy())
	r.expect("old rules allow", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"), true)

	p := goldenPolicy()
	p.Ingress.Rules[0].Ports = []PortRange{{Protocol: TCP, Port: 81}}
	r.setPolicy(p)
	r.expect("established flow stays", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"), true)
	r.expect("new flow to the old port", Ingress, packets.TCP4("10.0.3.4:40001", "10.0.1.2:80"), false)
	r.expect("new flow to the new port", Ingress, packets.TCP4("10.0.3.4:40001", "10.0.1.2:81"), true)

	// Too many prefixes for the maps: refused, nothing changed.
	before := dumpPolicyMaps(t, r)
	big := goldenPolicy()
	for i := range 100 {
		big.Ingress.Rules = append(big.Ingress.Rules, Rule{Peers: []Peer{{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24)}}})
	}
	err := r.m.SetPolicy("pol0", big)
	var ve *datapath.ValidationError
	if !errors.Is(err, ErrCapacity) || !errors.As(err, &ve) || ve.Endpoint != "pol0" {
		t.Fatalf("SetPolicy over capacity: %v, want a *datapath.ValidationError wrapping ErrCapacity", err)
	}
	if after := dumpPolicyMaps(t, r); after != before {
		t.Errorf("a refused change altered the maps:\nbefore %s\nafter  %s", before, after)
	}
	r.expect("old rules still allow", Ingress, packets.TCP4("10.0.3.4:40002", "10.0.1.2:81"), true)
	r.expect("old rules still deny", Ingress, packets.TCP4("10.0.3.4:40002", "10.0.1.2:80"), false)

	// Invalid input: refused by name, nothing changed.
	bad := goldenPolicy()
	bad.Egress.Rules[0].Ports[0].EndPort = 1
	err = r.m.SetPolicy("pol0", bad)
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != "egress.rules[0].ports[0].endPort" {
		t.Fatalf("SetPolicy with endPort below port: %v", err)
	}
	if after := dumpPolicyMaps(t, r); after != before {
		t.Errorf("an invalid change altered the maps")
	}
}

// IPv4 lives in the maps as ::ffff:0:0/96, inside IPv6 prefixes such as
// ::/0; an IPv6 rule must still never match an IPv4 peer, nor an IPv4
// rule an IPv6 one.
func TestGoldenFamiliesApart(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	for i, c := range []struct {
		peer   string
		v4, v6 bool // whether an IPv4 and an IPv6 peer pass
	}{
		{"::/0", false, true},
		{"::/64", false, false},
		{"::/80", false, false},
		{"0.0.0.0/0", true, false},
		{"10.0.0.0/8", true, false},
	} {
		r.setPolicy(Policy{Ingress: Rules{Isolated: true, Rules: []Rule{{Peers: []Peer{{Prefix: pfx(c.peer)}}, Ports: []PortRange{{Protocol: TCP, Port: 80}}}}}})
		// A source port per case: every flow is new.
		sport := 41000 + i
		r.expect(c.peer+": IPv4 peer", Ingress, packets.TCP4(fmt.Sprintf("10.0.3.4:%d", sport), "10.0.1.2:80"), c.v4)
		r.expect(c.peer+": IPv6 peer", Ingress, packets.TCP6(fmt.Sprintf("[fd00:a::3:4]:%d", sport), "[fd00:1::2]:80"), c.v6)
		r.expect(c.peer+": IPv6 peer in ::/80", Ingress, packets.TCP6(fmt.Sprintf("[::1:2:3]:%d", sport), "[fd00:1::2]:80"), c.peer == "::/0" || c.peer == "::/64" || c.peer == "::/80")
	}
}
