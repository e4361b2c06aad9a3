package policy

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// flow is one probe of Decide: a remote address, a protocol and a port.
type flow struct {
	peer  string
	proto Protocol
	port  uint16
}

func (f flow) String() string { return fmt.Sprintf("%s %v/%d", f.peer, f.proto, f.port) }

func TestDecide(t *testing.T) {
	tcp := func(port, end uint16) PortRange { return PortRange{Protocol: TCP, Port: port, EndPort: end} }
	isolated := func(rules ...Rule) Rules { return Rules{Isolated: true, Rules: rules} }
	open := func(rules ...Rule) Rules { return Rules{Rules: rules} }
	tests := []struct {
		name  string
		rules Rules
		want  map[flow]Decision
	}{
		{"not isolated, no rules: everything passes", open(), map[flow]Decision{
			{"10.0.0.1", TCP, 80}: Allowed, {"fd00::1", UDP, 53}: Allowed, {"10.0.0.1", 47, 0}: Allowed,
		}},
		{"isolated, no rules: nothing passes", isolated(), map[flow]Decision{
			{"10.0.0.1", TCP, 80}: DeniedByDefault, {"fd00::1", ICMP, 8}: DeniedByDefault, {"10.0.0.1", 47, 0}: DeniedByDefault,
		}},
		{"allow rules add up", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/24")}, Ports: []PortRange{tcp(80, 0)}},
			Rule{Peers: []Peer{peer("10.0.1.0/24")}, Ports: []PortRange{tcp(443, 0)}},
			Rule{Peers: []Peer{peer("10.0.0.0/24")}, Ports: []PortRange{tcp(443, 0)}},
		), map[flow]Decision{
			{"10.0.0.7", TCP, 80}: Allowed, {"10.0.0.7", TCP, 443}: Allowed, {"10.0.1.7", TCP, 443}: Allowed,
			{"10.0.1.7", TCP, 80}: DeniedByDefault, {"10.0.2.7", TCP, 443}: DeniedByDefault, {"10.0.0.7", UDP, 80}: DeniedByDefault,
		}},
		{"except leaves addresses out", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/8", "10.1.0.0/16", "10.2.3.4/32")}},
		), map[flow]Decision{
			{"10.0.0.1", TCP, 80}: Allowed, {"10.0.255.255", TCP, 80}: Allowed, {"10.1.0.0", TCP, 80}: DeniedByDefault,
			{"10.1.255.255", TCP, 80}: DeniedByDefault, {"10.2.0.0", TCP, 80}: Allowed, {"10.2.3.3", TCP, 80}: Allowed,
			{"10.2.3.4", TCP, 80}: DeniedByDefault, {"10.2.3.5", TCP, 80}: Allowed, {"11.0.0.0", TCP, 80}: DeniedByDefault,
		}},
		{"another peer covers an except", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/8", "10.1.0.0/16"), peer("10.1.2.0/24")}},
		), map[flow]Decision{
			{"10.1.2.3", TCP, 1}: Allowed, {"10.1.3.3", TCP, 1}: DeniedByDefault,
		}},
		{"another rule covers an except", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/8", "10.1.0.0/16")}},
			Rule{Peers: []Peer{peer("10.1.0.0/24")}, Ports: []PortRange{{Protocol: UDP}}},
		), map[flow]Decision{
			{"10.1.0.3", UDP, 53}: Allowed, {"10.1.0.3", TCP, 53}: DeniedByDefault, {"10.1.1.3", UDP, 53}: DeniedByDefault,
		}},
		{"deny beats allow", isolated(
			Rule{Action: Allow, Peers: []Peer{peer("10.0.0.0/8")}},
			Rule{Action: Deny, Peers: []Peer{peer("10.0.0.5/32")}, Ports: []PortRange{tcp(22, 0)}},
			Rule{Action: Allow, Peers: []Peer{peer("10.0.0.5/32")}, Ports: []PortRange{tcp(22, 0)}},
		), map[flow]Decision{
			{"10.0.0.5", TCP, 22}: DeniedByRule, {"10.0.0.5", TCP, 23}: Allowed, {"10.0.0.6", TCP, 22}: Allowed,
			{"10.0.0.5", UDP, 22}: Allowed,
		}},
		{"deny on a wider range than the allow", isolated(
			Rule{Action: Allow, Peers: []Peer{peer("10.0.0.5/32")}, Ports: []PortRange{tcp(80, 0)}},
			Rule{Action: Deny, Peers: []Peer{peer("10.0.0.0/8")}},
		), map[flow]Decision{
			{"10.0.0.5", TCP, 80}: DeniedByRule, {"11.0.0.5", TCP, 80}: DeniedByDefault,
		}},
		{"empty peers: every address of both families", isolated(
			Rule{Ports: []PortRange{tcp(80, 0)}},
		), map[flow]Decision{
			{"0.0.0.0", TCP, 80}: Allowed, {"255.255.255.255", TCP, 80}: Allowed, {"::", TCP, 80}: Allowed,
			{"2001:db8::1", TCP, 80}: Allowed, {"2001:db8::1", TCP, 81}: DeniedByDefault,
		}},
		{"empty ports: every protocol and port", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/8")}},
		), map[flow]Decision{
			{"10.0.0.1", TCP, 0}: Allowed, {"10.0.0.1", UDP, 65535}: Allowed, {"10.0.0.1", ICMP, 0}: Allowed,
			{"10.0.0.1", 47, 0}: Allowed, {"10.0.0.1", 0, 0}: Allowed, {"11.0.0.1", 47, 0}: DeniedByDefault,
		}},
		{"a range includes port and endPort", isolated(
			Rule{Ports: []PortRange{tcp(8000, 8080)}},
		), map[flow]Decision{
			{"10.0.0.1", TCP, 7999}: DeniedByDefault, {"10.0.0.1", TCP, 8000}: Allowed, {"10.0.0.1", TCP, 8040}: Allowed,
			{"10.0.0.1", TCP, 8080}: Allowed, {"10.0.0.1", TCP, 8081}: DeniedByDefault, {"10.0.0.1", UDP, 8000}: DeniedByDefault,
		}},
		{"a single port", isolated(
			Rule{Ports: []PortRange{tcp(443, 0), tcp(65535, 65535)}},
		), map[flow]Decision{
			{"10.0.0.1", TCP, 442}: DeniedByDefault, {"10.0.0.1", TCP, 443}: Allowed, {"10.0.0.1", TCP, 444}: DeniedByDefault,
			{"10.0.0.1", TCP, 65534}: DeniedByDefault, {"10.0.0.1", TCP, 65535}: Allowed,
		}},
		{"port 0: every port of the protocol", isolated(
			Rule{Ports: []PortRange{{Protocol: UDP}}},
		), map[flow]Decision{
			{"10.0.0.1", UDP, 0}: Allowed, {"10.0.0.1", UDP, 1}: Allowed, {"10.0.0.1", UDP, 65535}: Allowed,
			{"10.0.0.1", TCP, 53}: DeniedByDefault, {"10.0.0.1", SCTP, 53}: DeniedByDefault,
		}},
		{"ICMP types", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/8"), peer("fd00::/8")}, Ports: []PortRange{{Protocol: ICMP, Port: 8}}},
			Rule{Peers: []Peer{peer("fd00::/8")}, Ports: []PortRange{{Protocol: ICMP, Port: 133, EndPort: 136}}},
		), map[flow]Decision{
			{"10.0.0.1", ICMP, 8}: Allowed, {"10.0.0.1", ICMP, 0}: DeniedByDefault, {"10.0.0.1", ICMP, 9}: DeniedByDefault,
			{"10.0.0.1", TCP, 8}: DeniedByDefault, {"fd00::1", ICMP, 8}: Allowed, {"fd00::1", ICMP, 132}: DeniedByDefault,
			{"fd00::1", ICMP, 133}: Allowed, {"fd00::1", ICMP, 136}: Allowed, {"fd00::1", ICMP, 137}: DeniedByDefault,
			// ICMPv6's own protocol number means ICMP for an IPv6 peer
			// only.
			{"fd00::1", 58, 135}: Allowed, {"10.0.0.1", 58, 8}: DeniedByDefault,
		}},
		{"every ICMP type", isolated(
			Rule{Ports: []PortRange{{Protocol: ICMP}}},
		), map[flow]Decision{
			{"10.0.0.1", ICMP, 0}: Allowed, {"10.0.0.1", ICMP, 255}: Allowed, {"fd00::1", 58, 128}: Allowed,
			{"10.0.0.1", UDP, 0}: DeniedByDefault,
		}},
		{"other protocols only match rules without ports", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/24")}, Ports: []PortRange{{Protocol: TCP}, {Protocol: UDP}, {Protocol: SCTP}, {Protocol: ICMP}}},
			Rule{Peers: []Peer{peer("10.0.1.0/24")}},
		), map[flow]Decision{
			{"10.0.0.1", 47, 0}: DeniedByDefault, {"10.0.1.1", 47, 0}: Allowed, {"10.0.0.1", 50, 0}: DeniedByDefault,
			{"10.0.0.1", SCTP, 9}: Allowed,
		}},
		{"not isolated, deny only", open(
			Rule{Action: Deny, Peers: []Peer{peer("169.254.169.254/32")}},
			Rule{Action: Deny, Peers: []Peer{peer("10.0.0.0/8", "10.0.0.0/16")}, Ports: []PortRange{tcp(22, 0)}},
		), map[flow]Decision{
			{"169.254.169.254", TCP, 80}: DeniedByRule, {"169.254.169.253", TCP, 80}: Allowed,
			{"10.1.0.1", TCP, 22}: DeniedByRule, {"10.1.0.1", TCP, 23}: Allowed, {"10.0.0.1", TCP, 22}: Allowed,
			{"fd00::1", TCP, 22}: Allowed,
		}},
		{"families do not mix", isolated(
			Rule{Peers: []Peer{peer("0.0.0.0/0")}, Ports: []PortRange{tcp(4, 0)}},
			Rule{Peers: []Peer{peer("::/0")}, Ports: []PortRange{tcp(6, 0)}},
		), map[flow]Decision{
			{"10.0.0.1", TCP, 4}: Allowed, {"10.0.0.1", TCP, 6}: DeniedByDefault,
			{"fd00::1", TCP, 6}: Allowed, {"fd00::1", TCP, 4}: DeniedByDefault,
			// An IPv4-mapped address is the IPv4 one.
			{"::ffff:10.0.0.1", TCP, 4}: Allowed, {"::ffff:10.0.0.1", TCP, 6}: DeniedByDefault,
		}},
		{"both families in one rule", isolated(
			Rule{Peers: []Peer{peer("10.0.0.0/8", "10.9.0.0/16"), peer("fd00::/16", "fd00:9::/32")}},
		), map[flow]Decision{
			{"10.0.0.1", UDP, 1}: Allowed, {"10.9.0.1", UDP, 1}: DeniedByDefault,
			{"fd00::1", UDP, 1}: Allowed, {"fd00:9::1", UDP, 1}: DeniedByDefault, {"fd01::1", UDP, 1}: DeniedByDefault,
		}},
		{"an IPv6 prefix around the v4-mapped space takes no IPv4", isolated(
			Rule{Peers: []Peer{peer("::/0")}},
			Rule{Peers: []Peer{peer("::/80"), peer("10.0.0.0/8")}, Ports: []PortRange{tcp(80, 0)}},
		), map[flow]Decision{
			{"fd00::1", TCP, 1}: Allowed, {"::1", TCP, 1}: Allowed, {"::fffe:ffff:ffff", TCP, 1}: Allowed,
			{"11.0.0.1", TCP, 1}: DeniedByDefault, {"::ffff:11.0.0.1", TCP, 1}: DeniedByDefault,
			{"10.0.0.1", TCP, 80}: Allowed, {"10.0.0.1", TCP, 81}: DeniedByDefault,
		}},
		{"unmasked prefixes mean their network", isolated(
			Rule{Peers: []Peer{peer("10.1.2.3/16", "10.1.9.9/24")}},
		), map[flow]Decision{
			{"10.1.0.1", UDP, 1}: Allowed, {"10.1.9.1", UDP, 1}: DeniedByDefault, {"10.2.0.1", UDP, 1}: DeniedByDefault,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := (Policy{Ingress: tt.rules}).Validate(); err != nil {
				t.Fatalf("the test's policy is invalid: %v", err)
			}
			compiled := compileRules(Policy{Ingress: tt.rules}.Normalize().Ingress)
			for f, want := range tt.want {
				// The rules in one direction do nothing to the other.
				for _, c := range []struct {
					dir  Direction
					p    Policy
					want Decision
				}{
					{Ingress, Policy{Ingress: tt.rules}, want},
					{Egress, Policy{Egress: tt.rules}, want},
					{Egress, Policy{Ingress: tt.rules}, Allowed},
					{Ingress, Policy{Egress: tt.rules}, Allowed},
				} {
					if got := c.p.Decide(c.dir, addr(f.peer), f.proto, f.port); got != c.want {
						t.Errorf("%v %v: Decide = %v, want %v", c.dir, f, got, c.want)
					}
				}
				if got := compiled.lookup(addr(f.peer), uint8(f.proto), f.port); got != want {
					t.Errorf("%v: compiled lookup = %v, want %v", f, got, want)
				}
			}
		})
	}

	deny := Policy{Ingress: Rules{Isolated: true, Rules: []Rule{{Action: Deny}}}}
	if got := deny.Decide(Ingress, netip.Addr{}, TCP, 80); got != DeniedByDefault {
		t.Errorf("an invalid peer: Decide = %v, want denied by default (no rule matches)", got)
	}
	if got := deny.Decide(Ingress, addr("fe80::1%eth0"), TCP, 80); got != DeniedByRule {
		t.Errorf("a peer with a zone: Decide = %v, want denied by rule", got)
	}
	if got := (Policy{}).Decide(Direction(2), addr("10.0.0.1"), TCP, 80); got != DeniedByDefault {
		t.Errorf("an unknown direction: Decide = %v, want denied by default", got)
	}
}

