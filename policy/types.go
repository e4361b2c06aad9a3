package policy

import (
	"net/netip"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/enum"
)

// Direction is the way a flow crosses the endpoint: datapath's Direction,
// which drop events carry too.
type Direction = datapath.Direction

const (
	// Ingress is traffic entering the endpoint (the pod); its peer is the
	// flow's source.
	Ingress = datapath.Ingress
	// Egress is traffic leaving the endpoint; its peer is the flow's
	// destination.
	Egress = datapath.Egress
)

// Protocol is an IP protocol a port range applies to. The values are IANA
// protocol numbers. Decide also takes numbers outside the named ones (47,
// GRE, for example), which only rules without ports match.
type Protocol uint8

// The protocols a PortRange can name.
const (
	// ICMP is ICMP for IPv4 peers and ICMPv6 for IPv6 peers; its "ports"
	// are ICMP types.
	ICMP Protocol = 1
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// ipprotoICMPv6 is ICMPv6's IP protocol number, which stands for ICMP
// wherever the peer is IPv6.
const ipprotoICMPv6 = 58

var protocolNames = enum.New[Protocol]("protocol", func() []string {
	names := make([]string, SCTP+1)
	names[ICMP], names[TCP], names[UDP], names[SCTP] = "icmp", "tcp", "udp", "sctp"
	return names
}()...)

// ParseProtocol parses "icmp", "tcp", "udp" or "sctp", in any case.
func ParseProtocol(s string) (Protocol, error) { return protocolNames.Parse(s, ErrInvalid) }

// IsValid reports whether p is one of the protocols a PortRange can name.
func (p Protocol) IsValid() bool { return protocolNames.Valid(p) }

// String returns "icmp", "tcp", "udp" or "sctp", and "protocol(N)" for
// any other protocol number.
func (p Protocol) String() string { return protocolNames.String(p) }

// MarshalText implements encoding.TextMarshaler.
func (p Protocol) MarshalText() ([]byte, error) { return protocolNames.Marshal(p, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseProtocol.
func (p *Protocol) UnmarshalText(b []byte) error { return protocolNames.Unmarshal(p, b, ErrInvalid) }

// Action is what a rule does to the flows it matches.
type Action uint8

const (
	// Allow admits the flows the rule matches into an isolated direction.
	Allow Action = iota
	// Deny drops the flows the rule matches, whatever any Allow rule says.
	Deny
)

var actionNames = enum.New[Action]("action", "allow", "deny")

// ParseAction parses "allow" or "deny", in any case.
func ParseAction(s string) (Action, error) { return actionNames.Parse(s, ErrInvalid) }

// String returns "allow" or "deny".
func (a Action) String() string { return actionNames.String(a) }

// MarshalText implements encoding.TextMarshaler.
func (a Action) MarshalText() ([]byte, error) { return actionNames.Marshal(a, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseAction.
func (a *Action) UnmarshalText(b []byte) error { return actionNames.Unmarshal(a, b, ErrInvalid) }

// Peer is a set of remote addresses, as a Kubernetes ipBlock: Prefix minus
// the Except prefixes. An IPv4 address only falls in IPv4 prefixes.
type Peer struct {
	// Prefix is the peer's range. Its host bits may be set; they are
	// ignored.
	Prefix netip.Prefix
	// Except are ranges inside Prefix, each strictly longer, that the peer
	// leaves out. Optional. Default: none.
	Except []netip.Prefix
}

// PortRange is a protocol and a range of its destination ports (for ICMP,
// of its ICMP types).
type PortRange struct {
	Protocol Protocol
	// Port is the first port of the range. 0 means every port of Protocol
	// (for ICMP, every type). Optional. Default: every port.
	Port uint16
	// EndPort, when not zero, is the last port of the range, inclusive, at
	// least Port. Optional. Default: 0, Port alone. For ICMP, Port and
	// EndPort are at most 255.
	EndPort uint16
}

// Rule matches flows by peer and by protocol and port, and says what
// happens to them.
type Rule struct {
	Action Action
	// Peers the rule matches. Optional. Default (empty): every peer of
	// both address families.
	Peers []Peer
	// Ports the rule matches. Optional. Default (empty): every protocol
	// and port, including protocols a PortRange cannot name.
	Ports []PortRange
}

// Rules is the policy of one direction.
//
// A new flow is denied if a Deny rule matches it. Otherwise, when the
// direction is not Isolated, it is allowed; when it is, it is allowed only
// if an Allow rule matches it (the Allow rules add up), and denied by
// default if none does.
type Rules struct {
	// Isolated makes the direction default deny, as a Kubernetes
	// NetworkPolicy that lists this policy type and selects the pod does:
	// only what an Allow rule admits passes. Without it, everything passes
	// that no Deny rule denies, and Validate refuses Allow rules.
	// Optional. Default: false.
	Isolated bool
	// Rules in any order: the outcome does not depend on it. Optional.
	// Default: none.
	Rules []Rule
}

// Policy is what an endpoint lets in and out. The zero Policy allows
// everything.
type Policy struct {
	Ingress Rules
	Egress  Rules
}

// Normalize returns a deep copy of p with every prefix masked
// (10.1.2.3/8 becomes 10.0.0.0/8), the form in which policies are stored
// and compared. It keeps the order of rules, peers and ports, so the field
// names of a ValidationError apply to both forms.
func (p Policy) Normalize() Policy {
	return Policy{Ingress: p.Ingress.normalize(), Egress: p.Egress.normalize()}
}

func (r Rules) normalize() Rules {
	out := Rules{Isolated: r.Isolated}
	if r.Rules == nil {
		return out
	}
	out.Rules = make([]Rule, len(r.Rules))
	for i, rule := range r.Rules {
		out.Rules[i] = Rule{Action: rule.Action, Ports: cloneSlice(rule.Ports)}
		if rule.Peers == nil {
			continue
		}
		peers := make([]Peer, len(rule.Peers))
		for j, pe := range rule.Peers {
			peers[j].Prefix = pe.Prefix.Masked()
			if pe.Except != nil {
				peers[j].Except = make([]netip.Prefix, len(pe.Except))
				for k, ex := range pe.Except {
					peers[j].Except[k] = ex.Masked()
				}
			}
		}
		out.Rules[i].Peers = peers
	}
	return out
}

// cloneSlice copies s, keeping nil as nil and empty as empty.
func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}
