package main

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/xdplane/xdplane/lb"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// defaultAffinityTimeout is Kubernetes' sessionAffinityConfig default.
const defaultAffinityTimeout = 10800 * time.Second

// nodeInfo is what the translation needs of this node.
type nodeInfo struct {
	Name string
	// Addresses are where node ports listen: the node's InternalIP
	// addresses, one per family, as kube-proxy's "primary" node port
	// addresses are.
	Addresses []netip.Addr
}

// nodeAddresses picks a node's node-port addresses: its first InternalIP
// of each family.
func nodeAddresses(n *v1.Node) []netip.Addr {
	var out []netip.Addr
	have4, have6 := false, false
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !have4 {
			out, have4 = append(out, ip), true
		} else if ip.Is6() && !have6 {
			out, have6 = append(out, ip), true
		}
	}
	return out
}

// kubeService reduces a Service and its EndpointSlices to lb's view of it.
// ok is false for services kube-proxy does not proxy: ExternalName and
// headless ones.
func kubeService(svc *v1.Service, sls []*discovery.EndpointSlice, node nodeInfo) (ks lb.KubeService, ok bool, err error) {
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		return ks, false, nil
	}
	if svc.Spec.ClusterIP == v1.ClusterIPNone {
		return ks, false, nil
	}
	name := svc.Namespace + "/" + svc.Name
	for i, s := range clusterIPs(svc) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return ks, false, fmt.Errorf("service %s: spec.clusterIPs[%d] %q: %w", name, i, s, err)
		}
		ks.ClusterIPs = append(ks.ClusterIPs, a.Unmap())
	}
	if len(ks.ClusterIPs) == 0 {
		return ks, false, nil // not allocated yet
	}
	for i, s := range svc.Spec.ExternalIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return ks, false, fmt.Errorf("service %s: spec.externalIPs[%d] %q: %w", name, i, s, err)
		}
		ks.ExternalIPs = append(ks.ExternalIPs, a.Unmap())
	}
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		for i, ing := range svc.Status.LoadBalancer.Ingress {
			// A load balancer that proxies (ipMode Proxy) delivers to the
			// node, not to its IP: kube-proxy leaves such IPs alone.
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy) {
				continue
			}
			a, err := netip.ParseAddr(ing.IP)
			if err != nil {
				return ks, false, fmt.Errorf("service %s: status.loadBalancer.ingress[%d].ip %q: %w", name, i, ing.IP, err)
			}
			ks.LoadBalancerIPs = append(ks.LoadBalancerIPs, a.Unmap())
		}
		for i, s := range svc.Spec.LoadBalancerSourceRanges {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return ks, false, fmt.Errorf("service %s: spec.loadBalancerSourceRanges[%d] %q: %w", name, i, s, err)
			}
			ks.LoadBalancerSourceRanges = append(ks.LoadBalancerSourceRanges, p.Masked())
		}
	}
	// An address listed twice (a load balancer IP that is also an external
	// IP, say) is served once, as kube-proxy's rules for it coincide.
	ks.ExternalIPs = distinct(ks.ExternalIPs, ks.ClusterIPs)
	ks.LoadBalancerIPs = distinct(ks.LoadBalancerIPs, ks.ClusterIPs, ks.ExternalIPs)
	nodePorts := svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer
	if nodePorts {
		ks.NodeAddresses = node.Addresses
	}
	for _, p := range svc.Spec.Ports {
		proto, ok := protocol(p.Protocol)
		if !ok {
			continue // SCTP: not ours
		}
		kp := lb.KubePort{Name: p.Name, Protocol: proto, Port: uint16(p.Port)}
		if nodePorts {
			kp.NodePort = uint16(p.NodePort)
		}
		ks.Ports = append(ks.Ports, kp)
	}
	if svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
		ks.ExternalTrafficPolicy = lb.Local
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p == v1.ServiceInternalTrafficPolicyLocal {
		ks.InternalTrafficPolicy = lb.Local
	}
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		ks.SessionAffinity = defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			ks.SessionAffinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	ks.Endpoints = endpoints(svc, sls, node.Name)
	return ks, true, nil
}

// distinct returns addrs without repeats and without the addresses in
// taken.
func distinct(addrs []netip.Addr, taken ...[]netip.Addr) []netip.Addr {
	seen := map[netip.Addr]bool{}
	for _, t := range taken {
		for _, a := range t {
			seen[a] = true
		}
	}
	var out []netip.Addr
	for _, a := range addrs {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func clusterIPs(svc *v1.Service) []string {
	if len(svc.Spec.ClusterIPs) > 0 {
		return svc.Spec.ClusterIPs
	}
	if svc.Spec.ClusterIP != "" {
		return []string{svc.Spec.ClusterIP}
	}
	return nil
}

func protocol(p v1.Protocol) (lb.Protocol, bool) {
	switch p {
	case v1.ProtocolTCP, "":
		return lb.TCP, true
	case v1.ProtocolUDP:
		return lb.UDP, true
	}
	return 0, false
}

// endpoints turns the service's slices into lb's endpoints, as kube-proxy
// reads them: each slice endpoint serves the service ports whose name and
// protocol a port of its slice has, with its own conditions (unset ready
// and serving mean true, unset terminating false). An address and port
// that two slices both list for one service port (while the controller
// moves endpoints between slices) counts once: the ready entry wins, else
// the first.
func endpoints(svc *v1.Service, sls []*discovery.EndpointSlice, nodeName string) []lb.KubeEndpoint {
	protoOf := map[string]v1.Protocol{}
	for _, p := range svc.Spec.Ports {
		protoOf[p.Name] = p.Protocol
	}
	type target struct {
		addr netip.Addr
		name string
		port uint16
	}
	owner := map[target]int{} // which entry of out serves it
	var out []lb.KubeEndpoint
	for _, sl := range sls {
		if sl.AddressType != discovery.AddressTypeIPv4 && sl.AddressType != discovery.AddressTypeIPv6 {
			continue
		}
		ports := map[string]uint16{}
		for _, p := range sl.Ports {
			if p.Port == nil {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := v1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if want, ok := protoOf[name]; ok && (want == proto || (want == "" && proto == v1.ProtocolTCP)) {
				ports[name] = uint16(*p.Port)
			}
		}
		if len(ports) == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			// Kubernetes uses the first address; the others are reserved.
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			a = a.Unmap()
			c := ep.Conditions
			ke := lb.KubeEndpoint{
				Address:     a,
				Ports:       map[string]uint16{},
				Ready:       c.Ready == nil || *c.Ready,
				Serving:     c.Serving == nil || *c.Serving,
				Terminating: c.Terminating != nil && *c.Terminating,
				Local:       ep.NodeName != nil && *ep.NodeName == nodeName,
			}
			idx := len(out)
			for name, port := range ports {
				k := target{a, name, port}
				prev, dup := owner[k]
				if dup && (out[prev].Ready || !ke.Ready) {
					continue
				}
				if dup {
					delete(out[prev].Ports, name)
				}
				owner[k] = idx
				ke.Ports[name] = port
			}
			out = append(out, ke)
		}
	}
	out = slices.DeleteFunc(out, func(e lb.KubeEndpoint) bool { return len(e.Ports) == 0 })
	slices.SortStableFunc(out, func(x, y lb.KubeEndpoint) int { return x.Address.Compare(y.Address) })
	return out
}