func TestSplitPortRange(t *testing.T) {
	type block struct {
		port uint16
		bits uint8
	}
	tests := []struct {
		lo, hi uint16
		want   []block
	}{
		{0, 65535, []block{{0, 0}}},
		{80, 80, []block{{80, 16}}},
		{0, 0, []block{{0, 16}}},
		{65535, 65535, []block{{65535, 16}}},
		{1, 65535, []block{{1, 16}, {2, 15}, {4, 14}, {8, 13}, {16, 12}, {32, 11}, {64, 10}, {128, 9}, {256, 8},
			{512, 7}, {1024, 6}, {2048, 5}, {4096, 4}, {8192, 3}, {16384, 2}, {32768, 1}}},
		{0, 65534, []block{{0, 1}, {32768, 2}, {49152, 3}, {57344, 4}, {61440, 5}, {63488, 6}, {64512, 7}, {65024, 8},
			{65280, 9}, {65408, 10}, {65472, 11}, {65504, 12}, {65520, 13}, {65528, 14}, {65532, 15}, {65534, 16}}},
		{8000, 8080, []block{{8000, 10}, {8064, 12}, {8080, 16}}},
		{1024, 2047, []block{{1024, 6}}},
		{32768, 65535, []block{{32768, 1}}},
		{3, 4, []block{{3, 16}, {4, 16}}},
	}
	for _, tt := range tests {
		var got []block
		splitPortRange(tt.lo, tt.hi, func(port uint16, bits uint8) { got = append(got, block{port, bits}) })
		if !slices.Equal(got, tt.want) {
			t.Errorf("splitPortRange(%d, %d) = %v, want %v", tt.lo, tt.hi, got, tt.want)
		}
	}

	// Against a brute force count on random ranges: the blocks are
	// aligned, in order, cover the range exactly, and no two neighbours
	// could merge into one block.
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		lo, hi := uint16(r.UintN(1<<16)), uint16(r.UintN(1<<16))
		if r.IntN(2) == 0 {
			hi = lo + uint16(r.IntN(300))
		}
		if hi < lo {
			lo, hi = hi, lo
		}
		next := uint32(lo)
		var prev block
		havePrev := false
		splitPortRange(lo, hi, func(port uint16, bits uint8) {
			size := uint32(1) << (16 - bits)
			if uint32(port) != next || uint32(port)%size != 0 || bits > 16 {
				t.Fatalf("splitPortRange(%d, %d): block %d/%d out of place (want start %d)", lo, hi, port, bits, next)
			}
			if havePrev && prev.bits == bits && uint32(prev.port)%(2*size) == 0 {
				t.Fatalf("splitPortRange(%d, %d): blocks %v and %d/%d could be one", lo, hi, prev, port, bits)
			}
			prev, havePrev = block{port, bits}, true
			next += size
		})
		if next != uint32(hi)+1 {
			t.Fatalf("splitPortRange(%d, %d) covers up to %d", lo, hi, next-1)
		}
	}
}

