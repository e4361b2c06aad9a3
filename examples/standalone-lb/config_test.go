package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

func frontend(s string) lb.Frontend {
	f, err := lb.ParseFrontend(s)
	if err != nil {
		panic(err)
	}
	return f
}

func backend(addr string, weight uint16) lb.Backend {
	return lb.Backend{Address: netip.MustParseAddrPort(addr), Weight: weight}
}

// plain is a service of the plain form.
func plain(name string, s lb.Service) NamedService {
	return NamedService{Name: name, Type: TypeFrontend, Service: s}
}

func TestParseConfigValid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []NamedService
	}{
		{
			name: "full",
			yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    protocol: tcp
    backends:
      - address: 10.0.1.2:8080
        weight: 3
      - address: 10.0.2.2:8080
  - name: dns
    frontend: "10.96.0.10:53"
    protocol: udp
    backends:
      - {address: 10.0.1.2:5353, weight: 1000}
`,
			want: []NamedService{
				plain("web", lb.Service{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{
					backend("10.0.1.2:8080", 3), backend("10.0.2.2:8080", 1)}}),
				plain("dns", lb.Service{Frontend: frontend("10.96.0.10:53/udp"), Backends: []lb.Backend{
					backend("10.0.1.2:5353", 1000)}}),
			},
		},
		{
			name: "no services",
			yaml: "services: []\n",
			want: nil,
		},
		{
			name: "protocol defaults to tcp, any case accepted",
			yaml: `
services:
  - {name: a, frontend: 10.96.0.1:80}
  - {name: b, frontend: 10.96.0.1:80, protocol: UDP}
`,
			want: []NamedService{
				plain("a", lb.Service{Frontend: frontend("10.96.0.1:80/tcp")}),
				plain("b", lb.Service{Frontend: frontend("10.96.0.1:80/udp")}),
			},
		},
		{
			name: "no backends, empty or null",
			yaml: `
services:
  - {name: a, frontend: 10.96.0.1:80, backends: []}
  - {name: b, frontend: 10.96.0.2:80, backends: ~}
`,
			want: []NamedService{
				plain("a", lb.Service{Frontend: frontend("10.96.0.1:80/tcp")}),
				plain("b", lb.Service{Frontend: frontend("10.96.0.2:80/tcp")}),
			},
		},
		{
			name: "anchors and aliases",
			yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends: &pool
      - address: 10.0.1.2:8080
  - name: web-alt
    frontend: 10.96.0.11:80
    backends: *pool
`,
			want: []NamedService{
				plain("web", lb.Service{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}}),
				plain("web-alt", lb.Service{Frontend: frontend("10.96.0.11:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}}),
			},
		},
		{
			name: "IPv6 and IPv4 services on one port",
			yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends:
      - address: 10.0.1.2:8080
  - name: web6
    frontend: "[fd00::10]:80"
    backends:
      - address: "[fd00:1::2]:8080"
        weight: 2
      - {address: '[FD00:2:0::2]:8080'}
  - name: dns6
    frontend: "[fd00::10]:53"
    protocol: udp
    backends: [{address: "[fd00:1::2]:5353"}]
`,
			want: []NamedService{
				plain("web", lb.Service{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}}),
				plain("web6", lb.Service{Frontend: frontend("[fd00::10]:80/tcp"), Backends: []lb.Backend{
					backend("[fd00:1::2]:8080", 2), backend("[fd00:2::2]:8080", 1)}}),
				plain("dns6", lb.Service{Frontend: frontend("[fd00::10]:53/udp"), Backends: []lb.Backend{backend("[fd00:1::2]:5353", 1)}}),
			},
		},
		{
			name: "numeric name is a name",
			yaml: "services:\n  - {name: 42, frontend: 10.96.0.1:80}\n",
			want: []NamedService{plain("42", lb.Service{Frontend: frontend("10.96.0.1:80/tcp")})},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(cfg.Services, tt.want) {
				t.Errorf("got  %+v\nwant %+v", cfg.Services, tt.want)
			}
		})
	}
}

// describe writes a service on one line, for tables of expectations:
// label, type, frontend, algorithm (and table size), affinity, policy,
// source ranges, then each backend with its weight, state and locality.
func describe(s NamedService) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s", s.Label(), s.Type, s.Service.Frontend, s.Service.Algorithm)
	if s.Service.MaglevTableSize != 0 {
		fmt.Fprintf(&b, "/%d", s.Service.MaglevTableSize)
	}
	fmt.Fprintf(&b, " affinity=%s %s ranges=%v ->", s.Service.SessionAffinity, s.Service.TrafficPolicy, s.Service.SourceRanges)
	for _, be := range s.Service.Backends {
		fmt.Fprintf(&b, " %s w%d %s", be.Address, be.Weight, be.State)
		if be.Local {
			b.WriteString(" local")
		}
		b.WriteString(",")
	}
	return strings.TrimSuffix(b.String(), ",")
}

func describeAll(cfg Config) string {
	var lines []string
	for _, s := range cfg.Services {
		lines = append(lines, describe(s))
	}
	return strings.Join(lines, "\n")
}

// The fields of issue 3 in the plain form, one service at a time: the
// YAML below "  - name: web\n    frontend: 10.96.0.10:80\n".
func TestParseConfigPlainFields(t *testing.T) {
	const head = "services:\n  - name: web\n    frontend: 10.96.0.10:80\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"defaults", "", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{
			"everything", `    protocol: tcp
    algorithm: maglev
    maglevTableSize: 251
    sessionAffinity: 3h
    trafficPolicy: local
    sourceRanges: [10.0.0.0/8, "192.168.0.0/16"]
    backends:
      - address: 10.0.1.2:8080
        weight: 3
        state: active
        local: true
      - {address: 10.0.2.2:8080, state: terminating, local: false}
      - {address: 10.0.3.2:8080, state: maintenance}
`,
			"web frontend 10.96.0.10:80/tcp maglev/251 affinity=3h0m0s local ranges=[10.0.0.0/8 192.168.0.0/16] ->" +
				" 10.0.1.2:8080 w3 active local, 10.0.2.2:8080 w1 terminating, 10.0.3.2:8080 w1 maintenance",
		},
		{"algorithm random", "    algorithm: random\n", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{"algorithm in any case", "    algorithm: Maglev\n", "web frontend 10.96.0.10:80/tcp maglev affinity=0s cluster ranges=[] ->"},
		{"largest maglev table", "    algorithm: maglev\n    maglevTableSize: 131071\n", "web frontend 10.96.0.10:80/tcp maglev/131071 affinity=0s cluster ranges=[] ->"},
		{"affinity clientIP is Kubernetes' default", "    sessionAffinity: clientIP\n", "web frontend 10.96.0.10:80/tcp random affinity=3h0m0s cluster ranges=[] ->"},
		{"affinity ClientIP as Kubernetes writes it", "    sessionAffinity: ClientIP\n", "web frontend 10.96.0.10:80/tcp random affinity=3h0m0s cluster ranges=[] ->"},
		{"affinity None", "    sessionAffinity: None\n", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{"affinity 0s is none", "    sessionAffinity: 0s\n", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{"affinity in seconds", "    sessionAffinity: 10800s\n", "web frontend 10.96.0.10:80/tcp random affinity=3h0m0s cluster ranges=[] ->"},
		{"affinity in minutes and seconds", "    sessionAffinity: 1m30s\n", "web frontend 10.96.0.10:80/tcp random affinity=1m30s cluster ranges=[] ->"},
		{"affinity at the maximum", "    sessionAffinity: 24h\n", "web frontend 10.96.0.10:80/tcp random affinity=24h0m0s cluster ranges=[] ->"},
		{"affinity with maglev", "    algorithm: maglev\n    sessionAffinity: 1s\n", "web frontend 10.96.0.10:80/tcp maglev affinity=1s cluster ranges=[] ->"},
		{"policy in any case", "    trafficPolicy: Local\n", "web frontend 10.96.0.10:80/tcp random affinity=0s local ranges=[] ->"},
		{"policy cluster", "    trafficPolicy: CLUSTER\n", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{"empty source ranges allow all", "    sourceRanges: []\n", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{"null source ranges allow all", "    sourceRanges:\n", "web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] ->"},
		{
			"source ranges, one address, unmasked", "    sourceRanges: [10.1.2.3/8, 203.0.113.7/32]\n",
			"web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[10.1.2.3/8 203.0.113.7/32] ->",
		},
		{
			"states in any case", "    backends:\n      - {address: 10.0.1.2:8080, state: Terminating}\n      - {address: 10.0.2.2:8080, state: MAINTENANCE}\n",
			"web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:8080 w1 terminating, 10.0.2.2:8080 w1 maintenance",
		},
		{
			"null state, weight and local are defaults", "    backends:\n      - {address: 10.0.1.2:8080, state: ~, weight: ~, local: ~}\n",
			"web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:8080 w1 active",
		},
		{
			"every backend in maintenance", "    backends:\n      - {address: 10.0.1.2:8080, state: maintenance}\n",
			"web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:8080 w1 maintenance",
		},
		{
			"local policy with no local backend", "    trafficPolicy: local\n    backends:\n      - {address: 10.0.1.2:8080}\n",
			"web frontend 10.96.0.10:80/tcp random affinity=0s local ranges=[] -> 10.0.1.2:8080 w1 active",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(head + tt.yaml))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if got := describeAll(cfg); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}

	// An IPv6 service with IPv6 source ranges.
	cfg, err := ParseConfig([]byte(`
services:
  - name: web6
    frontend: "[fd00::10]:80"
    sourceRanges: ["fd01::/64"]
    backends: [{address: "[fd00:1::2]:8080", local: true}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describeAll(cfg), "web6 frontend [fd00::10]:80/tcp random affinity=0s cluster ranges=[fd01::/64] -> [fd00:1::2]:8080 w1 active local"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// The Kubernetes form expands to one frontend per address and port.
func TestParseConfigKube(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // describe of each service
	}{
		{
			name: "every service type, dual stack",
			yaml: `
nodeAddresses: [172.18.0.2, "fd01::2"]
services:
  - name: shop
    clusterIPs: [10.96.0.20, "fd00::20"]
    externalIPs: [192.0.2.20]
    loadBalancerIPs: [198.51.100.20, "2001:db8::20"]
    ports:
      - name: http
        protocol: TCP
        port: 80
        targetPort: 8080
        nodePort: 30080
      - {name: dns, protocol: UDP, port: 53, targetPort: 5353}
    externalTrafficPolicy: Local
    internalTrafficPolicy: Cluster
    loadBalancerSourceRanges: [203.0.113.0/24, "2001:db8:1::/48"]
    sessionAffinity: ClientIP
    algorithm: maglev
    endpoints:
      - {address: 10.0.1.2, local: true, weight: 2}
      - {address: 10.0.2.2, state: terminating}
      - {address: 10.0.3.2, state: maintenance, local: true}
      - {address: "fd00:1::2"}
`,
			want: []string{
				"shop:http ClusterIP 10.96.0.20:80/tcp maglev affinity=3h0m0s cluster ranges=[] -> 10.0.1.2:8080 w2 active local, 10.0.2.2:8080 w1 terminating, 10.0.3.2:8080 w1 maintenance local",
				"shop:http ClusterIP [fd00::20]:80/tcp maglev affinity=3h0m0s cluster ranges=[] -> [fd00:1::2]:8080 w1 active",
				"shop:http ExternalIP 192.0.2.20:80/tcp maglev affinity=3h0m0s local ranges=[] -> 10.0.1.2:8080 w2 active local, 10.0.2.2:8080 w1 terminating, 10.0.3.2:8080 w1 maintenance local",
				"shop:http LoadBalancer 198.51.100.20:80/tcp maglev affinity=3h0m0s local ranges=[203.0.113.0/24] -> 10.0.1.2:8080 w2 active local, 10.0.2.2:8080 w1 terminating, 10.0.3.2:8080 w1 maintenance local",
				"shop:http LoadBalancer [2001:db8::20]:80/tcp maglev affinity=3h0m0s local ranges=[2001:db8:1::/48] -> [fd00:1::2]:8080 w1 active",
				"shop:http NodePort 172.18.0.2:30080/tcp maglev affinity=3h0m0s local ranges=[] -> 10.0.1.2:8080 w2 active local, 10.0.2.2:8080 w1 terminating, 10.0.3.2:8080 w1 maintenance local",
				"shop:http NodePort [fd01::2]:30080/tcp maglev affinity=3h0m0s local ranges=[] -> [fd00:1::2]:8080 w1 active",
				"shop:dns ClusterIP 10.96.0.20:53/udp maglev affinity=3h0m0s cluster ranges=[] -> 10.0.1.2:5353 w2 active local, 10.0.2.2:5353 w1 terminating, 10.0.3.2:5353 w1 maintenance local",
				"shop:dns ClusterIP [fd00::20]:53/udp maglev affinity=3h0m0s cluster ranges=[] -> [fd00:1::2]:5353 w1 active",
				"shop:dns ExternalIP 192.0.2.20:53/udp maglev affinity=3h0m0s local ranges=[] -> 10.0.1.2:5353 w2 active local, 10.0.2.2:5353 w1 terminating, 10.0.3.2:5353 w1 maintenance local",
				"shop:dns LoadBalancer 198.51.100.20:53/udp maglev affinity=3h0m0s local ranges=[203.0.113.0/24] -> 10.0.1.2:5353 w2 active local, 10.0.2.2:5353 w1 terminating, 10.0.3.2:5353 w1 maintenance local",
				"shop:dns LoadBalancer [2001:db8::20]:53/udp maglev affinity=3h0m0s local ranges=[2001:db8:1::/48] -> [fd00:1::2]:5353 w1 active",
			},
		},
		{
			name: "one unnamed port, target port defaults to the port, no endpoints",
			yaml: `
services:
  - name: api
    clusterIPs: [10.96.0.30]
    ports: [{port: 443}]
`,
			want: []string{"api ClusterIP 10.96.0.30:443/tcp random affinity=0s cluster ranges=[] ->"},
		},
		{
			name: "lower case as in the plain form, a plain service beside it",
			yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends: [{address: 10.0.1.2:8080}]
  - name: api
    clusterIPs: [10.96.0.30]
    ports: [{port: 443, protocol: tcp, targetPort: 8443}]
    internalTrafficPolicy: local
    sessionAffinity: 1h
    algorithm: maglev
    maglevTableSize: 251
    endpoints: [{address: 10.0.1.2, local: true}, {address: 10.0.2.2}]
`,
			want: []string{
				"web frontend 10.96.0.10:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:8080 w1 active",
				"api ClusterIP 10.96.0.30:443/tcp maglev/251 affinity=1h0m0s local ranges=[] -> 10.0.1.2:8443 w1 active local, 10.0.2.2:8443 w1 active",
			},
		},
		{
			name: "node ports only the families of the cluster IPs",
			yaml: `
nodeAddresses: [172.18.0.2, "fd01::2", 192.168.1.2]
services:
  - name: v4
    clusterIPs: [10.96.0.40]
    ports: [{port: 80, nodePort: 30040}]
    endpoints: [{address: 10.0.1.2}]
`,
			want: []string{
				"v4 ClusterIP 10.96.0.40:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:80 w1 active",
				"v4 NodePort 172.18.0.2:30040/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:80 w1 active",
				"v4 NodePort 192.168.1.2:30040/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:80 w1 active",
			},
		},
		{
			name: "node ports without cluster IPs listen on every node address",
			yaml: `
nodeAddresses: [172.18.0.2, "fd01::2"]
services:
  - name: np
    ports: [{port: 80, nodePort: 30050, targetPort: 8080}]
    endpoints: [{address: 10.0.1.2}, {address: "fd00:1::2"}]
`,
			want: []string{
				"np NodePort 172.18.0.2:30050/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:8080 w1 active",
				"np NodePort [fd01::2]:30050/tcp random affinity=0s cluster ranges=[] -> [fd00:1::2]:8080 w1 active",
			},
		},
		{
			name: "external IPs only; a node address equal to an external IP on another port",
			yaml: `
nodeAddresses: [192.0.2.50]
services:
  - name: ext
    externalIPs: [192.0.2.50]
    ports: [{port: 80, nodePort: 30060}]
    externalTrafficPolicy: local
    endpoints: [{address: 10.0.1.2, local: true}]
`,
			want: []string{
				"ext ExternalIP 192.0.2.50:80/tcp random affinity=0s local ranges=[] -> 10.0.1.2:80 w1 active local",
				"ext NodePort 192.0.2.50:30060/tcp random affinity=0s local ranges=[] -> 10.0.1.2:80 w1 active local",
			},
		},
		{
			name: "source ranges of one family: the other family's load balancer IP admits all, as kube-proxy",
			yaml: `
services:
  - name: lb
    loadBalancerIPs: [198.51.100.30, "2001:db8::30"]
    ports: [{port: 80}]
    loadBalancerSourceRanges: [203.0.113.0/24]
`,
			want: []string{
				"lb LoadBalancer 198.51.100.30:80/tcp random affinity=0s cluster ranges=[203.0.113.0/24] ->",
				"lb LoadBalancer [2001:db8::30]:80/tcp random affinity=0s cluster ranges=[] ->",
			},
		},
		{
			name: "endpoints shared through an anchor",
			yaml: `
services:
  - name: a
    clusterIPs: [10.96.0.60]
    ports: [{port: 80}]
    endpoints: &pods
      - {address: 10.0.1.2, weight: 5}
  - name: b
    clusterIPs: [10.96.0.61]
    ports: [{port: 80, targetPort: 9090}]
    endpoints: *pods
`,
			want: []string{
				"a ClusterIP 10.96.0.60:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:80 w5 active",
				"b ClusterIP 10.96.0.61:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:9090 w5 active",
			},
		},
		{
			name: "only terminating and maintenance endpoints",
			yaml: `
services:
  - name: draining
    clusterIPs: [10.96.0.70]
    ports: [{port: 80}]
    endpoints: [{address: 10.0.1.2, state: terminating}, {address: 10.0.2.2, state: maintenance}]
`,
			want: []string{"draining ClusterIP 10.96.0.70:80/tcp random affinity=0s cluster ranges=[] -> 10.0.1.2:80 w1 terminating, 10.0.2.2:80 w1 maintenance"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if got, want := describeAll(cfg), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			for _, s := range cfg.Services {
				if err := s.Service.Validate(); err != nil {
					t.Errorf("%s: %v", s.Label(), err)
				}
			}
		})
	}
}

// invalidCase is a configuration ParseConfig must refuse, and how.
type invalidCase struct {
	name string
	yaml string
	// msg is the whole message, or a part of it when partial is set.
	msg     string
	partial bool
	line    int
	index   int
	field   string
}

// checkInvalid checks that each configuration is refused with its message
// and a *ConfigError naming its service, field and line, wrapping
// lb.ErrInvalid.
func checkInvalid(t *testing.T, tests []invalidCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseConfig accepted:\n%s", tt.yaml)
			}
			if tt.partial {
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("error %q\ndoes not contain %q", err, tt.msg)
				}
			} else if err.Error() != tt.msg {
				t.Errorf("error %q\nwant       %q", err, tt.msg)
			}
			if !errors.Is(err, lb.ErrInvalid) {
				t.Errorf("error %q does not wrap lb.ErrInvalid", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %q is a %T, want *ConfigError", err, err)
			}
			if ce.Index != tt.index || ce.Field != tt.field {
				t.Errorf("Index, Field = %d, %q; want %d, %q", ce.Index, ce.Field, tt.index, tt.field)
			}
			if tt.line != 0 && ce.Line != tt.line {
				t.Errorf("Line = %d, want %d", ce.Line, tt.line)
			}
		})
	}
}

func TestParseConfigInvalid(t *testing.T) {
	checkInvalid(t, []invalidCase{
		{
			name: "empty file", yaml: "",
			msg: "services: missing: the file is empty (write `services: []` for no services)", index: -1, field: "services",
		},
		{
			name: "only a comment", yaml: "# nothing yet\n",
			msg: "services: missing: the file is empty", partial: true, index: -1, field: "services",
		},
		{
			name: "services null", yaml: "services:\n",
			msg: "services: empty (write `services: []` for no services)", line: 1, index: -1, field: "services",
		},
		{
			name: "unknown top-level field", yaml: "services: []\nservice: []\n",
			msg: "service: unknown field (known: nodeAddresses, prefilter, services)", line: 2, index: -1, field: "service",
		},
		{
			name: "top level is a list", yaml: "- name: web\n",
			msg: "top level: want a mapping with a services key, got a list", line: 1, index: -1, field: "top level",
		},
		{
			name: "services is a mapping", yaml: "services:\n  web: {}\n",
			msg: "services: want a list, got a mapping", line: 2, index: -1, field: "services",
		},
		{
			name: "two documents", yaml: "services: []\n---\nservices: []\n",
			msg: "yaml: more than one document in the file", partial: true, index: -1, field: "yaml",
		},
		{
			name: "yaml syntax", yaml: "services: [\n",
			msg: "yaml: ", partial: true, index: -1, field: "yaml",
		},
		{
			name: "service is a string", yaml: "services:\n  - web\n",
			msg: `services[0]: service: want a mapping with a name and a frontend (or ports), got "web"`, line: 2, index: 0, field: "service",
		},
		{
			name: "missing name", yaml: "services:\n  - frontend: 10.96.0.10:80\n",
			msg: "services[0]: name: missing", line: 2, index: 0, field: "name",
		},
		{
			name: "name is a list", yaml: "services:\n  - name: [a]\n    frontend: 10.96.0.10:80\n",
			msg: "services[0]: name: want a single value, got a list", line: 2, index: 0, field: "name",
		},
		{
			name: "unknown service field named with the service", yaml: `
services:
  - port: 80
    name: web
    frontend: 10.96.0.10:80
`,
			msg: `services[0] "web": port: unknown field (known: name, frontend, protocol, algorithm, maglevTableSize, sessionAffinity, trafficPolicy, sourceRanges, backends)`, line: 3, index: 0, field: "port",
		},
		{
			name: "field given twice", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    frontend: 10.96.0.11:80
`,
			msg: `services[0] "web": frontend: given twice`, line: 5, index: 0, field: "frontend",
		},
		{
			name: "frontend missing", yaml: "services:\n  - name: web\n",
			msg: `services[0] "web": frontend: missing (or write ports, for a Kubernetes-shaped service)`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "frontend without port", yaml: "services:\n  - {name: web, frontend: 10.96.0.10}\n",
			msg: `services[0] "web": frontend "10.96.0.10": missing port`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "frontend host name", yaml: "services:\n  - {name: web, frontend: \"web.local:80\"}\n",
			msg: `services[0] "web": frontend "web.local:80": "web.local" is not an IP address (host names are not resolved)`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "frontend port not a number", yaml: "services:\n  - {name: web, frontend: \"10.96.0.10:http\"}\n",
			msg: `services[0] "web": frontend "10.96.0.10:http": port "http" is not a number from 1 to 65535`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "frontend port too big", yaml: "services:\n  - {name: web, frontend: \"10.96.0.10:65536\"}\n",
			msg: `services[0] "web": frontend "10.96.0.10:65536": port "65536" is not a number from 1 to 65535`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "frontend nonsense", yaml: "services:\n  - {name: web, frontend: banana}\n",
			msg: `services[0] "web": frontend "banana": want address:port, such as 10.0.1.2:8080 or [fd00:1::2]:8080`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "frontend port zero (lb's rule)", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:0\n",
			msg: `services[0] "web": frontend "10.96.0.10:0": port 0 is not allowed`, line: 3, index: 0, field: "frontend",
		},
		{
			name: "IPv4 backend for an IPv6 frontend (lb's rule)", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends: [{address: 10.0.1.2:8080}]
  - name: web6
    frontend: "[fd00::10]:80"
    backends:
      - address: "[fd00:1::2]:8080"
      - address: 10.0.2.2:8080
`,
			msg:  `services[1] "web6": backends[1].address "10.0.2.2:8080": not of the frontend's address family (an IPv4 backend for an IPv6 frontend; write one service per family)`,
			line: 10, index: 1, field: "backends[1].address",
		},
		{
			name: "IPv6 backend for an IPv4 frontend (lb's rule)", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends:
      - address: "[fd00:1::2]:8080"
`,
			msg:  `services[0] "web": backends[0].address "[fd00:1::2]:8080": not of the frontend's address family (an IPv6 backend for an IPv4 frontend; write one service per family)`,
			line: 6, index: 0, field: "backends[0].address",
		},
		{
			name: "IPv6 frontend without brackets", yaml: "services:\n  - {name: web, frontend: \"fd00::10:80\"}\n",
			msg:  `services[0] "web": frontend "fd00::10:80": missing port (an IPv6 address with a port is written in brackets, such as [fd00:1::2]:8080)`,
			line: 2, index: 0, field: "frontend",
		},
		{
			name: "IPv6 frontend in brackets without port", yaml: "services:\n  - {name: web, frontend: \"[fd00::10]\"}\n",
			msg: `services[0] "web": frontend "[fd00::10]": missing port`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "IPv4 frontend in brackets", yaml: "services:\n  - {name: web, frontend: \"[10.96.0.10]:80\"}\n",
			msg: `services[0] "web": frontend "[10.96.0.10]:80": brackets are for IPv6 addresses only: write 10.96.0.10:80`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "IPv6 unquoted", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n  - name: web6\n    frontend: [fd00::10]:80\n",
			msg: `(line 5: an IPv6 address in brackets must be quoted, such as "[fd00::10]:80")`, partial: true, index: -1, field: "yaml",
		},
		{
			name: "IPv6 backend unquoted in a flow mapping", yaml: "services:\n  - {name: web6, frontend: \"[fd00::10]:80\", backends: [{address: [fd00:1::2]:8080}]}\n",
			msg: `(line 2: an IPv6 address in brackets must be quoted, such as "[fd00::10]:80")`, partial: true, index: -1, field: "yaml",
		},
		{
			name: "IPv6 frontend with a zone (lb's rule)", yaml: "services:\n  - {name: web, frontend: \"[fe80::1%eth0]:80\"}\n",
			msg: `services[0] "web": frontend "[fe80::1%eth0]:80": addresses with a zone are not supported`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "IPv4-mapped IPv6 frontend (lb's rule)", yaml: "services:\n  - {name: web, frontend: \"[::ffff:10.96.0.10]:80\"}\n",
			msg: `services[0] "web": frontend "[::ffff:10.96.0.10]:80": write IPv4 addresses in their IPv4 form`, line: 2, index: 0, field: "frontend",
		},
		{
			name: "IPv6 multicast backend (lb's rule)", yaml: `
services:
  - name: web6
    frontend: "[fd00::10]:80"
    backends:
      - address: "[ff02::1]:8080"
`,
			msg: `services[0] "web6": backends[0].address "[ff02::1]:8080": multicast address`, line: 6, index: 0, field: "backends[0].address",
		},
		{
			name: "protocol unknown", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    protocol: sctp\n",
			msg: `services[0] "web": protocol "sctp": want tcp or udp`, line: 4, index: 0, field: "protocol",
		},
		{
			name: "backend without port (the documented example)", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends: [{address: 10.0.1.2:8080}]
  - name: dns
    frontend: 10.96.0.10:53
    protocol: udp
    backends:
      - address: 10.0.1.2
`,
			msg: `services[1] "dns": backends[0].address "10.0.1.2": missing port`, line: 10, index: 1, field: "backends[0].address",
		},
		{
			name: "backend address missing", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - weight: 2\n",
			msg: `services[0] "web": backends[0].address: missing`, line: 5, index: 0, field: "backends[0].address",
		},
		{
			name: "backend unknown field", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends:
      - address: 10.0.1.2:8080
      - address: 10.0.2.2:8080
        wieght: 2
`,
			msg: `services[0] "web": backends[1].wieght: unknown field (known: address, weight, state, local)`, line: 8, index: 0, field: "backends[1].wieght",
		},
		{
			name: "backends not a list", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends: 10.0.1.2:8080\n",
			msg: `services[0] "web": backends: want a list, got "10.0.1.2:8080"`, line: 4, index: 0, field: "backends",
		},
		{
			name: "backend is a string", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends: [10.0.1.2:8080]\n",
			msg: `services[0] "web": backends[0]: want a mapping with an address (and weight, state, local), got "10.0.1.2:8080"`, line: 4, index: 0, field: "backends[0]",
		},
		{
			name: "backend multicast (lb's rule)", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends:
      - address: 10.0.1.2:8080
      - address: 224.0.0.1:8080
`,
			msg: `services[0] "web": backends[1].address "224.0.0.1:8080": multicast address`, line: 7, index: 0, field: "backends[1].address",
		},
		{
			name: "backend port zero (lb's rule)", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - address: 10.0.1.2:0\n",
			msg: `services[0] "web": backends[0].address "10.0.1.2:0": port 0 is not allowed`, line: 5, index: 0, field: "backends[0].address",
		},
		{
			name: "duplicate backend (lb's rule)", yaml: `
services:
  - name: web
    frontend: 10.96.0.10:80
    backends:
      - address: 10.0.1.2:8080
      - address: 10.0.2.2:8080
      - address: 10.0.1.2:8080
`,
			msg: `services[0] "web": backends[2].address "10.0.1.2:8080": duplicate of backends[0]`, line: 8, index: 0, field: "backends[2].address",
		},
		{
			name: "weight zero", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - {address: 10.0.1.2:8080, weight: 0}\n",
			msg: `services[0] "web": backends[0].weight "0": want a whole number from 1 to 1000`, line: 5, index: 0, field: "backends[0].weight",
		},
		{
			name: "weight too big", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - {address: 10.0.1.2:8080, weight: 1001}\n",
			msg: `services[0] "web": backends[0].weight "1001": want a whole number from 1 to 1000`, line: 5, index: 0, field: "backends[0].weight",
		},
		{
			name: "weight negative", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - {address: 10.0.1.2:8080, weight: -1}\n",
			msg: `backends[0].weight "-1": want a whole number from 1 to 1000`, partial: true, line: 5, index: 0, field: "backends[0].weight",
		},
		{
			name: "weight fraction", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - {address: 10.0.1.2:8080, weight: 1.5}\n",
			msg: `backends[0].weight "1.5": want a whole number from 1 to 1000`, partial: true, line: 5, index: 0, field: "backends[0].weight",
		},
		{
			name: "weight quoted", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - {address: 10.0.1.2:8080, weight: \"2\"}\n",
			msg: `backends[0].weight "2": want a whole number from 1 to 1000`, partial: true, line: 5, index: 0, field: "backends[0].weight",
		},
		{
			name: "duplicate name", yaml: `
services:
  - {name: web, frontend: 10.96.0.10:80}
  - {name: web, frontend: 10.96.0.11:80}
`,
			msg: `services[1] "web": name "web": duplicate of services[0]`, line: 4, index: 1, field: "name",
		},
		{
			name: "duplicate frontend", yaml: `
services:
  - {name: web, frontend: 10.96.0.10:80}
  - {name: dns, frontend: 10.96.0.10:53, protocol: udp}
  - {name: web2, frontend: 10.96.0.10:80, protocol: tcp}
`,
			msg: `services[2] "web2": frontend "10.96.0.10:80": tcp is already the frontend of services[0] "web"`, line: 5, index: 2, field: "frontend",
		},
		{
			name: "duplicate IPv6 frontend written two ways", yaml: `
services:
  - {name: web, frontend: "[fd00::10]:80"}
  - {name: web2, frontend: "[FD00:0::0:10]:80"}
`,
			msg: `services[1] "web2": frontend "[fd00::10]:80": tcp is already the frontend of services[0] "web"`, line: 4, index: 1, field: "frontend",
		},
	})
}

// Invalid values of the plain form's fields of issue 3, each below
// "services:\n  - name: web\n    frontend: 10.96.0.10:80\n" (so the
// first field is on line 4).
func TestParseConfigInvalidPlainFields(t *testing.T) {
	const head = "services:\n  - name: web\n    frontend: 10.96.0.10:80\n"
	const svc = `services[0] "web": `
	c := func(name, yaml, field, msg string, line int) invalidCase {
		return invalidCase{name: name, yaml: head + yaml, msg: svc + msg, line: line, index: 0, field: field}
	}
	checkInvalid(t, []invalidCase{
		c("algorithm unknown", "    algorithm: round-robin\n", "algorithm", `algorithm "round-robin": want random or maglev`, 4),
		c("algorithm a list", "    algorithm: [maglev]\n", "algorithm", `algorithm: want a single value, got a list`, 4),
		c("maglev table size a word", "    algorithm: maglev\n    maglevTableSize: big\n", "maglevTableSize",
			`maglevTableSize "big": want a whole number: a prime from 251 to 131071, such as 16381`, 5),
		c("maglev table size quoted", "    algorithm: maglev\n    maglevTableSize: \"16381\"\n", "maglevTableSize",
			`maglevTableSize "16381": want a whole number: a prime from 251 to 131071, such as 16381`, 5),
		c("maglev table size zero", "    algorithm: maglev\n    maglevTableSize: 0\n", "maglevTableSize",
			`maglevTableSize "0": want a whole number: a prime from 251 to 131071, such as 16381`, 5),
		c("maglev table size negative", "    algorithm: maglev\n    maglevTableSize: -16381\n", "maglevTableSize",
			`maglevTableSize "-16381": want a whole number: a prime from 251 to 131071, such as 16381`, 5),
		c("maglev table size a fraction", "    algorithm: maglev\n    maglevTableSize: 16381.5\n", "maglevTableSize",
			`maglevTableSize "16381.5": want a whole number: a prime from 251 to 131071, such as 16381`, 5),
		c("maglev table size beyond 32 bits", "    algorithm: maglev\n    maglevTableSize: 4294967311\n", "maglevTableSize",
			`maglevTableSize "4294967311": want a whole number: a prime from 251 to 131071, such as 16381`, 5),
		c("maglev table size not prime (lb's rule)", "    algorithm: maglev\n    maglevTableSize: 16380\n", "maglevTableSize",
			`maglevTableSize "16380": not a prime`, 5),
		c("maglev table size too small (lb's rule)", "    algorithm: maglev\n    maglevTableSize: 241\n", "maglevTableSize",
			`maglevTableSize "241": want a prime from 251 to 131071`, 5),
		c("maglev table size too large (lb's rule)", "    algorithm: maglev\n    maglevTableSize: 131101\n", "maglevTableSize",
			`maglevTableSize "131101": want a prime from 251 to 131071`, 5),
		c("maglev table size without maglev (lb's rule)", "    maglevTableSize: 16381\n", "maglevTableSize",
			`maglevTableSize "16381": only the maglev algorithm has a table`, 4),
		c("maglev table size with random (lb's rule)", "    algorithm: random\n    maglevTableSize: 16381\n", "maglevTableSize",
			`maglevTableSize "16381": only the maglev algorithm has a table`, 5),
		c("affinity a word", "    sessionAffinity: forever\n", "sessionAffinity",
			`sessionAffinity "forever": want clientIP, none or a duration such as 3h or 10800s`, 4),
		c("affinity without unit", "    sessionAffinity: 10800\n", "sessionAffinity",
			`sessionAffinity "10800": missing unit: write 10800s for seconds, or a duration such as 3h`, 4),
		c("affinity above a day (lb's rule)", "    sessionAffinity: 25h\n", "sessionAffinity",
			`sessionAffinity "25h": want 0 (none) to 24h0m0s`, 4),
		c("affinity negative (lb's rule)", "    sessionAffinity: -1h\n", "sessionAffinity",
			`sessionAffinity "-1h": want 0 (none) to 24h0m0s`, 4),
		c("affinity not whole seconds (lb's rule)", "    sessionAffinity: 1500ms\n", "sessionAffinity",
			`sessionAffinity "1500ms": want whole seconds`, 4),
		c("affinity a mapping", "    sessionAffinity: {clientIP: {timeoutSeconds: 10}}\n", "sessionAffinity",
			`sessionAffinity: want a single value, got a mapping`, 4),
		c("policy unknown", "    trafficPolicy: nodeLocal\n", "trafficPolicy", `trafficPolicy "nodeLocal": want cluster or local`, 4),
		c("source ranges a string", "    sourceRanges: 10.0.0.0/8\n", "sourceRanges", `sourceRanges: want a list, got "10.0.0.0/8"`, 4),
		c("source range not a prefix", "    sourceRanges: [10.0.0.0/8, banana]\n", "sourceRanges[1]",
			`sourceRanges[1] "banana": want a prefix such as 10.0.0.0/8 or fd00::/8`, 4),
		c("source range prefix too long", "    sourceRanges:\n      - 10.0.0.0/8\n      - 10.0.0.0/33\n", "sourceRanges[1]",
			`sourceRanges[1] "10.0.0.0/33": want a prefix such as 10.0.0.0/8 or fd00::/8`, 6),
		c("source range an address", "    sourceRanges: [10.1.2.3]\n", "sourceRanges[0]",
			`sourceRanges[0] "10.1.2.3": missing prefix length (write 10.1.2.3/32 for one address)`, 4),
		c("source range an IPv6 address", "    sourceRanges: [\"fd00::1\"]\n", "sourceRanges[0]",
			`sourceRanges[0] "fd00::1": missing prefix length (write fd00::1/128 for one address)`, 4),
		c("source range a mapping", "    sourceRanges: [{cidr: 10.0.0.0/8}]\n", "sourceRanges[0]",
			`sourceRanges[0]: want a prefix, got a mapping`, 4),
		c("source range IPv4-mapped (lb's rule)", "    sourceRanges: [\"::ffff:10.0.0.0/104\"]\n", "sourceRanges[0]",
			`sourceRanges[0] "::ffff:10.0.0.0/104": write IPv4 prefixes in their IPv4 form`, 4),
		c("source ranges of the other family", "    sourceRanges: [10.0.0.0/8, \"fd00::/8\"]\n", "sourceRanges[1]",
			`sourceRanges[1] "fd00::/8": not of the frontend's address family (IPv4)`, 4),
		c("backend state unknown", "    backends:\n      - address: 10.0.1.2:8080\n        state: draining\n", "backends[0].state",
			`backends[0].state "draining": want active, terminating or maintenance`, 6),
		c("backend state a list", "    backends:\n      - {address: 10.0.1.2:8080, state: [active]}\n", "backends[0].state",
			`backends[0].state: want a single value, got a list`, 5),
		c("backend local yes", "    backends:\n      - {address: 10.0.1.2:8080, local: yes}\n", "backends[0].local",
			`backends[0].local "yes": want true or false`, 5),
		c("backend local quoted", "    backends:\n      - {address: 10.0.1.2:8080, local: \"true\"}\n", "backends[0].local",
			`backends[0].local "true": want true or false`, 5),
		c("backend local a number", "    backends:\n      - {address: 10.0.1.2:8080, local: 1}\n", "backends[0].local",
			`backends[0].local "1": want true or false`, 5),
		c("backend local a list", "    backends:\n      - {address: 10.0.1.2:8080, local: [true]}\n", "backends[0].local",
			`backends[0].local: want true or false`, 5),
		c("a Kubernetes field with a frontend", "    externalTrafficPolicy: Local\n", "externalTrafficPolicy",
			`externalTrafficPolicy: only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write trafficPolicy`, 4),
		c("endpoints with a frontend", "    endpoints: []\n", "endpoints",
			`endpoints: only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write backends`, 4),
		c("clusterIPs with a frontend", "    clusterIPs: [10.96.0.11]\n", "clusterIPs",
			`clusterIPs: only in the Kubernetes form (a service with ports instead of a frontend)`, 4),
		c("loadBalancerSourceRanges with a frontend", "    loadBalancerSourceRanges: [10.0.0.0/8]\n", "loadBalancerSourceRanges",
			`loadBalancerSourceRanges: only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write sourceRanges`, 4),
		c("frontend and ports", "    ports: [{port: 80}]\n", "ports",
			`ports: a service has a frontend or ports (the Kubernetes form), not both: write one service for each`, 4),
	})
}

// Invalid Kubernetes-shaped services. Each YAML starts with
// "nodeAddresses: [172.18.0.2]\nservices:\n  - name: shop\n" (so the
// service's first field is on line 4).
func TestParseConfigInvalidKube(t *testing.T) {
	const head = "nodeAddresses: [172.18.0.2]\nservices:\n  - name: shop\n"
	const svc = `services[0] "shop": `
	c := func(name, yaml, field, msg string, line int) invalidCase {
		return invalidCase{name: name, yaml: head + yaml, msg: svc + msg, line: line, index: 0, field: field}
	}
	const cip = "    clusterIPs: [10.96.0.20]\n"
	const port80 = "    ports: [{port: 80}]\n"
	checkInvalid(t, []invalidCase{
		// Fields of the plain form.
		c("backends", cip+port80+"    backends: [{address: 10.0.1.2:8080}]\n", "backends",
			`backends: with ports, write endpoints (addresses without a port: the port is each port's targetPort)`, 6),
		c("trafficPolicy", cip+port80+"    trafficPolicy: local\n", "trafficPolicy",
			`trafficPolicy: with ports, write externalTrafficPolicy and internalTrafficPolicy`, 6),
		c("sourceRanges", cip+port80+"    sourceRanges: [10.0.0.0/8]\n", "sourceRanges",
			`sourceRanges: with ports, write loadBalancerSourceRanges`, 6),
		c("protocol", cip+port80+"    protocol: udp\n", "protocol", `protocol: with ports, each port has its own protocol`, 6),
		c("unknown field", cip+port80+"    type: LoadBalancer\n", "type",
			`type: unknown field (known: name, clusterIPs, externalIPs, loadBalancerIPs, ports, algorithm, maglevTableSize, sessionAffinity, `+
				`externalTrafficPolicy, internalTrafficPolicy, loadBalancerSourceRanges, endpoints)`, 6),

		// Addresses.
		c("cluster IPs a string", "    clusterIPs: 10.96.0.20\n"+port80, "clusterIPs", `clusterIPs: want a list, got "10.96.0.20"`, 4),
		c("cluster IP with a port", "    clusterIPs: [10.96.0.20:80]\n"+port80, "clusterIPs[0]",
			`clusterIPs[0] "10.96.0.20:80": want an address without a port: the ports come from the service's ports`, 4),
		c("cluster IP a prefix", "    clusterIPs: [10.96.0.0/24]\n"+port80, "clusterIPs[0]",
			`clusterIPs[0] "10.96.0.0/24": want an address, not a prefix`, 4),
		c("cluster IP a host name", "    clusterIPs: [shop.local]\n"+port80, "clusterIPs[0]",
			`clusterIPs[0] "shop.local": not an IP address (host names are not resolved)`, 4),
		c("cluster IP a mapping", "    clusterIPs: [{ip: 10.96.0.20}]\n"+port80, "clusterIPs[0]",
			`clusterIPs[0]: want an IP address, got a mapping`, 4),
		c("cluster IP null", "    clusterIPs: [~]\n"+port80, "clusterIPs[0]", `clusterIPs[0]: want an IP address, got nothing`, 4),
		c("cluster IP multicast (lb's rule)", "    clusterIPs:\n      - 10.96.0.20\n      - 224.0.0.1\n"+port80, "clusterIPs[1]",
			`clusterIPs[1] "224.0.0.1": multicast address`, 6),
		c("external IP unspecified (lb's rule)", cip+"    externalIPs: [0.0.0.0]\n"+port80, "externalIPs[0]",
			`externalIPs[0] "0.0.0.0": unspecified address`, 5),
		c("load balancer IP with a zone (lb's rule)", "    loadBalancerIPs: [\"fe80::1%eth0\"]\n"+port80, "loadBalancerIPs[0]",
			`loadBalancerIPs[0] "fe80::1%eth0": addresses with a zone are not supported`, 4),
		c("IPv4-mapped external IP (lb's rule)", "    externalIPs: [\"::ffff:192.0.2.1\"]\n"+port80, "externalIPs[0]",
			`externalIPs[0] "::ffff:192.0.2.1": write IPv4 addresses in their IPv4 form`, 4),
		c("an address in two lists", cip+"    loadBalancerIPs: [198.51.100.1, 10.96.0.20]\n"+port80, "loadBalancerIPs[1]",
			`loadBalancerIPs[1] "10.96.0.20": already listed in clusterIPs[0]`, 5),
		c("an address twice in one list", "    externalIPs: [\"fd00::1\", \"FD00::0:1\"]\n"+port80, "externalIPs[1]",
			`externalIPs[1] "FD00::0:1": already listed in externalIPs[0]`, 4),
		c("no frontend", port80+"    endpoints: [{address: 10.0.1.2}]\n", "clusterIPs",
			`clusterIPs: missing: the service has no frontend (give clusterIPs, externalIPs, loadBalancerIPs or a nodePort)`, 3),

		// Ports.
		c("ports empty", cip+"    ports: []\n", "ports", `ports: want at least one port, such as {port: 80, targetPort: 8080}`, 5),
		c("ports null", cip+"    ports:\n", "ports", `ports: want at least one port, such as {port: 80, targetPort: 8080}`, 5),
		c("ports a mapping", cip+"    ports: {port: 80}\n", "ports", `ports: want a list, got a mapping`, 5),
		c("port a number", cip+"    ports: [80]\n", "ports[0]",
			`ports[0]: want a mapping with a port (and name, protocol, targetPort, nodePort), got "80"`, 5),
		c("port missing", cip+"    ports: [{name: http, targetPort: 8080}]\n", "ports[0].port", `ports[0].port: missing`, 5),
		c("port zero", cip+"    ports: [{port: 0}]\n", "ports[0].port", `ports[0].port "0": want a port number from 1 to 65535`, 5),
		c("port too big", cip+"    ports: [{port: 65536}]\n", "ports[0].port", `ports[0].port "65536": want a port number from 1 to 65535`, 5),
		c("port a name", cip+"    ports:\n      - port: http\n", "ports[0].port", `ports[0].port "http": want a port number from 1 to 65535`, 6),
		c("target port named", cip+"    ports: [{port: 80, targetPort: http}]\n", "ports[0].targetPort",
			`ports[0].targetPort "http": want a port number from 1 to 65535 (named target ports are not resolved: write the endpoints' port number)`, 5),
		c("target port zero", cip+"    ports: [{port: 80, targetPort: 0}]\n", "ports[0].targetPort",
			`ports[0].targetPort "0": want a port number from 1 to 65535`, 5),
		c("node port too big", cip+"    ports: [{port: 80, nodePort: 99999}]\n", "ports[0].nodePort",
			`ports[0].nodePort "99999": want a port number from 1 to 65535`, 5),
		c("protocol unknown", cip+"    ports: [{port: 80, protocol: SCTP}]\n", "ports[0].protocol",
			`ports[0].protocol "SCTP": want TCP or UDP`, 5),
		c("port field unknown", cip+"    ports: [{port: 80, appProtocol: http}]\n", "ports[0].appProtocol",
			`ports[0].appProtocol: unknown field (known: name, protocol, port, targetPort, nodePort)`, 5),
		c("several ports, one unnamed", cip+"    ports:\n      - {name: http, port: 80}\n      - {port: 443}\n", "ports[1].name",
			`ports[1].name: missing: a service with several ports names each, as Kubernetes does`, 7),
		c("port name twice", cip+"    ports:\n      - {name: http, port: 80}\n      - {name: http, port: 443}\n", "ports[1].name",
			`ports[1].name "http": duplicate of ports[0]`, 7),
		c("port twice for one protocol", cip+"    ports:\n      - {name: a, port: 80}\n      - {name: b, port: 80, protocol: tcp}\n", "ports[1].port",
			`ports[1].port "80": ports[0] already serves 80/tcp`, 7),
		c("node port twice for one protocol", cip+"    ports:\n      - {name: a, port: 80, nodePort: 30080}\n      - {name: b, port: 81, nodePort: 30080}\n",
			"ports[1].nodePort", `ports[1].nodePort "30080": ports[0] already has node port 30080/tcp`, 7),
		c("node port equal to a port on a node address that is also an external IP",
			"    externalIPs: [172.18.0.2]\n    ports:\n      - {name: a, port: 80}\n      - {name: b, port: 81, nodePort: 80}\n",
			"ports[1].nodePort", `ports[1].nodePort "80": on nodeAddresses[0] it makes 172.18.0.2:80/tcp, which externalIPs[0] with ports[0] already is`, 7),

		// Node ports.
		c("node port of a family with no node address", "    clusterIPs: [\"fd00::20\"]\n    ports: [{port: 80, nodePort: 30080}]\n",
			"ports[0].nodePort", `ports[0].nodePort "30080": nodeAddresses has no IPv6 address, the family of the service's clusterIPs`, 5),

		// Policies and ranges.
		c("external policy unknown", cip+port80+"    externalTrafficPolicy: Global\n", "externalTrafficPolicy",
			`externalTrafficPolicy "Global": want cluster or local`, 6),
		c("internal policy unknown", cip+port80+"    internalTrafficPolicy: [Local]\n", "internalTrafficPolicy",
			`internalTrafficPolicy: want a single value, got a list`, 6),
		c("source ranges without load balancer IPs", cip+port80+"    loadBalancerSourceRanges: [10.0.0.0/8]\n", "loadBalancerSourceRanges",
			`loadBalancerSourceRanges: applies to loadBalancerIPs only, and the service has none (node ports and external IPs are not restricted)`, 6),
		c("source range not a prefix", "    loadBalancerIPs: [198.51.100.1]\n"+port80+"    loadBalancerSourceRanges: [10.0.0.0/8, 10.0.0.1]\n",
			"loadBalancerSourceRanges[1]", `loadBalancerSourceRanges[1] "10.0.0.1": missing prefix length (write 10.0.0.1/32 for one address)`, 6),

		// Fields lb checks, through Expand.
		c("affinity above a day (lb's rule)", cip+port80+"    sessionAffinity: 48h\n", "sessionAffinity",
			`sessionAffinity "48h": want 0 (none) to 24h0m0s`, 6),
		c("maglev table size not prime (lb's rule)", cip+port80+"    algorithm: maglev\n    maglevTableSize: 1000\n", "maglevTableSize",
			`maglevTableSize "1000": not a prime`, 7),
		c("maglev table size without maglev (lb's rule)", cip+port80+"    maglevTableSize: 16381\n", "maglevTableSize",
			`maglevTableSize "16381": only the maglev algorithm has a table`, 6),
		c("algorithm unknown", cip+port80+"    algorithm: leastconn\n", "algorithm", `algorithm "leastconn": want random or maglev`, 6),

		// Endpoints.
		c("endpoints a mapping", cip+port80+"    endpoints: {address: 10.0.1.2}\n", "endpoints", `endpoints: want a list, got a mapping`, 6),
		c("endpoint a string", cip+port80+"    endpoints: [10.0.1.2]\n", "endpoints[0]",
			`endpoints[0]: want a mapping with an address (and weight, state, local), got "10.0.1.2"`, 6),
		c("endpoint with a port", cip+port80+"    endpoints:\n      - address: 10.0.1.2:8080\n", "endpoints[0].address",
			`endpoints[0].address "10.0.1.2:8080": want an address without a port: the port is each port's targetPort`, 7),
		c("endpoint address missing", cip+port80+"    endpoints:\n      - {weight: 2}\n", "endpoints[0].address",
			`endpoints[0].address: missing`, 7),
		c("endpoint address a list", cip+port80+"    endpoints:\n      - {address: [10.0.1.2]}\n", "endpoints[0].address",
			`endpoints[0].address: want an IP address, got a list`, 7),
		c("endpoint multicast (lb's rule)", cip+port80+"    endpoints:\n      - {address: 239.1.1.1}\n", "endpoints[0].address",
			`endpoints[0].address "239.1.1.1": multicast address`, 7),
		c("endpoint broadcast (lb's rule)", cip+port80+"    endpoints:\n      - {address: 255.255.255.255}\n", "endpoints[0].address",
			`endpoints[0].address "255.255.255.255": broadcast address`, 7),
		c("endpoint twice", cip+port80+"    endpoints:\n      - {address: 10.0.1.2}\n      - {address: 10.0.1.2, weight: 3}\n", "endpoints[1].address",
			`endpoints[1].address "10.0.1.2": duplicate of endpoints[0]`, 8),
		c("endpoint of a family without a frontend", cip+port80+"    endpoints:\n      - {address: 10.0.1.2}\n      - {address: \"fd00:1::2\"}\n",
			"endpoints[1].address",
			`endpoints[1].address "fd00:1::2": an IPv6 endpoint, but the service has no IPv6 frontend (in clusterIPs, externalIPs, loadBalancerIPs or nodeAddresses)`, 8),
		c("endpoint weight zero", cip+port80+"    endpoints:\n      - {address: 10.0.1.2, weight: 0}\n", "endpoints[0].weight",
			`endpoints[0].weight "0": want a whole number from 1 to 1000`, 7),
		c("endpoint state unknown", cip+port80+"    endpoints:\n      - {address: 10.0.1.2, state: ready}\n", "endpoints[0].state",
			`endpoints[0].state "ready": want active, terminating or maintenance`, 7),
		c("endpoint local a word", cip+port80+"    endpoints:\n      - {address: 10.0.1.2, local: no}\n", "endpoints[0].local",
			`endpoints[0].local "no": want true or false`, 7),
		c("endpoint field unknown", cip+port80+"    endpoints:\n      - {address: 10.0.1.2, nodeName: n1}\n", "endpoints[0].nodeName",
			`endpoints[0].nodeName: unknown field (known: address, weight, state, local)`, 7),
	})

	checkInvalid(t, []invalidCase{
		{
			name: "node port without node addresses",
			yaml: "services:\n  - name: shop\n    clusterIPs: [10.96.0.20]\n    ports:\n      - {port: 80, nodePort: 30080}\n",
			msg:  `services[0] "shop": ports[0].nodePort "30080": no nodeAddresses to listen on: list this node's addresses under nodeAddresses at the top of the file`,
			line: 5, index: 0, field: "ports[0].nodePort",
		},
		{
			name: "node addresses a prefix, as kube-proxy's --nodeport-addresses",
			yaml: "nodeAddresses: [172.18.0.0/16]\nservices: []\n",
			msg:  `nodeAddresses[0] "172.18.0.0/16": want one of this node's addresses, not a prefix: list each address the node ports listen on`,
			line: 1, index: -1, field: "nodeAddresses[0]",
		},
		{
			name: "node address twice",
			yaml: "nodeAddresses:\n  - 172.18.0.2\n  - \"fd01::2\"\n  - 172.18.0.2\nservices: []\n",
			msg:  `nodeAddresses[2] "172.18.0.2": duplicate of nodeAddresses[0]`, line: 4, index: -1, field: "nodeAddresses[2]",
		},
		{
			name: "node address with a port",
			yaml: "nodeAddresses: [\"172.18.0.2:30080\"]\nservices: []\n",
			msg:  `nodeAddresses[0] "172.18.0.2:30080": want an address without a port: the ports come from the service's ports`,
			line: 1, index: -1, field: "nodeAddresses[0]",
		},
		{
			name: "node address unspecified (lb's rule)",
			yaml: "nodeAddresses: [\"::\"]\nservices: []\n",
			msg:  `nodeAddresses[0] "::": unspecified address`, line: 1, index: -1, field: "nodeAddresses[0]",
		},
		{
			name: "node addresses a string",
			yaml: "nodeAddresses: 172.18.0.2\nservices: []\n",
			msg:  `nodeAddresses: want a list, got "172.18.0.2"`, line: 1, index: -1, field: "nodeAddresses",
		},
		{
			name: "a cluster IP that is another service's frontend",
			yaml: `
services:
  - {name: web, frontend: 10.96.0.10:80}
  - name: shop
    clusterIPs: [10.96.0.30, 10.96.0.10]
    ports: [{name: http, port: 80}]
`,
			msg:  `services[1] "shop": clusterIPs[1] "10.96.0.10": 10.96.0.10:80/tcp (ports[0]) is already a frontend of services[0] "web"`,
			line: 5, index: 1, field: "clusterIPs[1]",
		},
		{
			name: "a frontend that is another Kubernetes service's node port",
			yaml: `
nodeAddresses: [172.18.0.2]
services:
  - name: shop
    clusterIPs: [10.96.0.30]
    ports: [{port: 80, nodePort: 30080}]
  - name: web
    frontend: 172.18.0.2:30080
`,
			msg:  `services[1] "web": frontend "172.18.0.2:30080": tcp is already the frontend of services[0] "shop"`,
			line: 8, index: 1, field: "frontend",
		},
		{
			name: "two Kubernetes services with one node port",
			yaml: `
nodeAddresses: [172.18.0.2]
services:
  - name: shop
    clusterIPs: [10.96.0.30]
    ports: [{port: 80, nodePort: 30080}]
  - name: cart
    clusterIPs: [10.96.0.31]
    ports: [{port: 80, nodePort: 30080}]
`,
			msg:  `services[1] "cart": ports[0].nodePort "30080": 172.18.0.2:30080/tcp (nodeAddresses[0]) is already a frontend of services[0] "shop"`,
			line: 9, index: 1, field: "ports[0].nodePort",
		},
		{
			name: "a plain service and a Kubernetes one with one name",
			yaml: `
services:
  - {name: shop, frontend: 10.96.0.10:80}
  - name: shop
    clusterIPs: [10.96.0.30]
    ports: [{port: 80}]
`,
			msg:  `services[1] "shop": name "shop": duplicate of services[0]`,
			line: 4, index: 1, field: "name",
		},
		{
			name: "neither frontend nor ports, with Kubernetes fields",
			yaml: "services:\n  - name: shop\n    clusterIPs: [10.96.0.30]\n",
			msg:  `services[0] "shop": frontend: missing (or write ports, for a Kubernetes-shaped service)`,
			line: 2, index: 0, field: "frontend",
		},
		{
			name: "neither frontend nor ports, with an unknown field",
			yaml: "services:\n  - name: shop\n    port: 80\n",
			msg:  `services[0] "shop": port: unknown field (known: name, frontend, protocol, algorithm, maglevTableSize, sessionAffinity, trafficPolicy, sourceRanges, backends, clusterIPs, externalIPs, loadBalancerIPs, ports, externalTrafficPolicy, internalTrafficPolicy, loadBalancerSourceRanges, endpoints)`,
			line: 3, index: 0, field: "port",
		},
	})
}

// A service lb cannot hold at all is refused while parsing, wrapping
// lb.ErrCapacity rather than lb.ErrInvalid.
func TestParseConfigCapacity(t *testing.T) {
	var b strings.Builder
	b.WriteString("services:\n  - name: huge\n    frontend: 10.96.0.10:80\n    backends:\n")
	for i := range 70 {
		fmt.Fprintf(&b, "      - {address: 10.0.%d.%d:8080, weight: 1000}\n", i/200, i%200+1)
	}
	_, err := ParseConfig([]byte(b.String()))
	if !errors.Is(err, lb.ErrCapacity) {
		t.Fatalf("got %v, want an error wrapping lb.ErrCapacity", err)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Index != 0 || ce.Name != "huge" || ce.Field != "backends" {
		t.Fatalf("got %#v, want services[0] \"huge\": backends", ce)
	}
	if want := `services[0] "huge": backends: weights add up to 70000`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
}

// The same in the Kubernetes form, also when the endpoints in maintenance
// (which Expand leaves out and the configuration adds back) are what
// goes over.
func TestParseConfigCapacityKube(t *testing.T) {
	for _, maintenance := range []int{0, 10} {
		var b strings.Builder
		b.WriteString("services:\n  - name: huge\n    clusterIPs: [10.96.0.10]\n    ports: [{port: 80}]\n    endpoints:\n")
		for i := range 70 {
			state := "active"
			if i < maintenance {
				state = "maintenance"
			}
			fmt.Fprintf(&b, "      - {address: 10.0.%d.%d, weight: 1000, state: %s}\n", i/200, i%200+1, state)
		}
		_, err := ParseConfig([]byte(b.String()))
		if !errors.Is(err, lb.ErrCapacity) {
			t.Fatalf("%d in maintenance: got %v, want an error wrapping lb.ErrCapacity", maintenance, err)
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Index != 0 || ce.Name != "huge" || ce.Field != "endpoints" || ce.Line != 6 {
			t.Fatalf("%d in maintenance: got %#v, want services[0] \"huge\": endpoints on line 6", maintenance, ce)
		}
		if want := `services[0] "huge": endpoints: weights add up to 70000`; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q does not start with %q", err, want)
		}
	}
}

func TestConfigAccessors(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
services:
  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}
  - {name: dns, frontend: 10.96.0.10:53, protocol: udp}
`))
	if err != nil {
		t.Fatal(err)
	}
	wantSvcs := []lb.Service{
		{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}},
		{Frontend: frontend("10.96.0.10:53/udp")},
	}
	if got := cfg.LBServices(); !reflect.DeepEqual(got, wantSvcs) {
		t.Errorf("LBServices = %+v, want %+v", got, wantSvcs)
	}
	wantNames := map[lb.Frontend]string{frontend("10.96.0.10:80/tcp"): "web", frontend("10.96.0.10:53/udp"): "dns"}
	if got := cfg.Names(); !reflect.DeepEqual(got, wantNames) {
		t.Errorf("Names = %v, want %v", got, wantNames)
	}
}

// Every frontend of a Kubernetes-shaped service maps back to the service,
// with its port's name as kube-proxy writes a service port.
func TestConfigAccessorsKube(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
nodeAddresses: [172.18.0.2, "fd01::2"]
services:
  - {name: web, frontend: 10.96.0.10:80}
  - name: shop
    clusterIPs: [10.96.0.20]
    loadBalancerIPs: [198.51.100.20]
    ports:
      - {name: http, port: 80, nodePort: 30080}
      - {name: dns, port: 53, protocol: UDP}
    loadBalancerSourceRanges: [203.0.113.0/24]
  - name: api
    externalIPs: ["2001:db8::1"]
    ports: [{port: 443}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("fd01::2")}; !reflect.DeepEqual(cfg.NodeAddresses, want) {
		t.Errorf("NodeAddresses = %v, want %v", cfg.NodeAddresses, want)
	}
	wantNames := map[lb.Frontend]string{
		frontend("10.96.0.10:80/tcp"):     "web",
		frontend("10.96.0.20:80/tcp"):     "shop:http",
		frontend("198.51.100.20:80/tcp"):  "shop:http",
		frontend("172.18.0.2:30080/tcp"):  "shop:http",
		frontend("10.96.0.20:53/udp"):     "shop:dns",
		frontend("198.51.100.20:53/udp"):  "shop:dns",
		frontend("[2001:db8::1]:443/tcp"): "api",
	}
	if got := cfg.Names(); !reflect.DeepEqual(got, wantNames) {
		t.Errorf("Names = %v\nwant %v", got, wantNames)
	}
	if n := len(cfg.LBServices()); n != len(wantNames) {
		t.Errorf("LBServices has %d services, want %d", n, len(wantNames))
	}
	by := cfg.ByFrontend()
	for fe, typ := range map[string]FrontendType{
		"10.96.0.10:80/tcp": TypeFrontend, "10.96.0.20:80/tcp": TypeClusterIP, "198.51.100.20:53/udp": TypeLoadBalancer,
		"172.18.0.2:30080/tcp": TypeNodePort, "[2001:db8::1]:443/tcp": TypeExternalIP,
	} {
		s, ok := by[frontend(fe)]
		if !ok || s.Type != typ || s.Service.Frontend != frontend(fe) {
			t.Errorf("ByFrontend()[%s] = %+v, %v; want type %s", fe, s, ok, typ)
		}
	}
	if got := by[frontend("198.51.100.20:80/tcp")].Service.SourceRanges; len(got) != 1 || got[0] != netip.MustParsePrefix("203.0.113.0/24") {
		t.Errorf("the load balancer frontend has source ranges %v", got)
	}
	if got := by[frontend("10.96.0.20:80/tcp")].Service.SourceRanges; len(got) != 0 {
		t.Errorf("the cluster IP frontend has source ranges %v", got)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lb.yaml")
	if err := os.WriteFile(path, []byte("services:\n  - name: web\n    frontend: 10.96.0.10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	want := path + `:3: services[0] "web": frontend "10.96.0.10": missing port`
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig = %v\nwant %s", err, want)
	}

	// An error lb finds in a Kubernetes-shaped service, through Expand,
	// names the file's line of the field.
	if err := os.WriteFile(path, []byte("services:\n  - name: shop\n    clusterIPs: [10.96.0.20]\n    ports: [{port: 80}]\n    sessionAffinity: 30h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(path)
	want = path + `:5: services[0] "shop": sessionAffinity "30h": want 0 (none) to 24h0m0s`
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig = %v\nwant %s", err, want)
	}
	if !errors.Is(err, lb.ErrInvalid) {
		t.Errorf("%v does not wrap lb.ErrInvalid", err)
	}
	if !errors.Is(err, lb.ErrInvalid) {
		t.Errorf("%v does not wrap lb.ErrInvalid", err)
	}

	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": services: missing") {
		t.Errorf("LoadConfig of an empty file = %v, want %s: services: missing...", err, path)
	}

	_, err = LoadConfig(filepath.Join(dir, "absent.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig of a missing file = %v, want os.ErrNotExist", err)
	}
}

// Every accepted configuration is one lb accepts: parsing never lets
// through what Sync would refuse.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("services:\n  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080, weight: 2}]}\n"))
	f.Add([]byte("services: []\n"))
	f.Add([]byte("services:\n  - name: x\n    frontend: 1.2.3.4:5\n    protocol: udp\n"))
	f.Add([]byte("services:\n  - {name: w6, frontend: \"[fd00::10]:80\", backends: [{address: \"[fd00:1::2]:8080\"}]}\n"))
	f.Add([]byte("services:\n  - {name: mix, frontend: \"[fd00::10]:80\", backends: [{address: 10.0.1.2:8080}]}\n"))
	f.Add([]byte("services:\n  - {name: m, frontend: 10.96.0.10:80, algorithm: maglev, maglevTableSize: 251, sessionAffinity: 3h, " +
		"trafficPolicy: local, sourceRanges: [10.0.0.0/8], backends: [{address: 10.0.1.2:8080, state: maintenance, local: true}]}\n"))
	f.Add([]byte("nodeAddresses: [172.18.0.2, \"fd01::2\"]\nservices:\n  - name: k\n    clusterIPs: [10.96.0.20, \"fd00::20\"]\n" +
		"    loadBalancerIPs: [198.51.100.1]\n    externalIPs: [192.0.2.1]\n    ports: [{name: a, port: 80, targetPort: 8080, nodePort: 30080}, {name: b, port: 53, protocol: UDP}]\n" +
		"    loadBalancerSourceRanges: [203.0.113.0/24]\n    externalTrafficPolicy: Local\n    sessionAffinity: ClientIP\n" +
		"    endpoints: [{address: 10.0.1.2, local: true}, {address: \"fd00:1::2\", state: terminating}, {address: 10.0.2.2, state: maintenance}]\n"))
	f.Add([]byte("prefilter: [192.0.2.0/24, 198.51.100.66, \"2001:db8::/32\"]\nservices:\n  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, lb.ErrInvalid) && !errors.Is(err, lb.ErrCapacity) {
				t.Fatalf("error %q wraps neither lb.ErrInvalid nor lb.ErrCapacity", err)
			}
			return
		}
		// The prefilter is one policy.SetPrefilter takes as written (no
		// prefix it would mask, none twice), and spares every backend.
		prefixes := map[netip.Prefix]bool{}
		for _, p := range cfg.Prefilter {
			if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" || prefixes[p] {
				t.Fatalf("accepted prefilter prefix %v (of %v)", p, cfg.Prefilter)
			}
			prefixes[p] = true
			for _, s := range cfg.Services {
				for _, b := range s.Service.Backends {
					if p.Contains(b.Address.Addr()) {
						t.Fatalf("accepted prefilter prefix %v, which contains backend %s", p, b.Address)
					}
				}
			}
		}
		seen := map[lb.Frontend]bool{}
		for _, s := range cfg.Services {
			if err := s.Service.Validate(); err != nil {
				t.Fatalf("accepted a service lb refuses: %v", err)
			}
			if s.Name == "" || seen[s.Service.Frontend] {
				t.Fatalf("accepted an unnamed or duplicate service %+v", s)
			}
			if rs := s.Service.SourceRanges; len(rs) > 0 && !hasFamily(rs, s.Service.Frontend.Address.Addr()) {
				t.Fatalf("accepted source ranges %v that refuse every client of %s", rs, s.Service.Frontend)
			}
			seen[s.Service.Frontend] = true
		}
	})
}

// The example in doc.go is a valid configuration, and the errors doc.go
// shows are the ones its mistakes give.
func TestDocExample(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	for line := range strings.Lines(string(src)) {
		switch {
		case strings.HasPrefix(line, "//\tnodeAddresses:"):
			in = true
		case in && !strings.HasPrefix(line, "//\t"):
			in = false
		}
		if in {
			lines = append(lines, strings.TrimPrefix(line, "//\t"))
		}
		if !in && len(lines) > 0 {
			break
		}
	}
	example := strings.Join(lines, "")
	cfg, err := ParseConfig([]byte(example))
	if err != nil {
		t.Fatalf("the example in doc.go: %v\n%s", err, example)
	}
	if len(cfg.Services) != 3+10 {
		t.Errorf("the example has %d frontends, want 13:\n%s", len(cfg.Services), describeAll(cfg))
	}

	for _, m := range []struct{ old, new string }{
		{"      - address: 10.0.1.2:5353\n", "      - address: 10.0.1.2\n"},
		{"      - address: \"[fd00:1::2]:8080\"\n", "      - address: 10.0.1.2:8080\n"},
		{"maglevTableSize: 16381", "maglevTableSize: 16380"},
		{"{name: dns, protocol: UDP", "{protocol: UDP"},
		{"prefilter: [203.0.113.66,", "prefilter: [203.0.113.266,"},
		{"198.51.100.0/24,", "10.0.0.0/8,"},
	} {
		if !strings.Contains(example, m.old) {
			t.Fatalf("the example has no %q", m.old)
		}
		_, err := ParseConfig([]byte(strings.Replace(example, m.old, m.new, 1)))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("with %q: %v, want a *ConfigError", m.new, err)
		}
		if want := fmt.Sprintf("//\tlb.yaml:%d: %s\n", ce.Line, err); !strings.Contains(string(src), want) {
			t.Errorf("doc.go does not show the error of %q:\n%s", m.new, want)
		}
	}
}

// The top-level prefilter: prefixes of both families, a bare address as
// its one-address prefix, in the order of the file; absent, null and []
// all mean an empty deny list.
func TestParseConfigPrefilter(t *testing.T) {
	const svcs = "services:\n  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"absent", svcs, nil},
		{"null", "prefilter:\n" + svcs, nil},
		{"empty", "prefilter: []\n" + svcs, nil},
		{
			"prefixes and addresses",
			`prefilter:
  - 203.0.113.0/24
  - 198.51.100.66
  - "2001:db8:bad::/48"
  - 2001:db8::66
  - 0.0.0.0/0
` + "services:\n  - {name: web6, frontend: \"[fd00::10]:80\", backends: [{address: \"[fd00:1::2]:8080\"}]}\n",
			[]string{"203.0.113.0/24", "198.51.100.66/32", "2001:db8:bad::/48", "2001:db8::66/128", "0.0.0.0/0"},
		},
		{"after services, flow style", svcs + "prefilter: [192.0.2.1, 192.0.2.0/24]\n", []string{"192.0.2.1/32", "192.0.2.0/24"}},
		{
			// Overlapping prefixes are not duplicates; a prefix next to a
			// backend's address is not one that contains it.
			"overlapping, next to a backend", "prefilter: [10.0.0.0/24, 10.0.0.128/25, 10.0.1.3, 10.0.1.0/31]\n" + svcs,
			[]string{"10.0.0.0/24", "10.0.0.128/25", "10.0.1.3/32", "10.0.1.0/31"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range cfg.Prefilter {
				got = append(got, p.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Prefilter = %v, want %v", got, tt.want)
			}
			if len(cfg.Services) == 0 {
				t.Errorf("no services parsed")
			}
		})
	}
}

func TestParseConfigInvalidPrefilter(t *testing.T) {
	const svcs = "services:\n  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}\n"
	const list = "prefilter:\n  - 192.0.2.0/24\n  - 198.51.100.66\n  - \"2001:db8:bad::/48\"\n"
	c := func(name, item, field, msg string) invalidCase {
		// The bad value is prefilter[3], on line 5.
		return invalidCase{name: name, yaml: list + "  - " + item + "\n" + svcs, msg: field + msg, line: 5, index: -1, field: field}
	}
	checkInvalid(t, []invalidCase{
		c("not an address", `"10.0.0.300/8"`, "prefilter[3]", ` "10.0.0.300/8": want a prefix such as 192.0.2.0/24 or 2001:db8::/32, or an address`),
		c("length too long", "10.0.0.0/33", "prefilter[3]", ` "10.0.0.0/33": want a prefix such as 192.0.2.0/24 or 2001:db8::/32, or an address`),
		c("a host name", "evil.example", "prefilter[3]", ` "evil.example": want a prefix such as 192.0.2.0/24 or 2001:db8::/32, or an address`),
		c("with a port", "203.0.113.66:80", "prefilter[3]",
			` "203.0.113.66:80": want a prefix or an address, without a port: the prefilter drops every packet from a source`),
		c("with a zone", `"fe80::1%eth0"`, "prefilter[3]", ` "fe80::1%eth0": want an address without a zone`),
		c("bits past the length", "10.1.2.3/16", "prefilter[3]",
			` "10.1.2.3/16": bits set past the prefix length: write 10.1.0.0/16 for the prefix, or 10.1.2.3 for the one address`),
		c("IPv4-mapped", `"::ffff:203.0.113.0/120"`, "prefilter[3]",
			` "::ffff:203.0.113.0/120": an IPv4-mapped IPv6 prefix, which no IPv4 packet matches: write 203.0.113.0/24`),
		c("IPv4-mapped address", `"::ffff:203.0.113.66"`, "prefilter[3]",
			` "::ffff:203.0.113.66": an IPv4-mapped IPv6 prefix, which no IPv4 packet matches: write 203.0.113.66/32`),
		c("duplicate", "192.0.2.0/24", "prefilter[3]", ` "192.0.2.0/24": duplicate of prefilter[0]`),
		c("duplicate, once bare", "198.51.100.66/32", "prefilter[3]", ` "198.51.100.66/32": duplicate of prefilter[1]`),
		{
			name: "an alias of an earlier item", yaml: "prefilter: [&one 192.0.2.1, *one]\n" + svcs,
			msg: `prefilter[1] "192.0.2.1": duplicate of prefilter[0]`, line: 1, index: -1, field: "prefilter[1]",
		},
		c("a mapping", "{prefix: 192.0.2.0/24}", "prefilter[3]", `: want a prefix or an address, got a mapping`),
		c("null", "~", "prefilter[3]", `: want a prefix or an address, got nothing`),
		c("contains a backend", "10.0.0.0/8", "prefilter[3]",
			` "10.0.0.0/8": contains 10.0.1.2, a backend of services[0] "web": the prefilter would drop its replies`),
		c("is a backend", "10.0.1.2", "prefilter[3]",
			` "10.0.1.2": contains 10.0.1.2, a backend of services[0] "web": the prefilter would drop its replies`),
		c("every IPv4 source", "0.0.0.0/0", "prefilter[3]",
			` "0.0.0.0/0": contains 10.0.1.2, a backend of services[0] "web": the prefilter would drop its replies`),
		{
			name: "a string", yaml: "prefilter: 192.0.2.0/24\n" + svcs,
			msg: `prefilter: want a list, got "192.0.2.0/24"`, line: 1, index: -1, field: "prefilter",
		},
		{
			name: "given twice", yaml: "prefilter: []\n" + svcs + "prefilter: []\n",
			msg: `prefilter: given twice`, line: 4, index: -1, field: "prefilter",
		},
		{
			// Of the prefixes containing backends, the first in the file
			// is named, with the first backend it contains.
			name: "an endpoint of a Kubernetes-shaped service",
			yaml: `prefilter: [192.0.2.0/24, "fd00:1::/64", 10.0.0.0/8]
services:
  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}
  - name: shop
    clusterIPs: [10.96.0.20, "fd00::20"]
    ports: [{port: 80}]
    endpoints: [{address: 10.0.3.2}, {address: "fd00:1::3", state: maintenance}]
`,
			msg:  `prefilter[1] "fd00:1::/64": contains fd00:1::3, an endpoint of services[1] "shop": the prefilter would drop its replies`,
			line: 1, index: -1, field: "prefilter[1]",
		},
	})
}

// run checks the prefilter against its hook: only XDP consults it.
func TestConfigCheckHook(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lb.yaml")
	for _, tt := range []struct {
		yaml string
		hook datapath.Hook
		want string // the error; empty for none
	}{
		{"services: []\nprefilter:\n  - 192.0.2.0/24\n", datapath.HookTC,
			path + ":3: prefilter: the prefilter drops at XDP only, and --hook is tc: run with --hook xdp (or remove prefilter)"},
		{"services: []\nprefilter: [192.0.2.0/24]\n", datapath.HookXDP, ""},
		{"services: []\nprefilter: []\n", datapath.HookTC, ""},
		{"services: []\n", datapath.HookTC, ""},
	} {
		if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfigFor(context.Background(), path, tt.hook, DefaultMaxConfigBytes)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q at %s: %v", tt.yaml, tt.hook, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("%q at %s: %v\nwant %s", tt.yaml, tt.hook, err, tt.want)
		case tt.want != "" && !errors.Is(err, lb.ErrInvalid):
			t.Errorf("%v does not wrap lb.ErrInvalid", err)
		}
	}
}

// The configurations README.md shows parse.
func TestReadmeExamples(t *testing.T) {
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for block := range strings.SplitSeq(string(src), "```yaml\n") {
		if n++; n == 1 {
			continue // before the first block
		}
		yaml, _, ok := strings.Cut(block, "```")
		if !ok {
			t.Fatalf("README.md: a yaml block does not end:\n%s", block)
		}
		if _, err := ParseConfig([]byte(yaml)); err != nil {
			t.Errorf("README.md: %v\n%s", err, yaml)
		}
	}
	if n < 2 {
		t.Errorf("README.md shows no configuration")
	}
}

// loadWithin runs LoadConfig, failing the test if it has not returned
// within a minute: before reading was bounded, a FIFO blocked it for ever.
func loadWithin(t *testing.T, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := LoadConfig(path)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("LoadConfig(%s) still reading after a minute", path)
		return nil
	}
}

// Only a regular file of at most DefaultMaxConfigBytes is read: a FIFO is
// refused without waiting for a writer, a device without reading it, and
// each error names the file and what was wrong.
func TestLoadConfigFileLimits(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	// Valid YAML, a comment making it one byte too long.
	pad := DefaultMaxConfigBytes + 1 - len("services: []\n#\n")
	if err := os.WriteFile(big, []byte("services: []\n#"+strings.Repeat("x", pad)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{fifo, fifo + ": not a regular file but a FIFO: the configuration must be a file"},
		{"/dev/null", "/dev/null: not a regular file but a character device"},
		{"/dev/zero", "/dev/zero: not a regular file but a character device"},
		{dir, dir + ": not a regular file but a directory"},
		{big, fmt.Sprintf("%s: %d bytes, more than the limit of %d (--max-config-bytes)", big, DefaultMaxConfigBytes+1, DefaultMaxConfigBytes)},
	} {
		err := loadWithin(t, tt.path)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("LoadConfig(%s) = %v\nwant %s...", tt.path, err, tt.want)
		}
		if !errors.Is(err, lb.ErrInvalid) {
			t.Errorf("%v does not wrap lb.ErrInvalid", err)
		}
	}

	// A file of exactly the limit is read, and so is a regular file
	// behind a symbolic link.
	if err := os.WriteFile(big, []byte("services: []\n#"+strings.Repeat("x", pad-1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(big, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{big, link} {
		if err := loadWithin(t, path); err != nil {
			t.Errorf("LoadConfig(%s) of %d bytes: %v", path, DefaultMaxConfigBytes, err)
		}
	}

	// run's --max-config-bytes moves the limit.
	if _, err := loadConfig(context.Background(), big, limitsFor(1000)); err == nil ||
		err.Error() != fmt.Sprintf("%s: %d bytes, more than the limit of 1000 (--max-config-bytes)", big, DefaultMaxConfigBytes) {
		t.Errorf("LoadConfig within 1000 bytes = %v", err)
	}
}

// aliasBomb is a configuration of services that each name, through an
// alias, one list of n backends: small to write, services*n backends to
// parse.
func aliasBomb(n, services int) string {
	var b strings.Builder
	b.WriteString("services:\n  - name: s0\n    frontend: 10.96.0.1:80\n    backends: &pool [")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{address: 10.1.%d.%d:8080}", i/250, i%250+1)
	}
	b.WriteString("]\n")
	for i := 1; i < services; i++ {
		fmt.Fprintf(&b, "  - {name: s%d, frontend: 10.97.%d.%d:80, backends: *pool}\n", i, i/250, i%250+1)
	}
	return b.String()
}

// Aliases may not expand a file past DefaultMaxConfigBytes/4 nodes: a file
// of 100 KB naming one list of 2,000 backends 800 times (1.6 million
// backends) is refused before any service is parsed, at the line where it
// goes over. An alias inside what it names is refused too.
func TestParseConfigAliasExpansion(t *testing.T) {
	bomb := aliasBomb(2000, 800)
	t.Logf("%d bytes", len(bomb))
	_, err := ParseConfig([]byte(bomb))
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, lb.ErrInvalid) {
		t.Fatalf("ParseConfig of an alias bomb = %v, want a *ConfigError wrapping lb.ErrInvalid", err)
	}
	// Each backend is 3 nodes (a mapping, its key and value), so the list
	// and each alias of it 6,001, and each service 6,007: the 699th,
	// services[698] on line 702, goes over 4 + 699*6,007 > 4,194,304.
	want := fmt.Sprintf("yaml: more than %d nodes (keys, values, lists and mappings), counting each alias as the nodes it names, by here: "+
		"the limit for files of up to %d bytes (--max-config-bytes raises both)", DefaultMaxConfigBytes/4, DefaultMaxConfigBytes)
	if ce.Line != 702 || err.Error() != want {
		t.Errorf("ParseConfig of an alias bomb = line %d: %v\nwant line 702: %s", ce.Line, err, want)
	}

	// The limit counts exactly: a document of n nodes passes a limit of
	// n, not of n-1. This one is the document, the top mapping, its key
	// and list, and three times (once written, twice through an alias) a
	// mapping of two keys and values.
	doc := "services:\n  - &a {name: a, frontend: 10.96.0.1:80}\n  - *a\n  - *a\n"
	const nodes = 1 + 1 + 2 + 3*(1+2*2)
	for _, tt := range []struct {
		max  int64
		want string
	}{
		{nodes, `services[1] "a": name "a": duplicate of services[0]`}, // counted, then parsed
		{nodes - 1, "yaml: more than 18 nodes"},
	} {
		_, err := parseConfig(context.Background(), []byte(doc), readLimits{maxBytes: 1 << 20, maxNodes: tt.max})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("limit %d: %v, want %s...", tt.max, err, tt.want)
		}
	}

	// A list that contains itself.
	_, err = ParseConfig([]byte("services: &s\n  - {name: a, frontend: 10.96.0.1:80, backends: *s}\n"))
	if want := `yaml "*s": the alias is inside the node it names`; err == nil || err.Error() != want || !errors.As(err, &ce) || ce.Line != 2 {
		t.Errorf("ParseConfig of a recursive alias = %v, want line 2: %s", err, want)
	}
}

// Parsing stops when its context is done.
func TestParseConfigInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := parseConfig(ctx, []byte("services: [{name: a, frontend: 10.96.0.1:80}]\n"), limitsFor(DefaultMaxConfigBytes))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("parseConfig with a cancelled context = %v, want context.Canceled", err)
	}
}

