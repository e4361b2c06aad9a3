package policy

import (
	"fmt"
	"net/netip"
)

// maxICMPType is the largest ICMP (and ICMPv6) type: the field is 8 bits.
const maxICMPType = 255

// Validate checks p on its own, without looking at the datapath, and
// returns the first problem as a *ValidationError wrapping ErrInvalid.
// Field names follow the Kubernetes YAML, for example
// "egress.rules[2].ports[0].endPort". Prefixes with host bits set are
// accepted; Normalize masks them.
func (p Policy) Validate() error {
	if err := p.Ingress.validate("ingress"); err != nil {
		return err
	}
	return p.Egress.validate("egress")
}

func (r Rules) validate(dir string) error {
	for i, rule := range r.Rules {
		field := fmt.Sprintf("%s.rules[%d]", dir, i)
		switch {
		case rule.Action > Deny:
			return invalid(field+".action", rule.Action, "want allow or deny")
		case rule.Action == Allow && !r.Isolated:
			return invalid(field+".action", rule.Action,
				"allow rule on a direction that is not isolated: set isolated, or it would change nothing")
		}
		for j, pe := range rule.Peers {
			if err := pe.validate(fmt.Sprintf("%s.peers[%d]", field, j)); err != nil {
				return err
			}
		}
		for k, pr := range rule.Ports {
			if err := pr.validate(fmt.Sprintf("%s.ports[%d]", field, k)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (pe Peer) validate(field string) error {
	if err := validPrefix(field+".prefix", pe.Prefix); err != nil {
		return err
	}
	outer := pe.Prefix.Masked()
	for k, ex := range pe.Except {
		f := fmt.Sprintf("%s.except[%d]", field, k)
		if err := validPrefix(f, ex); err != nil {
			return err
		}
		inner := ex.Masked()
		switch {
		case inner.Addr().Is4() != outer.Addr().Is4():
			return invalid(f, ex, fmt.Sprintf("not of the address family of prefix %s", pe.Prefix))
		case inner.Bits() <= outer.Bits():
			return invalid(f, ex, fmt.Sprintf("not longer than prefix %s", pe.Prefix))
		case !outer.Contains(inner.Addr()):
			return invalid(f, ex, fmt.Sprintf("not inside prefix %s", pe.Prefix))
		}
	}
	return nil
}

func validPrefix(field string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return invalid(field, p, "not a prefix")
	case p.Masked().Addr().Is4In6():
		// IPv4 peers are IPv4 and would never fall in it.
		return invalid(field, p, "IPv4-mapped IPv6 prefix: write it in its IPv4 form")
	}
	return nil
}

func (pr PortRange) validate(field string) error {
	switch {
	case !pr.Protocol.IsValid():
		return invalid(field+".protocol", pr.Protocol, "want TCP, UDP, SCTP or ICMP")
	case pr.Protocol == ICMP && pr.Port > maxICMPType:
		return invalid(field+".port", pr.Port, fmt.Sprintf("ICMP types go up to %d", maxICMPType))
	case pr.EndPort == 0:
		return nil
	case pr.Port == 0:
		return invalid(field+".endPort", pr.EndPort, "set without port")
	case pr.EndPort < pr.Port:
		return invalid(field+".endPort", pr.EndPort, fmt.Sprintf("below port %d", pr.Port))
	case pr.Protocol == ICMP && pr.EndPort > maxICMPType:
		return invalid(field+".endPort", pr.EndPort, fmt.Sprintf("ICMP types go up to %d", maxICMPType))
	}
	return nil
}