func TestCompileExamples(t *testing.T) {
	tests := []struct {
		name  string
		rules Rules
		want  compiledRules
	}{
		{"nothing", Rules{}, compiledRules{}},
		{"isolated, no rules", Rules{Isolated: true}, compiledRules{Isolated: true}},
		{"one port from one prefix", Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{peer("10.0.0.0/8")}, Ports: []PortRange{{Protocol: TCP, Port: 80}}},
		}}, compiledRules{
			Isolated: true,
			Peers:    []peerEntry{{pfx("10.0.0.0/8"), 0}},
			Rulesets: []ruleset{{{Proto: 6, Port: 80, Bits: 16, Verdict: verdictAllow}}},
		}},
		{"an except shadows its prefix with an empty ruleset", Rules{Rules: []Rule{
			{Action: Deny, Peers: []Peer{peer("10.0.0.0/8", "10.1.0.0/16")}},
		}}, compiledRules{
			HasDeny:  true,
			Peers:    []peerEntry{{pfx("10.0.0.0/8"), 0}, {pfx("10.1.0.0/16"), 1}},
			Rulesets: []ruleset{{{AnyProto: true, Verdict: verdictDeny}}, nil},
		}},
		{"empty peers: ::/0 serves IPv4 too", Rules{Isolated: true, Rules: []Rule{
			{Ports: []PortRange{{Protocol: UDP, Port: 53}}},
		}}, compiledRules{
			Isolated: true,
			Peers:    []peerEntry{{pfx("::/0"), 0}},
			Rulesets: []ruleset{{{Proto: 17, Port: 53, Bits: 16, Verdict: verdictAllow}}},
		}},
		{"a prefix that changes nothing is left out", Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{peer("10.0.0.0/8")}, Ports: []PortRange{{Protocol: TCP, Port: 80}}},
			{Peers: []Peer{peer("10.1.0.0/16")}, Ports: []PortRange{{Protocol: TCP, Port: 80}}},
			{Peers: []Peer{peer("10.2.0.0/16")}, Ports: []PortRange{{Protocol: TCP, Port: 81}}},
		}}, compiledRules{
			Isolated: true,
			Peers:    []peerEntry{{pfx("10.0.0.0/8"), 0}, {pfx("10.2.0.0/16"), 1}},
			Rulesets: []ruleset{
				{{Proto: 6, Port: 80, Bits: 16, Verdict: verdictAllow}},
				{{Proto: 6, Port: 80, Bits: 15, Verdict: verdictAllow}},
			},
		}},
		{"::/0 needs an empty 0.0.0.0/0 beside it", Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{peer("::/0")}},
		}}, compiledRules{
			Isolated: true,
			Peers:    []peerEntry{{pfx("0.0.0.0/0"), 1}, {pfx("::/0"), 0}},
			Rulesets: []ruleset{{{AnyProto: true, Verdict: verdictAllow}}, nil},
		}},
		{"::/0 with ::/8 left out needs no 0.0.0.0/0", Rules{Rules: []Rule{
			{Action: Deny, Peers: []Peer{peer("::/0", "::/8")}},
		}}, compiledRules{
			HasDeny:  true,
			Peers:    []peerEntry{{pfx("::/0"), 0}, {pfx("::/8"), 1}},
			Rulesets: []ruleset{{{AnyProto: true, Verdict: verdictDeny}}, nil},
		}},
		{"protocol, port and any-protocol levels", Rules{Isolated: true, Rules: []Rule{
			{Action: Allow, Peers: []Peer{peer("fd00::/8")}, Ports: []PortRange{{Protocol: UDP}}},
			{Action: Allow, Peers: []Peer{peer("fd00::/8")}, Ports: []PortRange{{Protocol: TCP, Port: 8000, EndPort: 8080}}},
			{Action: Deny, Peers: []Peer{peer("fd00::/8")}, Ports: []PortRange{{Protocol: TCP, Port: 8080}, {Protocol: UDP, Port: 53}}},
			{Action: Deny, Peers: []Peer{peer("fd00::/8", "fd00::/16")}},
		}}, compiledRules{
			Isolated: true,
			HasDeny:  true,
			Peers:    []peerEntry{{pfx("fd00::/8"), 0}, {pfx("fd00::/16"), 1}},
			Rulesets: []ruleset{
				{{AnyProto: true, Verdict: verdictDeny}},
				{
					{Proto: 6, Port: 8000, Bits: 10, Verdict: verdictAllow},
					{Proto: 6, Port: 8064, Bits: 12, Verdict: verdictAllow},
					{Proto: 6, Port: 8080, Bits: 16, Verdict: verdictDeny},
					{Proto: 17, Verdict: verdictAllow},
					{Proto: 17, Port: 53, Bits: 16, Verdict: verdictDeny},
				},
			},
		}},
		{"a protocol-wide allow under an any-protocol allow adds nothing", Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{peer("10.0.0.0/8")}},
			{Peers: []Peer{peer("10.0.0.0/8")}, Ports: []PortRange{{Protocol: TCP}, {Protocol: TCP, Port: 22}}},
			{Action: Deny, Peers: []Peer{peer("10.0.0.0/8")}, Ports: []PortRange{{Protocol: ICMP, Port: 5}}},
		}}, compiledRules{
			Isolated: true,
			HasDeny:  true,
			Peers:    []peerEntry{{pfx("10.0.0.0/8"), 0}},
			Rulesets: []ruleset{{
				{AnyProto: true, Verdict: verdictAllow},
				{Proto: 1, Port: 5, Bits: 16, Verdict: verdictDeny},
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := (Policy{Egress: tt.rules}).Validate(); err != nil {
				t.Fatalf("the test's rules are invalid: %v", err)
			}
			got := compileRules(tt.rules)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("compileRules() =\n%+v\nwant\n%+v", got, tt.want)
			}
			checkCompiled(t, got)
		})
	}
}

