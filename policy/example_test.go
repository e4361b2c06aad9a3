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
