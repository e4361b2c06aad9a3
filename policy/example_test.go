package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/policy"
)

// A CNI plugin isolates a pod on ingress: TCP 8080 from the frontend pods'
// subnet, except one address, and never anything from a known bad range.
func Example() {
	dp, err := datapath.Open(datapath.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dp.Close()
	m, err := policy.NewManager(dp)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	if err := m.AddEndpoint(policy.Endpoint{Interface: "veth1a2b3c", Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.7")}}); err != nil {
		fmt.Println(err)
		return
	}
	err = m.SetPolicy("veth1a2b3c", policy.Policy{
		Ingress: policy.Rules{Isolated: true, Rules: []policy.Rule{
			{
				Peers: []policy.Peer{{Prefix: netip.MustParsePrefix("10.244.0.0/16"), Except: []netip.Prefix{netip.MustParsePrefix("10.244.9.9/32")}}},
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8080}},
			},
			{Action: policy.Deny, Peers: []policy.Peer{{Prefix: netip.MustParsePrefix("192.0.2.0/24")}}},
		}},
	})
	if err != nil {
		fmt.Println(err)
	}
}

// What a policy decides, without a datapath: Decide is the reference
// meaning the datapath is tested against.
func ExamplePolicy_Decide() {
	p := policy.Policy{Ingress: policy.Rules{Isolated: true, Rules: []policy.Rule{{
		Peers: []policy.Peer{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}},
		Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 8000, EndPort: 8100}},
	}}}}
	fmt.Println(p.Decide(policy.Ingress, netip.MustParseAddr("10.1.2.3"), policy.TCP, 8080))
	fmt.Println(p.Decide(policy.Ingress, netip.MustParseAddr("10.9.2.3"), policy.TCP, 8080))
	fmt.Println(p.Decide(policy.Ingress, netip.MustParseAddr("10.1.2.3"), policy.UDP, 8080))
	fmt.Println(p.Decide(policy.Egress, netip.MustParseAddr("10.9.2.3"), policy.UDP, 53))
	// Output:
	// allowed
	// denied by default
	// denied by default
	// allowed
}

// A CNI plugin gives a pod the limits its annotations ask for, and a
// packet-rate limit of its own against UDP floods.
func ExampleManager_SetBandwidth() {
	dp, err := datapath.Open(datapath.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dp.Close()
	m, err := policy.NewManager(dp)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	// NetNS (the plugin's CNI_NETNS) is where an egress limit's queue
	// goes when the kernel has no fq.
	if err := m.AddEndpoint(policy.Endpoint{Interface: "veth1a2b3c", NetNS: "/var/run/netns/cni-1a2b3c"}); err != nil {
		fmt.Println(err)
		return
	}
	b, err := policy.BandwidthFromAnnotations(map[string]string{
		policy.IngressBandwidthAnnotation: "100M",
		policy.EgressBandwidthAnnotation:  "10M",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	b.Egress.PacketRate = 20_000
	if err := m.SetBandwidth("veth1a2b3c", b); err != nil {
		fmt.Println(err)
	}
}

// Annotation values are Kubernetes quantities in bits per second.
func ExampleParseBandwidthQuantity() {
	for _, s := range []string{"10M", "1.5G", "100Mi", "10Mb"} {
		v, err := policy.ParseBandwidthQuantity(s)
		fmt.Println(v, err)
	}
	// Output:
	// 10000000 <nil>
	// 1500000000 <nil>
	// 104857600 <nil>
	// 0 invalid: bandwidth "10Mb": unknown suffix "Mb": want k, M, G, T, P, Ki, Mi, Gi, Ti, Pi or an exponent such as e6 (the unit, bit/s, is not written: 10M is 10 Mbit/s)
}