// TestCompileSharesRulesets compiles many peers with one port spec into
// one ruleset, and one prefix per peer.
func TestCompileSharesRulesets(t *testing.T) {
	const n = 100_000
	r := rand.New(rand.NewPCG(7, 7))
	rules := Rules{Isolated: true}
	for range n {
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		rules.Rules = append(rules.Rules, Rule{
			Peers: []Peer{{Prefix: netip.PrefixFrom(a, 32)}},
			Ports: []PortRange{{Protocol: TCP, Port: 443}, {Protocol: UDP, Port: 53}},
		})
	}
	c := compileRules(rules)
	if len(c.Rulesets) != 1 {
		t.Fatalf("%d rulesets, want 1", len(c.Rulesets))
	}
	distinct := map[netip.Prefix]bool{}
	for _, rule := range rules.Rules {
		distinct[rule.Peers[0].Prefix] = true
	}
	if len(c.Peers) != len(distinct) {
		t.Fatalf("%d peer entries, want %d", len(c.Peers), len(distinct))
	}
	checkCompiled(t, c)
}

// checkCompiled checks the form of compiled rules: sorted, canonical, with
// no entry that changes nothing and no ruleset twice.
func checkCompiled(t testing.TB, c compiledRules) {
	t.Helper()
	used := make([]bool, len(c.Rulesets))
	for i, e := range c.Peers {
		if e.Prefix != e.Prefix.Masked() || !e.Prefix.IsValid() || e.Prefix.Addr().Is4In6() {
			t.Fatalf("peer entry %d: prefix %v not masked, or not in canonical form", i, e.Prefix)
		}
		if i > 0 && c.Peers[i-1].Prefix.Compare(e.Prefix) >= 0 {
			t.Fatalf("peer entries %d and %d (%v, %v) out of order", i-1, i, c.Peers[i-1].Prefix, e.Prefix)
		}
		if e.Ruleset < 0 || e.Ruleset >= len(c.Rulesets) {
			t.Fatalf("peer entry %v: ruleset %d of %d", e.Prefix, e.Ruleset, len(c.Rulesets))
		}
		used[e.Ruleset] = true
	}
	// Without an entry, a lookup would reach its longest container in
	// the table, where IPv4 sits v4-mapped among IPv6. Visit the entries
	// in that table's order (pre-order) with a stack of containers.
	order := make([]int, len(c.Peers))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return as16Prefix(c.Peers[a].Prefix).Compare(as16Prefix(c.Peers[b].Prefix)) })
	var stack []netip.Prefix
	var stackRS []int
	for _, i := range order {
		e, p := c.Peers[i], as16Prefix(c.Peers[i].Prefix)
		for len(stack) > 0 {
			if top := stack[len(stack)-1]; top.Bits() < p.Bits() && top.Contains(p.Addr()) {
				break
			}
			stack, stackRS = stack[:len(stack)-1], stackRS[:len(stackRS)-1]
		}
		switch {
		case len(stack) > 0 && stackRS[len(stackRS)-1] == e.Ruleset:
			t.Fatalf("peer entry %v repeats the ruleset of %v", e.Prefix, stack[len(stack)-1])
		case len(stack) == 0 && len(c.Rulesets[e.Ruleset]) == 0:
			t.Fatalf("peer entry %v has an empty ruleset and nothing to shadow", e.Prefix)
		}
		stack, stackRS = append(stack, p), append(stackRS, e.Ruleset)
	}
	for i, rs := range c.Rulesets {
		if !used[i] {
			t.Fatalf("ruleset %d is not used", i)
		}
		for j := range i {
			if slices.Equal(rs, c.Rulesets[j]) {
				t.Fatalf("rulesets %d and %d are the same: %v", j, i, rs)
			}
		}
		for k, e := range rs {
			switch {
			case e.Verdict != verdictAllow && e.Verdict != verdictDeny:
				t.Fatalf("ruleset %d entry %+v: verdict %v", i, e, e.Verdict)
			case e.AnyProto && (e.Proto != 0 || e.Port != 0 || e.Bits != 0):
				t.Fatalf("ruleset %d entry %+v: an any-protocol entry with a protocol or port", i, e)
			case e.Bits > 16 || (e.Bits < 16 && e.Port&(1<<(16-e.Bits)-1) != 0):
				t.Fatalf("ruleset %d entry %+v: port has bits set below its prefix", i, e)
			case k > 0 && comparePortEntries(rs[k-1], e) >= 0:
				t.Fatalf("ruleset %d entries %+v and %+v out of order", i, rs[k-1], e)
			}
			// Without the entry, its own key would find the same verdict.
			without := slices.Delete(slices.Clone(rs), k, k+1)
			if without.lookup(e.Proto, e.Port) == e.Verdict && !e.AnyProto {
				t.Fatalf("ruleset %d entry %+v changes nothing", i, e)
			}
		}
	}
}