// Names (of services and ports) are printable: a control character, or a
// blank other than the space, is refused, and the error quotes the name
// so that it prints safely. So is an unknown key.
func TestParseConfigNames(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{`services: [{name: "web\e[2J", frontend: 10.96.0.1:80}]`,
			`services[0]: name "web\x1b[2J": contains the control character U+001B: write printable characters only`},
		{`services: [{name: "web\nINFO forged", frontend: 10.96.0.1:80}]`,
			`services[0]: name "web\nINFO forged": contains the control character U+000A`},
		{`services: [{name: "a\tb", frontend: 10.96.0.1:80}]`,
			`services[0]: name "a\tb": contains the control character U+0009`},
		{`services: [{name: "a\u202eb", frontend: 10.96.0.1:80}]`,
			`services[0]: name "a\u202eb": contains the unprintable character U+202E`},
		{`services: [{name: "a\u00a0b", frontend: 10.96.0.1:80}]`,
			`services[0]: name "a\u00a0b": contains the unprintable character U+00A0`},
		{`services: [{name: shop, clusterIPs: [10.96.0.2], ports: [{name: "ht\0tp", port: 80}]}]`,
			`services[0] "shop": ports[0].name "ht\x00tp": contains the control character U+0000`},
		{`services: [{name: web, frontend: 10.96.0.1:80, "x\e]0;owned\a": 1}]`,
			`services[0] "web": "x\x1b]0;owned\a": unknown field`},
	} {
		_, err := ParseConfig([]byte(tt.yaml + "\n"))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, lb.ErrInvalid) {
			t.Errorf("%s:\n got %v\nwant %s...", tt.yaml, err, tt.want)
		}
	}
	// Printable text is a name, spaces and letters beyond ASCII included.
	cfg, err := ParseConfig([]byte("services: [{name: \"café 1\", clusterIPs: [10.96.0.2], ports: [{name: \"ünï\", port: 80}]}]\n"))
	if err != nil || cfg.Services[0].Label() != "café 1:ünï" {
		t.Errorf("printable names: %v, %v", cfg.Services, err)
	}
}

