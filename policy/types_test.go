package policy

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/xdplane/xdplane/datapath"
)

func TestProtocol(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Protocol
		str  string
	}{
		{"tcp", TCP, "tcp"}, {"TCP", TCP, "tcp"}, {"udp", UDP, "udp"}, {"Udp", UDP, "udp"},
		{"sctp", SCTP, "sctp"}, {"icmp", ICMP, "icmp"}, {"ICMP", ICMP, "icmp"},
	} {
		got, err := ParseProtocol(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseProtocol(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
		if got.String() != tt.str {
			t.Errorf("%d.String() = %q, want %q", uint8(got), got.String(), tt.str)
		}
		var back Protocol
		text, err := got.MarshalText()
		if err != nil || back.UnmarshalText(text) != nil || back != got {
			t.Errorf("%v: text round trip gave %v (%v)", got, back, err)
		}
		if !got.IsValid() {
			t.Errorf("%v.IsValid() = false", got)
		}
	}
	for _, bad := range []string{"", "gre", "icmpv6", "6", "tcp "} {
		if _, err := ParseProtocol(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseProtocol(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if s := Protocol(47).String(); s != "protocol(47)" {
		t.Errorf("Protocol(47).String() = %q", s)
	}
	if _, err := Protocol(0).MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Protocol(0).MarshalText() = %v, want ErrInvalid", err)
	}
	if Protocol(58).IsValid() || Protocol(0).IsValid() {
		t.Error("IsValid accepts a protocol a PortRange cannot name")
	}
}

func TestActionAndDirection(t *testing.T) {
	for _, a := range []Action{Allow, Deny} {
		got, err := ParseAction(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v", a.String(), got, err)
		}
		var back Action
		text, err := a.MarshalText()
		if err != nil || back.UnmarshalText(text) != nil || back != a {
			t.Errorf("%v: text round trip gave %v (%v)", a, back, err)
		}
	}
	if a, err := ParseAction("DENY"); err != nil || a != Deny {
		t.Errorf("ParseAction(DENY) = %v, %v", a, err)
	}
	if _, err := ParseAction("pass"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseAction(pass) = %v, want ErrInvalid", err)
	}
	if _, err := Action(2).MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Action(2).MarshalText() = %v, want ErrInvalid", err)
	}
	for _, d := range []Direction{Ingress, Egress} {
		got, err := datapath.ParseDirection(d.String())
		if err != nil || got != d {
			t.Errorf("datapath.ParseDirection(%q) = %v, %v", d.String(), got, err)
		}
		var back Direction
		text, err := d.MarshalText()
		if err != nil || back.UnmarshalText(text) != nil || back != d {
			t.Errorf("%v: text round trip gave %v (%v)", d, back, err)
		}
	}
	if d, err := datapath.ParseDirection("egress"); err != nil || d != Egress {
		t.Errorf("datapath.ParseDirection(egress) = %v, %v", d, err)
	}
	if _, err := datapath.ParseDirection("both"); !errors.Is(err, ErrInvalid) {
		t.Errorf("datapath.ParseDirection(both) = %v, want ErrInvalid", err)
	}
	for d, want := range map[Decision]string{Allowed: "allowed", DeniedByRule: "denied by rule",
		DeniedByDefault: "denied by default", 9: "decision(9)"} {
		if d.String() != want {
			t.Errorf("Decision(%d).String() = %q, want %q", uint8(d), d.String(), want)
		}
	}
}

func TestNormalize(t *testing.T) {
	in := Policy{
		Ingress: Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{peer("10.1.2.3/8", "10.1.2.3/16"), peer("fd00::1/64")}, Ports: []PortRange{{Protocol: TCP, Port: 80}}},
			{Action: Allow},
			{Ports: []PortRange{}},
		}},
		Egress: Rules{Rules: []Rule{{Action: Deny, Peers: []Peer{peer("192.168.1.1/24")}}}},
	}
	want := Policy{
		Ingress: Rules{Isolated: true, Rules: []Rule{
			{Peers: []Peer{peer("10.0.0.0/8", "10.1.0.0/16"), peer("fd00::/64")}, Ports: []PortRange{{Protocol: TCP, Port: 80}}},
			{Action: Allow},
			{Ports: []PortRange{}},
		}},
		Egress: Rules{Rules: []Rule{{Action: Deny, Peers: []Peer{peer("192.168.1.0/24")}}}},
	}
	got := in.Normalize()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Normalize() = %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(got.Normalize(), want) {
		t.Fatal("Normalize is not idempotent")
	}

	// The copy shares nothing with the original.
	got.Ingress.Rules[0].Peers[0].Except[0] = netip.Prefix{}
	got.Ingress.Rules[0].Peers[1].Prefix = netip.Prefix{}
	got.Ingress.Rules[0].Ports[0].Port = 1
	got.Egress.Rules[0].Action = Allow
	if in.Ingress.Rules[0].Peers[0].Except[0] != pfx("10.1.2.3/16") || in.Ingress.Rules[0].Peers[1].Prefix != pfx("fd00::1/64") ||
		in.Ingress.Rules[0].Ports[0].Port != 80 || in.Egress.Rules[0].Action != Deny {
		t.Fatal("changing Normalize's result changed its input")
	}
}