// genPolicy makes a random valid policy over small address spaces
// (10.0.0.0/16 and fd00::/112) and a few low ports, so that prefixes,
// excepts and port ranges overlap often.
func genPolicy(r *rand.Rand) Policy {
	return Policy{Ingress: genRules(r), Egress: genRules(r)}
}

func genRules(r *rand.Rand) Rules {
	rules := Rules{Isolated: r.IntN(4) != 0}
	for range r.IntN(7) {
		rule := Rule{Action: Deny}
		if rules.Isolated && r.IntN(3) != 0 {
			rule.Action = Allow
		}
		if r.IntN(5) != 0 {
			for range 1 + r.IntN(3) {
				rule.Peers = append(rule.Peers, genPeer(r))
			}
		}
		if r.IntN(4) != 0 {
			for range 1 + r.IntN(3) {
				rule.Ports = append(rule.Ports, genPortRange(r))
			}
		}
		rules.Rules = append(rules.Rules, rule)
	}
	return rules
}

func genPeer(r *rand.Rand) Peer {
	var pe Peer
	// Mostly inside the small spaces; sometimes a whole family, or a
	// prefix that contains the small space.
	switch v6 := r.IntN(2) == 0; {
	case r.IntN(12) == 0:
		// IPv6 prefixes about the v4-mapped space, where the datapath
		// keeps IPv4: ::/0 to ::/80 and ::ff00:0:0/88 cover it, the
		// others are beside it.
		near := []string{"::/0", "::/64", "::/80", "::ffff:10.0.0.0/80", "::ff00:0:0/88", "::fffe:0:0/95",
			"::fffe:0:0/96", "::1:0:0:0/80", "::ff:0:0/104"}
		pe.Prefix = pfx(near[r.IntN(len(near))])
	case r.IntN(10) == 0 && !v6:
		pe.Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(256)), byte(r.IntN(256))}), r.IntN(17))
	case r.IntN(10) == 0:
		pe.Prefix = netip.PrefixFrom(smallAddr(r, true), r.IntN(113))
	default:
		a := smallAddr(r, v6)
		pe.Prefix = netip.PrefixFrom(a, a.BitLen()-r.IntN(17))
	}
	for range r.IntN(3) {
		outer := pe.Prefix.Masked()
		if outer.Bits() == outer.Addr().BitLen() {
			break
		}
		// Somewhere inside outer, strictly longer, often near the small
		// spaces' host bits; sometimes inside another except.
		if len(pe.Except) > 0 && r.IntN(3) == 0 {
			last := pe.Except[len(pe.Except)-1].Masked()
			if last.Bits() < last.Addr().BitLen() {
				outer = last
			}
		}
		bits := outer.Bits() + 1 + r.IntN(outer.Addr().BitLen()-outer.Bits())
		if lo := outer.Addr().BitLen() - 16; bits < lo && r.IntN(2) == 0 {
			bits = lo + r.IntN(17)
		}
		ex := netip.PrefixFrom(randomIn(r, outer), bits)
		if ex.Masked().Addr().Is4In6() {
			continue // IPv6 peers cannot hold IPv4 addresses, so nor leave them out
		}
		pe.Except = append(pe.Except, ex)
	}
	return pe
}

