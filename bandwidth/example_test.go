package bandwidth_test

import (
	"fmt"

	"github.com/xdplane/xdplane/bandwidth"
	"github.com/xdplane/xdplane/datapath"
)

// A CNI plugin gives a pod the limits its annotations ask for, and a
// packet-rate limit of its own against UDP floods.
func ExampleManager_Set() {
	dp, err := datapath.Open(datapath.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dp.Close()
	m, err := bandwidth.NewManager(dp)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	l, err := bandwidth.FromAnnotations(map[string]string{
		bandwidth.IngressAnnotation: "100M",
		bandwidth.EgressAnnotation:  "10M",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	l.Egress.PacketRate = 20_000
	// NetNS (the plugin's CNI_NETNS) is where the egress limit's queue
	// goes: on the pod's side of its link.
	e := bandwidth.Endpoint{Interface: "veth1a2b3c", NetNS: "/var/run/netns/cni-1a2b3c"}
	if err := m.Set(e, l); err != nil {
		fmt.Println(err)
	}
}

// Annotation values are Kubernetes quantities in bits per second.
func ExampleParseQuantity() {
	for _, s := range []string{"10M", "1.5G", "100Mi", "10Mb"} {
		v, err := bandwidth.ParseQuantity(s)
		fmt.Println(v, err)
	}
	// Output:
	// 10000000 <nil>
	// 1500000000 <nil>
	// 104857600 <nil>
	// 0 invalid: bandwidth "10Mb": unknown suffix "Mb": want k, M, G, T, P, Ki, Mi, Gi, Ti, Pi or an exponent such as e6 (the unit, bit/s, is not written: 10M is 10 Mbit/s)
}
