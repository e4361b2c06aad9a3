package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestKubeServiceExpand(t *testing.T) {
	addr := netip.MustParseAddr
	ks := KubeService{
		ClusterIPs:      []netip.Addr{addr("10.96.0.10"), addr("fd00::10")},
		ExternalIPs:     []netip.Addr{addr("192.0.2.10")},
		LoadBalancerIPs: []netip.Addr{addr("198.51.100.10")},
		NodeAddresses:   []netip.Addr{addr("172.18.0.2"), addr("fd01::2")},
		Ports: []KubePort{
			{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080},
			{Name: "dns", Protocol: UDP, Port: 53},
		},
		Endpoints: []KubeEndpoint{
			{Address: addr("10.0.1.2"), Ports: map[string]uint16{"http": 8080, "dns": 5353}, Ready: true, Serving: true, Local: true},
			{Address: addr("10.0.2.2"), Ports: map[string]uint16{"http": 8080}, Serving: true, Terminating: true},
			{Address: addr("10.0.3.2"), Ports: map[string]uint16{"http": 8080}, Terminating: true}, // not serving: out
			{Address: addr("fd00:1::2"), Ports: map[string]uint16{"http": 8080}, Ready: true, Serving: true},
		},
		ExternalTrafficPolicy:    Local,
		InternalTrafficPolicy:    Cluster,
		SessionAffinity:          DefaultSessionAffinity,
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
	}
	got, err := ks.Expand()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range got {
		var bs []string
		for _, b := range s.Backends {
			l := ""
			if b.Local {
				l = ",local"
			}
			bs = append(bs, fmt.Sprintf("%s:%s%s", b.Address, b.State, l))
		}
		lines = append(lines, fmt.Sprintf("%s %s ranges=%v affinity=%s -> %s", s.Frontend, s.TrafficPolicy, s.SourceRanges, s.SessionAffinity, strings.Join(bs, " ")))
	}
	want := []string{
		"10.96.0.10:80/tcp cluster ranges=[] affinity=3h0m0s -> 10.0.1.2:8080:active,local 10.0.2.2:8080:terminating",
		"[fd00::10]:80/tcp cluster ranges=[] affinity=3h0m0s -> [fd00:1::2]:8080:active",
		"192.0.2.10:80/tcp local ranges=[] affinity=3h0m0s -> 10.0.1.2:8080:active,local 10.0.2.2:8080:terminating",
		"198.51.100.10:80/tcp local ranges=[203.0.113.0/24] affinity=3h0m0s -> 10.0.1.2:8080:active,local 10.0.2.2:8080:terminating",
		"172.18.0.2:30080/tcp local ranges=[] affinity=3h0m0s -> 10.0.1.2:8080:active,local 10.0.2.2:8080:terminating",
		"[fd01::2]:30080/tcp local ranges=[] affinity=3h0m0s -> [fd00:1::2]:8080:active",
		"10.96.0.10:53/udp cluster ranges=[] affinity=3h0m0s -> 10.0.1.2:5353:active,local",
		"[fd00::10]:53/udp cluster ranges=[] affinity=3h0m0s -> ",
		"192.0.2.10:53/udp local ranges=[] affinity=3h0m0s -> 10.0.1.2:5353:active,local",
		"198.51.100.10:53/udp local ranges=[203.0.113.0/24] affinity=3h0m0s -> 10.0.1.2:5353:active,local",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Expand gave\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// Load balancer IPs get the source ranges of their family (none: all
// clients); node ports serve only the service's families.
func TestKubeServiceExpandFamilies(t *testing.T) {
	addr := netip.MustParseAddr
	ks := KubeService{
		ClusterIPs:               []netip.Addr{addr("10.96.0.10")},
		LoadBalancerIPs:          []netip.Addr{addr("198.51.100.10"), addr("2001:db8::10")},
		NodeAddresses:            []netip.Addr{addr("172.18.0.2"), addr("fd01::2")},
		Ports:                    []KubePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080}},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
	}
	got, err := ks.Expand()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range got {
		lines = append(lines, fmt.Sprintf("%s %v", s.Frontend, s.SourceRanges))
	}
	want := "10.96.0.10:80/tcp [] 198.51.100.10:80/tcp [203.0.113.0/24] [2001:db8::10]:80/tcp [] 172.18.0.2:30080/tcp []"
	if strings.Join(lines, " ") != want {
		t.Fatalf("Expand gave %s, want %s", strings.Join(lines, " "), want)
	}
}

func TestKubeServiceExpandInvalid(t *testing.T) {
	addr := netip.MustParseAddr
	for name, ks := range map[string]KubeService{
		"bad protocol": {ClusterIPs: []netip.Addr{addr("10.96.0.10")}, Ports: []KubePort{{Protocol: 132, Port: 80}}},
		"port 0":       {ClusterIPs: []netip.Addr{addr("10.96.0.10")}, Ports: []KubePort{{Protocol: TCP}}},
		"same frontend twice": {ClusterIPs: []netip.Addr{addr("10.96.0.10")}, ExternalIPs: []netip.Addr{addr("10.96.0.10")},
			Ports: []KubePort{{Protocol: TCP, Port: 80}}},
		"bad affinity": {ClusterIPs: []netip.Addr{addr("10.96.0.10")}, Ports: []KubePort{{Protocol: TCP, Port: 80}},
			SessionAffinity: time.Millisecond},
	} {
		if _, err := ks.Expand(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Expand = %v, want ErrInvalid", name, err)
		}
	}
}