// smallAddr returns an address in 10.0.0.0/16 or fd00::/112.
func smallAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		b[0] = 0xfd
		b[14], b[15] = byte(r.IntN(256)), byte(r.IntN(256))
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(256)), byte(r.IntN(256))})
}

// randomIn returns a random address inside p.
func randomIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		keep := max(0, min(8, p.Bits()-8*i))
		host := byte(0xff >> keep)
		b[i] |= byte(r.IntN(256)) & host
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func genPortRange(r *rand.Rand) PortRange {
	protos := []Protocol{TCP, TCP, UDP, SCTP, ICMP}
	pr := PortRange{Protocol: protos[r.IntN(len(protos))]}
	switch r.IntN(6) {
	case 0: // every port
	case 1:
		pr.Port = uint16(1 + r.IntN(40))
	case 2:
		pr.Port = uint16(1 + r.IntN(40))
		pr.EndPort = pr.Port + uint16(r.IntN(40))
	case 3:
		pr.Port = uint16(1 + r.IntN(1000))
		pr.EndPort = pr.Port + uint16(r.IntN(3000))
	default:
		hi := 65535
		if pr.Protocol == ICMP {
			hi = 255
		}
		pr.Port = uint16(1 + r.IntN(hi))
		pr.EndPort = pr.Port + uint16(r.IntN(hi-int(pr.Port)+1))
	}
	if pr.Protocol == ICMP && pr.EndPort > 255 {
		pr.Port, pr.EndPort = uint16(1+r.IntN(255)), 0
	}
	return pr
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		keep := max(0, min(8, p.Bits()-8*i))
		b[i] |= byte(0xff >> keep)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// probeAddrs returns addresses where policy p may change its mind: the
// edges of every prefix it mentions, the addresses just outside them, and
// a few others.
func probeAddrs(r *rand.Rand, p Policy) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	edges := func(pr netip.Prefix) {
		first, last := pr.Masked().Addr(), lastAddr(pr)
		add(first)
		add(last)
		add(first.Prev())
		add(last.Next())
	}
	for _, rules := range []Rules{p.Ingress, p.Egress} {
		for _, rule := range rules.Rules {
			for _, pe := range rule.Peers {
				edges(pe.Prefix)
				add(randomIn(r, pe.Prefix))
				for _, ex := range pe.Except {
					edges(ex)
					add(randomIn(r, ex))
				}
			}
		}
	}
	for _, s := range []string{"0.0.0.0", "255.255.255.255", "9.255.255.255", "10.0.0.0", "10.0.255.255",
		"10.1.0.0", "192.0.2.1", "::", "fd00::", "fd00::ffff", "fd00::1:0", "2001:db8::1",
		"::ffff:10.0.0.1", "::ffff:10.0.128.0", "::fffe:ffff:ffff", "::1:0:0:0", "::ff00:0:0", "::ff:0:1"} {
		add(addr(s))
	}
	for range 8 {
		add(smallAddr(r, r.IntN(2) == 0))
	}
	return out
}

