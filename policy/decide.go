package policy

import (
	"net/netip"
	"strconv"
)

// Decision is what a policy does to a new flow.
type Decision uint8

const (
	// Allowed: the flow passes.
	Allowed Decision = iota
	// DeniedByRule: a Deny rule matches the flow.
	DeniedByRule
	// DeniedByDefault: the direction is isolated and no Allow rule
	// matches the flow.
	DeniedByDefault
)

// String returns "allowed", "denied by rule" or "denied by default".
func (d Decision) String() string {
	switch d {
	case Allowed:
		return "allowed"
	case DeniedByRule:
		return "denied by rule"
	case DeniedByDefault:
		return "denied by default"
	}
	return "decision(" + strconv.Itoa(int(d)) + ")"
}

// Decide is the reference meaning of a valid policy, evaluated rule by rule
// (slow, and obviously correct): what the datapath decides for the first
// packet of a flow in direction dir. peer is the remote address (for
// Ingress the source, for Egress the destination); an IPv4-mapped IPv6
// address counts as IPv4. port is the destination port, or for ICMP the
// ICMP type. proto may be any IP protocol number; for an IPv6 peer, ICMP
// and 58 (ICMPv6) are the same. An invalid peer matches no rule, and a
// direction other than Ingress and Egress is denied by default.
func (p Policy) Decide(dir Direction, peer netip.Addr, proto Protocol, port uint16) Decision {
	var r Rules
	switch dir {
	case Ingress:
		r = p.Ingress
	case Egress:
		r = p.Egress
	default:
		return DeniedByDefault
	}
	peer = peer.WithZone("").Unmap()
	if peer.Is6() && proto == ipprotoICMPv6 {
		proto = ICMP
	}
	allowed := false
	for _, rule := range r.Rules {
		if !rule.matchesPeer(peer) || !rule.matchesPort(proto, port) {
			continue
		}
		if rule.Action == Deny {
			return DeniedByRule
		}
		allowed = true
	}
	if allowed || !r.Isolated {
		return Allowed
	}
	return DeniedByDefault
}

func (rule Rule) matchesPeer(a netip.Addr) bool {
	if len(rule.Peers) == 0 {
		return a.IsValid()
	}
	for _, pe := range rule.Peers {
		if pe.contains(a) {
			return true
		}
	}
	return false
}

func (pe Peer) contains(a netip.Addr) bool {
	if !pe.Prefix.Contains(a) {
		return false
	}
	for _, ex := range pe.Except {
		if ex.Contains(a) {
			return false
		}
	}
	return true
}

func (rule Rule) matchesPort(proto Protocol, port uint16) bool {
	if len(rule.Ports) == 0 {
		return true
	}
	for _, pr := range rule.Ports {
		if pr.contains(proto, port) {
			return true
		}
	}
	return false
}

func (pr PortRange) contains(proto Protocol, port uint16) bool {
	if pr.Protocol != proto {
		return false
	}
	lo, hi := pr.bounds()
	return lo <= port && port <= hi
}

// bounds returns the first and last port of the range, both included.
func (pr PortRange) bounds() (lo, hi uint16) {
	switch {
	case pr.Port == 0:
		return 0, 0xffff
	case pr.EndPort == 0:
		return pr.Port, pr.Port
	}
	return pr.Port, pr.EndPort
}
