package policy

import (
	"fmt"

	"github.com/xdplane/xdplane/internal/verr"
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
			return verr.Invalid(field+".action", rule.Action, "want allow or deny")
		case rule.Action == Allow && !r.Isolated:
			return verr.Invalid(field+".action", rule.Action,
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
	if err := verr.Prefix(field+".prefix", pe.Prefix); err != nil {
		return err
	}
	outer := pe.Prefix.Masked()
	for k, ex := range pe.Except {
		f := fmt.Sprintf("%s.except[%d]", field, k)
		if err := verr.Prefix(f, ex); err != nil {
			return err
		}
		inner := ex.Masked()
		switch {
		case inner.Addr().Is4() != outer.Addr().Is4():
			return verr.Invalid(f, ex, fmt.Sprintf("not of the address family of prefix %s", pe.Prefix))
		case inner.Bits() <= outer.Bits():
			return verr.Invalid(f, ex, fmt.Sprintf("not longer than prefix %s", pe.Prefix))
		case !outer.Contains(inner.Addr()):
			return verr.Invalid(f, ex, fmt.Sprintf("not inside prefix %s", pe.Prefix))
		}
	}
	return nil
}

func (pr PortRange) validate(field string) error {
	switch {
	case !pr.Protocol.IsValid():
		return verr.Invalid(field+".protocol", pr.Protocol, "want icmp, tcp, udp or sctp")
	case pr.Protocol == ICMP && pr.Port > maxICMPType:
		return verr.Invalid(field+".port", pr.Port, fmt.Sprintf("ICMP types go up to %d", maxICMPType))
	case pr.EndPort == 0:
		return nil
	case pr.Port == 0:
		return verr.Invalid(field+".endPort", pr.EndPort, "set without port")
	case pr.EndPort < pr.Port:
		return verr.Invalid(field+".endPort", pr.EndPort, fmt.Sprintf("below port %d", pr.Port))
	case pr.Protocol == ICMP && pr.EndPort > maxICMPType:
		return verr.Invalid(field+".endPort", pr.EndPort, fmt.Sprintf("ICMP types go up to %d", maxICMPType))
	}
	return nil
}