// probePorts returns protocols and ports where p may change its mind:
// every range's Port-1, Port, EndPort and EndPort+1, the ends of the port
// space, and protocols no range can name.
func probePorts(p Policy) []flow {
	var out []flow
	for _, proto := range []Protocol{TCP, UDP, SCTP, ICMP} {
		for _, port := range []uint16{0, 1, 65535, 255, 256} {
			out = append(out, flow{proto: proto, port: port})
		}
	}
	out = append(out, flow{proto: 47}, flow{proto: 58, port: 1}, flow{proto: 58, port: 8}, flow{proto: 0})
	for _, rules := range []Rules{p.Ingress, p.Egress} {
		for _, rule := range rules.Rules {
			for _, pr := range rule.Ports {
				lo, hi := pr.bounds()
				out = append(out, flow{proto: pr.Protocol, port: lo - 1}, flow{proto: pr.Protocol, port: lo},
					flow{proto: pr.Protocol, port: hi}, flow{proto: pr.Protocol, port: hi + 1})
				if pr.Protocol == ICMP {
					out = append(out, flow{proto: 58, port: lo}, flow{proto: 58, port: hi + 1})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b flow) int {
		if a.proto != b.proto {
			return int(a.proto) - int(b.proto)
		}
		return int(a.port) - int(b.port)
	})
	return slices.Compact(out)
}

// checkPolicy holds the compiled form of p to Decide on every probe.
func checkPolicy(t testing.TB, r *rand.Rand, p Policy) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("generated an invalid policy: %v\n%+v", err, p)
	}
	n := p.Normalize()
	if err := n.Validate(); err != nil {
		t.Fatalf("Normalize made a policy invalid: %v", err)
	}
	addrs, ports := probeAddrs(r, p), probePorts(p)
	for _, dir := range []Direction{Ingress, Egress} {
		rules := n.Ingress
		if dir == Egress {
			rules = n.Egress
		}
		c := compileRules(rules)
		checkCompiled(t, c)
		hasDeny := slices.ContainsFunc(rules.Rules, func(r Rule) bool { return r.Action == Deny })
		if c.HasDeny != hasDeny || c.Isolated != rules.Isolated {
			t.Fatalf("%v: HasDeny %v, Isolated %v; want %v, %v", dir, c.HasDeny, c.Isolated, hasDeny, rules.Isolated)
		}
		for _, a := range addrs {
			for _, f := range ports {
				want := p.Decide(dir, a, f.proto, f.port)
				if got := n.Decide(dir, a, f.proto, f.port); got != want {
					t.Fatalf("%v %v %v/%d: Decide after Normalize = %v, before %v\npolicy %+v", dir, a, f.proto, f.port, got, want, p)
				}
				if got := c.lookup(a, uint8(f.proto), f.port); got != want {
					t.Fatalf("%v %v %v/%d: compiled lookup = %v, Decide = %v\nrules %+v\ncompiled %+v",
						dir, a, f.proto, f.port, got, want, rules, c)
				}
			}
		}
		// The order of the rules changes nothing in the compiled form.
		shuffled := Rules{Isolated: rules.Isolated, Rules: slices.Clone(rules.Rules)}
		r.Shuffle(len(shuffled.Rules), func(i, j int) { shuffled.Rules[i], shuffled.Rules[j] = shuffled.Rules[j], shuffled.Rules[i] })
		if again := compileRules(shuffled); !reflect.DeepEqual(again, c) {
			t.Fatalf("%v: compiling the rules in another order gave\n%+v\nnot\n%+v", dir, again, c)
		}
	}
}

