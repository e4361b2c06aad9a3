package main

import (
	"fmt"
	"net/netip"

	"github.com/xdplane/xdplane/lb"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The services every implementation programs: service i has one port,
// TCP for even i and UDP for odd i, on cluster IP serviceCIDR+i+1, and
// endpointsPerService endpoints. Half TCP and half UDP keeps one rule set
// per service (as most Services have one port) while both protocols are
// measured.
const (
	endpointsPerService = 2
	tcpPort             = 80
	udpPort             = 53
	tcpTargetPort       = 8080
	udpTargetPort       = 5353
	// changedEndpointBase is the offset in endpointCIDR of the addresses
	// an endpoint change moves to, above every service's own endpoints.
	changedEndpointBase = 100_000
	benchNamespace      = "bench"
)

// maxServices is the most services the address plan holds: every service
// and the one added later need endpoint addresses below
// changedEndpointBase, and cluster IPs inside serviceCIDR.
const maxServices = changedEndpointBase/endpointsPerService - 2

func isTCP(i int) bool { return i%2 == 0 }

func protocolOf(i int) lb.Protocol {
	if isTCP(i) {
		return lb.TCP
	}
	return lb.UDP
}

// nthAddr is the n-th address of p.
func nthAddr(p netip.Prefix, n int) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// benchService is service i as the benchmark sees it.
type benchService struct {
	Index     int
	ClusterIP netip.Addr
	Port      uint16
	Protocol  lb.Protocol
	Endpoints []netip.AddrPort
}

func newBenchService(i int) benchService {
	s := benchService{
		Index:     i,
		ClusterIP: nthAddr(serviceCIDR, i+1),
		Protocol:  protocolOf(i),
		Port:      tcpPort,
	}
	target := uint16(tcpTargetPort)
	if s.Protocol == lb.UDP {
		s.Port, target = udpPort, udpTargetPort
	}
	for e := range endpointsPerService {
		s.Endpoints = append(s.Endpoints, netip.AddrPortFrom(nthAddr(endpointCIDR, endpointsPerService*i+e+1), target))
	}
	return s
}

// withChangedEndpoint is s with its last endpoint moved to a new address,
// the k-th such move (k wraps around the addresses set aside for moves).
func (s benchService) withChangedEndpoint(k int) benchService {
	eps := append([]netip.AddrPort(nil), s.Endpoints...)
	last := eps[len(eps)-1]
	room := 1<<(32-endpointCIDR.Bits()) - changedEndpointBase - 1
	eps[len(eps)-1] = netip.AddrPortFrom(nthAddr(endpointCIDR, changedEndpointBase+k%room), last.Port())
	s.Endpoints = eps
	return s
}

// Frontend is where clients reach s.
func (s benchService) Frontend() netip.AddrPort { return netip.AddrPortFrom(s.ClusterIP, s.Port) }

func (s benchService) name() string { return fmt.Sprintf("svc-%05d", s.Index) }

// lbService is s for xdplane: a cluster IP frontend (VirtualIP, as
// Kubernetes' cluster IPs are) with random backend selection.
func (s benchService) lbService() lb.Service {
	svc := lb.Service{
		Frontend:  lb.Frontend{Address: s.Frontend(), Protocol: s.Protocol},
		VirtualIP: true,
	}
	for _, ep := range s.Endpoints {
		svc.Backends = append(svc.Backends, lb.Backend{Address: ep})
	}
	return svc
}

func (s benchService) kubeProtocol() v1.Protocol {
	if s.Protocol == lb.UDP {
		return v1.ProtocolUDP
	}
	return v1.ProtocolTCP
}

// kubeService is s as the Kubernetes API holds it.
func (s benchService) kubeService() *v1.Service {
	ip := s.ClusterIP.String()
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.name(), Namespace: benchNamespace},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports: []v1.ServicePort{{
				Name:       "p",
				Protocol:   s.kubeProtocol(),
				Port:       int32(s.Port),
				TargetPort: intstr.FromInt32(int32(s.Endpoints[0].Port())),
			}},
		},
	}
}

// kubeSlice is s's endpoints as the EndpointSlice controller would write
// them: ready and serving, on another node.
func (s benchService) kubeSlice() *discovery.EndpointSlice {
	ready, serving, terminating := true, true, false
	node := "other-node"
	name := "p"
	proto := s.kubeProtocol()
	port := int32(s.Endpoints[0].Port())
	slice := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.name() + "-slice",
			Namespace: benchNamespace,
			Labels:    map[string]string{discovery.LabelServiceName: s.name()},
		},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	for _, ep := range s.Endpoints {
		slice.Endpoints = append(slice.Endpoints, discovery.Endpoint{
			Addresses:  []string{ep.Addr().String()},
			Conditions: discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
		})
	}
	return slice
}
