package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

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
				{"web", lb.Service{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{
					backend("10.0.1.2:8080", 3), backend("10.0.2.2:8080", 1)}}},
				{"dns", lb.Service{Frontend: frontend("10.96.0.10:53/udp"), Backends: []lb.Backend{
					backend("10.0.1.2:5353", 1000)}}},
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
				{"a", lb.Service{Frontend: frontend("10.96.0.1:80/tcp")}},
				{"b", lb.Service{Frontend: frontend("10.96.0.1:80/udp")}},
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
				{"a", lb.Service{Frontend: frontend("10.96.0.1:80/tcp")}},
				{"b", lb.Service{Frontend: frontend("10.96.0.2:80/tcp")}},
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
				{"web", lb.Service{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}}},
				{"web-alt", lb.Service{Frontend: frontend("10.96.0.11:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}}},
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
				{"web", lb.Service{Frontend: frontend("10.96.0.10:80/tcp"), Backends: []lb.Backend{backend("10.0.1.2:8080", 1)}}},
				{"web6", lb.Service{Frontend: frontend("[fd00::10]:80/tcp"), Backends: []lb.Backend{
					backend("[fd00:1::2]:8080", 2), backend("[fd00:2::2]:8080", 1)}}},
				{"dns6", lb.Service{Frontend: frontend("[fd00::10]:53/udp"), Backends: []lb.Backend{backend("[fd00:1::2]:5353", 1)}}},
			},
		},
		{
			name: "numeric name is a name",
			yaml: "services:\n  - {name: 42, frontend: 10.96.0.1:80}\n",
			want: []NamedService{{"42", lb.Service{Frontend: frontend("10.96.0.1:80/tcp")}}},
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

func TestParseConfigInvalid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		// msg is the whole message, or a part of it when partial is set.
		msg     string
		partial bool
		line    int
		index   int
		field   string
	}{
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
			msg: "service: unknown field (known: services)", line: 2, index: -1, field: "service",
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
			msg: `services[0]: service: want a mapping with name, frontend, protocol and backends, got "web"`, line: 2, index: 0, field: "service",
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
			msg: `services[0] "web": port: unknown field (known: name, frontend, protocol, backends)`, line: 3, index: 0, field: "port",
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
			msg: `services[0] "web": frontend: missing`, line: 2, index: 0, field: "frontend",
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
			msg: `services[0] "web": backends[1].wieght: unknown field (known: address, weight)`, line: 8, index: 0, field: "backends[1].wieght",
		},
		{
			name: "backends not a list", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends: 10.0.1.2:8080\n",
			msg: `services[0] "web": backends: want a list, got "10.0.1.2:8080"`, line: 4, index: 0, field: "backends",
		},
		{
			name: "backend is a string", yaml: "services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends: [10.0.1.2:8080]\n",
			msg: `services[0] "web": backends[0]: want a mapping with address and weight, got "10.0.1.2:8080"`, line: 4, index: 0, field: "backends[0]",
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
	}
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
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, lb.ErrInvalid) && !errors.Is(err, lb.ErrCapacity) {
				t.Fatalf("error %q wraps neither lb.ErrInvalid nor lb.ErrCapacity", err)
			}
			return
		}
		seen := map[lb.Frontend]bool{}
		for _, s := range cfg.Services {
			if err := s.Service.Validate(); err != nil {
				t.Fatalf("accepted a service lb refuses: %v", err)
			}
			if s.Name == "" || seen[s.Service.Frontend] {
				t.Fatalf("accepted an unnamed or duplicate service %+v", s)
			}
			seen[s.Service.Frontend] = true
		}
	})
}
