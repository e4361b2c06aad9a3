package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/datapath"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func peer(prefix string, except ...string) Peer {
	pe := Peer{Prefix: pfx(prefix)}
	for _, ex := range except {
		pe.Except = append(pe.Except, pfx(ex))
	}
	return pe
}

func TestValidate(t *testing.T) {
	isolated := func(rules ...Rule) Policy { return Policy{Ingress: Rules{Isolated: true, Rules: rules}} }
	egress := func(rules ...Rule) Policy { return Policy{Egress: Rules{Rules: rules}} }
	tcp := func(port, end uint16) PortRange { return PortRange{Protocol: TCP, Port: port, EndPort: end} }
	tests := []struct {
		name  string
		p     Policy
		field string
	}{
		{"unknown action", isolated(Rule{Action: 2}), "ingress.rules[0].action"},
		{"allow without isolation", egress(Rule{Action: Deny}, Rule{Action: Allow}), "egress.rules[1].action"},
		{"zero prefix", isolated(Rule{Peers: []Peer{{}}}), "ingress.rules[0].peers[0].prefix"},
		{"v4-mapped prefix", isolated(Rule{Peers: []Peer{peer("10.0.0.0/8"), peer("::ffff:10.0.0.0/104")}}),
			"ingress.rules[0].peers[1].prefix"},
		{"the v4-mapped space", isolated(Rule{Peers: []Peer{peer("::ffff:0:0/96")}}), "ingress.rules[0].peers[0].prefix"},
		{"zero except", isolated(Rule{Peers: []Peer{{Prefix: pfx("10.0.0.0/8"), Except: []netip.Prefix{{}}}}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"v4-mapped except", isolated(Rule{Peers: []Peer{peer("::/0", "::ffff:10.0.0.0/104")}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"except of the other family", isolated(Rule{Peers: []Peer{peer("10.0.0.0/8", "10.1.0.0/16", "fd00::/8")}}),
			"ingress.rules[0].peers[0].except[1]"},
		{"except equal to its prefix", isolated(Rule{Peers: []Peer{peer("10.0.0.0/8", "10.0.0.0/8")}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"except equal after masking", isolated(Rule{Peers: []Peer{peer("10.1.2.3/8", "10.9.9.9/8")}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"except shorter than its prefix", isolated(Rule{Peers: []Peer{peer("10.1.0.0/16", "10.0.0.0/8")}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"except outside its prefix", isolated(Rule{Peers: []Peer{peer("10.1.0.0/16", "10.2.0.0/24")}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"except outside an IPv6 prefix", isolated(Rule{Peers: []Peer{peer("fd00::/64", "fd00:0:0:1::/80")}}),
			"ingress.rules[0].peers[0].except[0]"},
		{"no protocol", isolated(Rule{Ports: []PortRange{{Port: 80}}}), "ingress.rules[0].ports[0].protocol"},
		{"unknown protocol", isolated(Rule{Ports: []PortRange{tcp(80, 0), {Protocol: 47}}}), "ingress.rules[0].ports[1].protocol"},
		{"icmpv6 number", isolated(Rule{Ports: []PortRange{{Protocol: 58}}}), "ingress.rules[0].ports[0].protocol"},
		{"endPort without port", isolated(Rule{Ports: []PortRange{tcp(0, 80)}}), "ingress.rules[0].ports[0].endPort"},
		{"endPort below port", egress(Rule{Action: Deny}, Rule{Action: Deny}, Rule{Action: Deny, Ports: []PortRange{tcp(80, 70)}}),
			"egress.rules[2].ports[0].endPort"},
		{"ICMP type above 255", isolated(Rule{Ports: []PortRange{{Protocol: ICMP, Port: 256}}}), "ingress.rules[0].ports[0].port"},
		{"ICMP end type above 255", isolated(Rule{Ports: []PortRange{{Protocol: ICMP, Port: 3, EndPort: 256}}}),
			"ingress.rules[0].ports[0].endPort"},
		{"first problem wins", Policy{
			Ingress: Rules{Rules: []Rule{{Action: Deny, Ports: []PortRange{tcp(9, 8)}}}},
			Egress:  Rules{Rules: []Rule{{Action: 7}}},
		}, "ingress.rules[0].ports[0].endPort"},
		{"egress after a good ingress", Policy{
			Ingress: Rules{Isolated: true, Rules: []Rule{{Peers: []Peer{peer("10.0.0.0/8")}}}},
			Egress:  Rules{Isolated: true, Rules: []Rule{{Peers: []Peer{peer("fd00::/8", "fd00::/8")}}}},
		}, "egress.rules[0].peers[0].except[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalid", err)
			}
			var ve *datapath.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Validate() = %v, want field %q", err, tt.field)
			}
			if ve.Endpoint != "" || !strings.HasPrefix(err.Error(), tt.field+" ") {
				t.Fatalf("Validate() = %q, want it to start with the field", err)
			}
		})
	}

	good := []struct {
		name string
		p    Policy
	}{
		{"zero policy", Policy{}},
		{"isolated without rules", Policy{Ingress: Rules{Isolated: true}, Egress: Rules{Isolated: true}}},
		{"deny without isolation", egress(Rule{Action: Deny, Peers: []Peer{peer("169.254.169.254/32")}})},
		{"unmasked prefixes", isolated(Rule{Peers: []Peer{peer("10.1.2.3/8", "10.1.2.3/16", "10.200.0.0/24")}})},
		{"mixed families", isolated(Rule{Peers: []Peer{peer("0.0.0.0/0", "10.0.0.0/8"), peer("::/0", "fd00::/8")}})},
		{"IPv6 prefixes around the v4-mapped space", isolated(Rule{Peers: []Peer{peer("::/0"), peer("::ffff:10.0.0.0/80"), peer("::fffe:0:0/95")}})},
		{"host except", isolated(Rule{Peers: []Peer{peer("10.0.0.0/31", "10.0.0.1/32"), peer("fd00::/127", "fd00::/128")}})},
		{"every port of a protocol", isolated(Rule{Ports: []PortRange{{Protocol: UDP}, {Protocol: SCTP}, {Protocol: ICMP}}})},
		{"ranges", isolated(Rule{Ports: []PortRange{tcp(80, 80), tcp(1, 65535), tcp(65535, 0), {Protocol: UDP, Port: 53}}})},
		{"ICMP types", isolated(Rule{Ports: []PortRange{{Protocol: ICMP, Port: 8}, {Protocol: ICMP, Port: 1, EndPort: 255}}})},
		{"allow and deny", Policy{Egress: Rules{Isolated: true, Rules: []Rule{
			{Action: Allow, Peers: []Peer{peer("10.0.0.0/8")}},
			{Action: Deny, Peers: []Peer{peer("10.0.0.0/24")}, Ports: []PortRange{tcp(22, 0)}},
		}}}},
	}
	for _, tt := range good {
		if err := tt.p.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", tt.name, err)
		}
	}
}

func TestValidationMessage(t *testing.T) {
	// The message from Validate names the value as given.
	p := Policy{Egress: Rules{Rules: []Rule{{Action: Deny, Peers: []Peer{peer("10.1.0.0/16", "10.2.0.0/24")}}}}}
	want := "egress.rules[0].peers[0].except[0] 10.2.0.0/24: not inside prefix 10.1.0.0/16"
	if got := p.Validate(); got == nil || got.Error() != want {
		t.Errorf("Validate() = %v, want %q", got, want)
	}
}
