package main

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xdplane/xdplane/lb"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ptr[T any](v T) *T { return &v }

func testService() *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeNodePort,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10", "fd00:96::10"},
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080},
				{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
				{Name: "sctp", Protocol: v1.ProtocolSCTP, Port: 9},
			},
			ExternalIPs:           []string{"192.0.2.10"},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyLocal,
			SessionAffinity:       v1.ServiceAffinityClientIP,
		},
	}
}

func slice(name string, family discovery.AddressType, ports []discovery.EndpointPort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discovery.LabelServiceName: "web"}},
		AddressType: family,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func port(name string, proto v1.Protocol, p int32) discovery.EndpointPort {
	return discovery.EndpointPort{Name: ptr(name), Protocol: ptr(proto), Port: ptr(p)}
}

func endpoint(addr string, ready, serving, terminating *bool, node string) discovery.Endpoint {
	return discovery.Endpoint{
		Addresses:  []string{addr},
		Conditions: discovery.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating},
		NodeName:   ptr(node),
	}
}

func TestKubeService(t *testing.T) {
	node := nodeInfo{Name: "node-a", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	yes, no := ptr(true), ptr(false)
	ports := []discovery.EndpointPort{port("http", v1.ProtocolTCP, 8080), port("dns", v1.ProtocolUDP, 5353)}
	sls := []*discovery.EndpointSlice{
		slice("web-a", discovery.AddressTypeIPv4, ports,
			endpoint("10.1.0.2", yes, yes, no, "node-a"),
			endpoint("10.1.0.3", no, yes, yes, "node-b"),  // terminating, still serving
			endpoint("10.1.0.4", no, no, yes, "node-b"),   // terminating, not serving
			endpoint("10.1.0.5", nil, nil, nil, "node-b"), // unset conditions: ready
			endpoint("10.1.0.6", no, nil, yes, "node-b"),  // terminating, serving unset: serving
			endpoint("10.1.0.7", no, yes, no, "node-b")),  // not ready yet
		slice("web-b", discovery.AddressTypeIPv4, []discovery.EndpointPort{port("http", v1.ProtocolUDP, 9999)}, // wrong protocol
			endpoint("10.1.0.9", yes, yes, no, "node-b")),
		slice("web-c", discovery.AddressTypeIPv4, []discovery.EndpointPort{port("dns", v1.ProtocolUDP, 5454)},
			endpoint("10.1.0.5", yes, yes, no, "node-b")), // same address, another target port
		slice("web-d", discovery.AddressTypeIPv4, ports,
			endpoint("10.1.0.7", yes, yes, no, "node-b")), // the same targets, ready here: this entry wins
		slice("web-6", discovery.AddressTypeIPv6, ports, endpoint("fd00:1::2", yes, yes, no, "node-b")),
		slice("web-fqdn", discovery.AddressTypeFQDN, ports, endpoint("example.com", yes, yes, no, "node-b")),
	}
	ks, ok, err := kubeService(testService(), sls, node)
	if err != nil || !ok {
		t.Fatalf("kubeService: %v, %v", ok, err)
	}
	if len(ks.ClusterIPs) != 2 || ks.ExternalIPs[0] != netip.MustParseAddr("192.0.2.10") || !slices.Equal(ks.NodeAddresses, node.Addresses) {
		t.Errorf("addresses: %+v", ks)
	}
	if len(ks.Ports) != 2 || ks.Ports[0] != (lb.KubePort{Name: "http", Protocol: lb.TCP, Port: 80, NodePort: 30080}) ||
		ks.Ports[1] != (lb.KubePort{Name: "dns", Protocol: lb.UDP, Port: 53}) {
		t.Errorf("ports (SCTP left out): %+v", ks.Ports)
	}
	if ks.ExternalTrafficPolicy != lb.Local || ks.InternalTrafficPolicy != lb.Cluster || ks.SessionAffinity != defaultAffinityTimeout {
		t.Errorf("policies: %+v", ks)
	}
	both := map[string]uint16{"http": 8080, "dns": 5353}
	want := []lb.KubeEndpoint{
		{Address: netip.MustParseAddr("10.1.0.2"), Ports: both, Ready: true, Serving: true, Local: true},
		{Address: netip.MustParseAddr("10.1.0.3"), Ports: both, Serving: true, Terminating: true},
		{Address: netip.MustParseAddr("10.1.0.4"), Ports: both, Terminating: true},
		{Address: netip.MustParseAddr("10.1.0.5"), Ports: both, Ready: true, Serving: true},
		{Address: netip.MustParseAddr("10.1.0.5"), Ports: map[string]uint16{"dns": 5454}, Ready: true, Serving: true},
		{Address: netip.MustParseAddr("10.1.0.6"), Ports: both, Serving: true, Terminating: true},
		{Address: netip.MustParseAddr("10.1.0.7"), Ports: both, Ready: true, Serving: true},
		{Address: netip.MustParseAddr("fd00:1::2"), Ports: both, Ready: true, Serving: true},
	}
	if len(ks.Endpoints) != len(want) {
		t.Fatalf("endpoints: %+v", ks.Endpoints)
	}
	for i, w := range want {
		g := ks.Endpoints[i]
		if g.Address != w.Address || g.Ready != w.Ready || g.Serving != w.Serving || g.Terminating != w.Terminating ||
			g.Local != w.Local || !maps.Equal(g.Ports, w.Ports) {
			t.Errorf("endpoint %d: got %+v, want %+v", i, g, w)
		}
	}

	// The whole chain to lb.Services: the node port frontend holds the
	// local endpoint only (externalTrafficPolicy Local), the cluster IP
	// all ready ones.
	svcs, err := ks.Expand()
	if err != nil {
		t.Fatal(err)
	}
	byFrontend := map[string]lb.Service{}
	for _, s := range svcs {
		byFrontend[s.Frontend.String()] = s
	}
	np, ok := byFrontend["10.0.0.1:30080/tcp"]
	if !ok || np.TrafficPolicy != lb.Local || np.SessionAffinity != defaultAffinityTimeout {
		t.Fatalf("node port frontend: %+v (all: %v)", np, svcs)
	}
	cip, ok := byFrontend["10.96.0.10:53/udp"]
	if !ok || !cip.VirtualIP {
		t.Fatalf("cluster IP frontend: %+v", cip)
	}
	var dns []string
	for _, b := range cip.Backends {
		if b.State == lb.Active {
			dns = append(dns, b.Address.String())
		}
	}
	if !slices.Equal(dns, []string{"10.1.0.2:5353", "10.1.0.5:5353", "10.1.0.5:5454", "10.1.0.7:5353"}) {
		t.Errorf("active DNS backends %v", dns)
	}
	if _, ok := byFrontend["[fd00:96::10]:80/tcp"]; !ok {
		t.Error("no IPv6 cluster IP frontend")
	}
}

func TestKubeServiceSkipsAndErrors(t *testing.T) {
	node := nodeInfo{Name: "n"}
	for name, mut := range map[string]func(*v1.Service){
		"external name": func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeExternalName },
		"headless": func(s *v1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = v1.ClusterIPNone, []string{v1.ClusterIPNone}
		},
		"no cluster IP": func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil },
	} {
		s := testService()
		mut(s)
		if _, ok, err := kubeService(s, nil, node); ok || err != nil {
			t.Errorf("%s: ok %v, err %v; want skipped", name, ok, err)
		}
	}
	s := testService()
	s.Spec.ExternalIPs = []string{"not-an-ip"}
	if _, _, err := kubeService(s, nil, node); err == nil {
		t.Error("a bad external IP: no error")
	}
	s = testService()
	s.Spec.Type = v1.ServiceTypeLoadBalancer
	s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
	s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
		{IP: "198.51.100.1"},
		{IP: "198.51.100.2", IPMode: ptr(v1.LoadBalancerIPModeProxy)},
		{Hostname: "lb.example.com"},
	}
	s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	s.Spec.ExternalIPs = []string{"198.51.100.1", "198.51.100.1"} // the load balancer's IP too, and twice
	ks, ok, err := kubeService(s, nil, node)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := ks.Expand(); err != nil {
		t.Errorf("an address listed twice: %v", err)
	}
	if !slices.Equal(ks.ExternalIPs, []netip.Addr{netip.MustParseAddr("198.51.100.1")}) || len(ks.LoadBalancerIPs) != 0 {
		t.Errorf("external %v, load balancer %v: want the address once", ks.ExternalIPs, ks.LoadBalancerIPs)
	}
	s.Spec.ExternalIPs = nil
	ks, _, _ = kubeService(s, nil, node)
	if !slices.Equal(ks.LoadBalancerIPs, []netip.Addr{netip.MustParseAddr("198.51.100.1")}) ||
		len(ks.LoadBalancerSourceRanges) != 1 || ks.SessionAffinity != time.Minute {
		t.Errorf("load balancer: %+v", ks)
	}
}

func TestNodeAddresses(t *testing.T) {
	n := &v1.Node{Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
		{Type: v1.NodeHostName, Address: "node-a"},
		{Type: v1.NodeExternalIP, Address: "203.0.113.9"},
		{Type: v1.NodeInternalIP, Address: "10.0.0.1"},
		{Type: v1.NodeInternalIP, Address: "10.0.0.2"},
		{Type: v1.NodeInternalIP, Address: "fd01::1"},
	}}}
	if got := nodeAddresses(n); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd01::1")}) {
		t.Errorf("node addresses %v", got)
	}
}