// An error of lb.Manager.Sync about a frontend names the service, the
// field that made the frontend and its line; for the backends, the line
// of the backends or endpoints. Other errors are left as they are.
func TestConfigInstallError(t *testing.T) {
	cfg, err := ParseConfig([]byte(`nodeAddresses: [192.168.1.10]
services:
  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}
  - name: shop
    clusterIPs: [10.96.0.20]
    ports:
      - {name: http, port: 80, nodePort: 30080}
    endpoints:
      - {address: 10.0.1.2}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		err  *lb.ValidationError
		want string
	}{
		{&lb.ValidationError{Frontend: frontend("10.96.0.10:80/tcp"), Field: "frontend", Reason: "the datapath holds at most 1 services"},
			`services[0] "web": frontend "10.96.0.10:80": the datapath holds at most 1 services`},
		{&lb.ValidationError{Frontend: frontend("10.96.0.10:80/tcp"), Field: "backends", Value: 1, Reason: "the datapath holds at most 0 backends in all"},
			`services[0] "web": backends: 1 of them for 10.96.0.10:80/tcp: the datapath holds at most 0 backends in all`},
		{&lb.ValidationError{Frontend: frontend("10.96.0.20:80/tcp"), Field: "frontend", Reason: "no free service id"},
			`services[1] "shop": clusterIPs[0] "10.96.0.20": no free service id (with ports[0], frontend 10.96.0.20:80/tcp)`},
		{&lb.ValidationError{Frontend: frontend("192.168.1.10:30080/tcp"), Field: "frontend", Reason: "no free service id"},
			`services[1] "shop": ports[0].nodePort "30080": no free service id (with nodeAddresses[0], frontend 192.168.1.10:30080/tcp)`},
		{&lb.ValidationError{Frontend: frontend("192.168.1.10:30080/tcp"), Field: "backends", Value: 1, Reason: "no free backend id"},
			`services[1] "shop": endpoints: 1 of them for 192.168.1.10:30080/tcp: no free backend id`},
	} {
		ce := cfg.installError(fmt.Errorf("wrapped: %w", tt.err))
		if ce == nil || ce.Error() != tt.want {
			t.Errorf("installError(%v) = %v\nwant %s", tt.err, ce, tt.want)
			continue
		}
		if !errors.Is(ce, tt.err) {
			t.Errorf("%v does not wrap %v", ce, tt.err)
		}
		wantLine := map[string]int{"frontend": 3, "backends": 3, "clusterIPs[0]": 5, "ports[0].nodePort": 7, "endpoints": 9}[ce.Field]
		if ce.Line != wantLine {
			t.Errorf("%v: line %d, want %d", ce, ce.Line, wantLine)
		}
	}
	for _, err := range []error{errors.New("kernel says no"),
		&lb.ValidationError{Frontend: frontend("10.96.0.99:80/tcp"), Field: "frontend", Reason: "not ours"}} {
		if ce := cfg.installError(err); ce != nil {
			t.Errorf("installError(%v) = %v, want nil", err, ce)
		}
	}
}
