package lb

import (
	"fmt"
	"net/netip"
	"time"
)

// KubeService is a Kubernetes Service and its endpoints, reduced to what
// load balancing needs: the shape a node agent fills from the API (after
// resolving each endpoint's port for each service port). Expand turns it
// into the Services (one per frontend) that Manager installs.
type KubeService struct {
	// ClusterIPs are the service's cluster IPs (one per family); their
	// frontends are VirtualIP.
	ClusterIPs []netip.Addr
	// ExternalIPs and LoadBalancerIPs (status.loadBalancer.ingress) are
	// reached on the service ports too.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// NodeAddresses are this node's addresses on which NodePorts listen;
	// the caller declares them. Ports with a NodePort get a frontend on
	// each of the service's families (of its cluster IPs).
	NodeAddresses []netip.Addr
	Ports         []KubePort
	Endpoints     []KubeEndpoint

	// ExternalTrafficPolicy applies to NodePort, LoadBalancer and
	// external IP frontends, InternalTrafficPolicy to cluster IPs.
	ExternalTrafficPolicy TrafficPolicy
	InternalTrafficPolicy TrafficPolicy
	// SessionAffinity is the ClientIP timeout; 0 for none.
	SessionAffinity time.Duration
	// LoadBalancerSourceRanges restrict the LoadBalancer frontends, as
	// kube-proxy applies them: each load balancer IP gets the ranges of its
	// family, and a family without ranges admits every client.
	LoadBalancerSourceRanges []netip.Prefix
	// Algorithm and MaglevTableSize apply to every frontend.
	Algorithm       Algorithm
	MaglevTableSize uint32
}

// KubePort is one port of a Service.
type KubePort struct {
	Name     string // the port's name; may be empty for a single port
	Protocol Protocol
	Port     uint16 // the service port, on cluster, external and LB IPs
	NodePort uint16 // 0 for none
}

// KubeEndpoint is one endpoint (a pod address) with its conditions.
type KubeEndpoint struct {
	Address netip.Addr
	// Ports maps each service port's name to the endpoint's port for it
	// (the resolved targetPort). A service port the endpoint lacks is not
	// served by it.
	Ports map[string]uint16
	// Ready, Serving and Terminating are the EndpointSlice conditions.
	Ready, Serving, Terminating bool
	// Local marks an endpoint on this node (nodeName is this node).
	Local bool
	// Weight is optional (Kubernetes has none); 0 means 1.
	Weight uint16
}

// Expand returns one Service per frontend of ks: for each port, every
// cluster IP, external IP and load balancer IP on the service port, and
// every node address on the node port; each with the endpoints of its
// address family that serve the port. Ready endpoints are Active; not
// ready but serving and terminating ones are Terminating (used only when
// no endpoint is ready, as kube-proxy does); the rest are left out. The
// result is in a stable order. Invalid input yields a *ValidationError
// naming the field.
func (ks KubeService) Expand() ([]Service, error) {
	var out []Service
	seen := make(map[Frontend]bool)
	for pi, p := range ks.Ports {
		if !p.Protocol.IsValid() {
			return nil, invalid(Frontend{}, fmt.Sprintf("ports[%d].protocol", pi), p.Protocol, "want "+protocols.Want())
		}
		add := func(addr netip.Addr, port uint16, policy TrafficPolicy, ranges []netip.Prefix, virtual bool) error {
			fe := Frontend{Address: netip.AddrPortFrom(addr, port), Protocol: p.Protocol}
			if seen[fe] {
				return invalid(fe, fmt.Sprintf("ports[%d]", pi), fe, "two frontends on one address, port and protocol")
			}
			seen[fe] = true
			s := Service{
				Frontend:        fe,
				Algorithm:       ks.Algorithm,
				MaglevTableSize: ks.MaglevTableSize,
				SessionAffinity: ks.SessionAffinity,
				TrafficPolicy:   policy,
				SourceRanges:    ranges,
				VirtualIP:       virtual,
			}
			for _, ep := range ks.Endpoints {
				target, ok := ep.Ports[p.Name]
				if !ok || ep.Address.Is4() != addr.Is4() {
					continue
				}
				b := Backend{Address: netip.AddrPortFrom(ep.Address, target), Weight: ep.Weight, Local: ep.Local}
				switch {
				case ep.Ready:
					b.State = Active
				case ep.Serving && ep.Terminating:
					b.State = Terminating
				default:
					continue
				}
				s.Backends = append(s.Backends, b)
			}
			if err := s.Validate(); err != nil {
				return err
			}
			out = append(out, s)
			return nil
		}
		for _, a := range ks.ClusterIPs {
			if err := add(a, p.Port, ks.InternalTrafficPolicy, nil, true); err != nil {
				return nil, err
			}
		}
		for _, a := range ks.ExternalIPs {
			if err := add(a, p.Port, ks.ExternalTrafficPolicy, nil, false); err != nil {
				return nil, err
			}
		}
		for _, a := range ks.LoadBalancerIPs {
			if err := add(a, p.Port, ks.ExternalTrafficPolicy, rangesOfFamily(ks.LoadBalancerSourceRanges, a), false); err != nil {
				return nil, err
			}
		}
		if p.NodePort != 0 {
			for _, a := range ks.NodeAddresses {
				if !ks.servesFamily(a) {
					continue
				}
				if err := add(a, p.NodePort, ks.ExternalTrafficPolicy, nil, false); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// rangesOfFamily keeps the ranges of a's family, as kube-proxy applies
// them: a family without ranges admits every client.
func rangesOfFamily(ranges []netip.Prefix, a netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ranges {
		if p.Addr().Is4() == a.Is4() {
			out = append(out, p)
		}
	}
	return out
}

// servesFamily reports whether the service has a cluster IP of a's family
// (or none at all): node ports serve only the service's own families.
func (ks KubeService) servesFamily(a netip.Addr) bool {
	if len(ks.ClusterIPs) == 0 {
		return true
	}
	for _, c := range ks.ClusterIPs {
		if c.Is4() == a.Is4() {
			return true
		}
	}
	return false
}