// propertySeeds are the seeds of TestCompileMatchesDecide, and of
// FuzzCompile's corpus.
func propertySeeds() []uint64 {
	n := 1000
	if testing.Short() {
		n = 150
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	return seeds
}

func TestCompileMatchesDecide(t *testing.T) {
	for _, seed := range propertySeeds() {
		r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		p := genPolicy(r)
		checkPolicy(t, r, p)
	}
}

// byteSource is a rand.Source that gives the fuzzer's bytes first, then
// a stream seeded from them, so that every input makes a policy and small
// changes to the bytes make small changes to it.
type byteSource struct {
	b    []byte
	rest *rand.PCG
}

func (s *byteSource) Uint64() uint64 {
	if len(s.b) >= 8 {
		v := binary.LittleEndian.Uint64(s.b)
		s.b = s.b[8:]
		return v
	}
	if s.rest == nil {
		var seed [8]byte
		copy(seed[:], s.b)
		s.rest = rand.NewPCG(binary.LittleEndian.Uint64(seed[:]), uint64(len(s.b)))
	}
	return s.rest.Uint64()
}

// FuzzCompile holds the compiled form of random policies to Decide. The
// corpus is the streams TestCompileMatchesDecide draws from.
func FuzzCompile(f *testing.F) {
	for _, seed := range propertySeeds()[:64] {
		src := rand.NewPCG(seed, 0x9e3779b97f4a7c15)
		var b []byte
		for range 64 {
			b = binary.LittleEndian.AppendUint64(b, src.Uint64())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := rand.New(&byteSource{b: b})
		checkPolicy(t, r, genPolicy(r))
	})
}

// BenchmarkCompile100k compiles 100,000 rules with one random /32 or /24
// peer each in 10.0.0.0/8, so that some fall inside others: with a few
// port specs shared by all rules, and with a port of its own per rule.
func BenchmarkCompile100k(b *testing.B) {
	specs := [][]PortRange{
		{{Protocol: TCP, Port: 80}},
		{{Protocol: TCP, Port: 443}, {Protocol: UDP, Port: 443}},
		{{Protocol: UDP, Port: 53}, {Protocol: TCP, Port: 53}},
		{{Protocol: TCP, Port: 8000, EndPort: 8999}},
		nil,
	}
	build := func(ports func(i int) []PortRange) Rules {
		r := rand.New(rand.NewPCG(100, 100_000))
		rules := Rules{Isolated: true, Rules: make([]Rule, 100_000)}
		for i := range rules.Rules {
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
			bits := 32
			if r.IntN(2) == 0 {
				bits = 24
			}
			rule := Rule{Peers: []Peer{{Prefix: netip.PrefixFrom(a, bits).Masked()}}, Ports: ports(i)}
			if i%10 == 0 {
				rule.Action = Deny
			}
			rules.Rules[i] = rule
		}
		return rules
	}
	for _, bc := range []struct {
		name  string
		ports func(i int) []PortRange
	}{
		{"shared", func(i int) []PortRange { return specs[i%len(specs)] }},
		{"distinct", func(i int) []PortRange { return []PortRange{{Protocol: TCP, Port: uint16(1 + i%65535)}} }},
	} {
		rules := build(bc.ports)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var c compiledRules
			for b.Loop() {
				c = compileRules(rules)
			}
			b.ReportMetric(float64(len(c.Peers)), "peers")
			b.ReportMetric(float64(len(c.Rulesets)), "rulesets")
		})
	}
}
