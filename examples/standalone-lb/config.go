package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/xdplane/xdplane/lb"
)

// Config is a parsed configuration file: the services to install, in the
// order the file lists them.
type Config struct {
	Services []NamedService
}

// NamedService is a service with the name the configuration gives it. The
// name lives only in the configuration and in logs: the datapath knows a
// service by its frontend.
type NamedService struct {
	Name    string
	Service lb.Service
}

// LBServices returns the services for lb.Manager.Sync.
func (c Config) LBServices() []lb.Service {
	out := make([]lb.Service, len(c.Services))
	for i, s := range c.Services {
		out[i] = s.Service
	}
	return out
}

// Names maps each frontend to its service's name.
func (c Config) Names() map[lb.Frontend]string {
	out := make(map[lb.Frontend]string, len(c.Services))
	for _, s := range c.Services {
		out[s.Service.Frontend] = s.Name
	}
	return out
}

// ConfigError says what is wrong in a configuration and where. It wraps
// lb.ErrInvalid (or, for a service too big for any datapath, lb.ErrCapacity).
type ConfigError struct {
	Line   int    // 1-based line in the file; 0 when unknown
	Index  int    // index in services; -1 when the error is about no one service
	Name   string // the service's name, when it has one
	Field  string // for example "backends[0].address"
	Value  string // the offending value as written; empty when it is missing
	Reason string
	Err    error // what it wraps
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Index >= 0 {
		fmt.Fprintf(&b, "services[%d]", e.Index)
		if e.Name != "" {
			fmt.Fprintf(&b, " %q", e.Name)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Field)
	if e.Value != "" {
		fmt.Fprintf(&b, " %q", e.Value)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfig reads and parses the configuration file at path. Errors name
// the file and line as well as the service and field.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) && ce.Line > 0 {
			return Config{}, fmt.Errorf("%s:%d: %w", path, ce.Line, err)
		}
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses a configuration:
//
//	services:
//	  - name: web
//	    frontend: 10.96.0.10:80
//	    protocol: tcp            # or udp; default tcp
//	    backends:
//	      - address: 10.0.1.2:8080
//	        weight: 1            # 1 to lb.MaxWeight; default 1
//	  - name: web6
//	    frontend: "[fd00::10]:80"  # IPv6 in brackets, quoted for YAML
//	    backends:
//	      - address: "[fd00:1::2]:8080"
//
// A service is IPv4 or IPv6: its backends are of its frontend's family.
//
// Decoding is strict: an unknown or repeated field, a value of the wrong
// kind, two services with one name or one frontend are all errors, each a
// *ConfigError. The services key must be present, so that an empty or
// truncated file is refused rather than read as "remove every service";
// write `services: []` to mean none.
func ParseConfig(data []byte) (Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, fileError(0, "services", "", "missing: the file is empty (write `services: []` for no services)")
		}
		reason := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := unquotedIPv6.FindIndex(data); m != nil {
			reason += fmt.Sprintf(" (line %d: an IPv6 address in brackets must be quoted, such as \"[fd00::10]:80\")",
				bytes.Count(data[:m[0]], []byte("\n"))+1)
		}
		return Config{}, fileError(0, "yaml", "", reason)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, fileError(extra.Line, "yaml", "", "more than one document in the file")
	}

	root := deref(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = deref(root.Content[0])
	}
	if isNull(root) {
		return Config{}, fileError(root.Line, "services", "", "missing: the file is empty (write `services: []` for no services)")
	}
	if root.Kind != yaml.MappingNode {
		return Config{}, fileError(root.Line, "top level", "", "want a mapping with a services key, got "+kindName(root))
	}
	fields, fe := mappingFields(root, []string{"services"})
	if fe != nil {
		return Config{}, fileError(fe.line, fe.field, "", fe.reason)
	}
	list, ok := fields["services"]
	if !ok {
		return Config{}, fileError(root.Line, "services", "", "missing (write `services: []` for no services)")
	}
	if isNull(list) {
		// As with a missing key: more often a slip than a wish to remove
		// every service.
		return Config{}, fileError(list.Line, "services", "", "empty (write `services: []` for no services)")
	}
	if list.Kind != yaml.SequenceNode {
		return Config{}, fileError(list.Line, "services", "", "want a list, got "+kindName(list))
	}

	var cfg Config
	names := map[string]int{}
	frontends := map[lb.Frontend]int{}
	for i, n := range list.Content {
		s, err := parseService(i, deref(n))
		if err != nil {
			return Config{}, err
		}
		if j, dup := names[s.Name]; dup {
			return Config{}, &ConfigError{Line: n.Line, Index: i, Name: s.Name, Field: "name", Value: s.Name,
				Reason: fmt.Sprintf("duplicate of services[%d]", j), Err: lb.ErrInvalid}
		}
		names[s.Name] = i
		if j, dup := frontends[s.Service.Frontend]; dup {
			return Config{}, &ConfigError{Line: n.Line, Index: i, Name: s.Name, Field: "frontend",
				Value:  s.Service.Frontend.Address.String(),
				Reason: fmt.Sprintf("%s is already the frontend of services[%d] %q", s.Service.Frontend.Protocol, j, cfg.Services[j].Name),
				Err:    lb.ErrInvalid}
		}
		frontends[s.Service.Frontend] = i
		cfg.Services = append(cfg.Services, s)
	}
	return cfg, nil
}

// unquotedIPv6 finds a frontend or address written [IPv6]:port without
// quotes, which YAML reads as the start of a list: the likeliest cause of
// a syntax error in a file with IPv6 services.
var unquotedIPv6 = regexp.MustCompile(`(frontend|address)\s*:\s*\[[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*\]`)

func fileError(line int, field, value, reason string) *ConfigError {
	return &ConfigError{Line: line, Index: -1, Field: field, Value: value, Reason: reason, Err: lb.ErrInvalid}
}

// fieldError is a problem found inside a mapping, before we know whose.
type fieldError struct {
	line   int
	field  string
	value  string
	reason string
}

var (
	serviceFields = []string{"name", "frontend", "protocol", "backends"}
	backendFields = []string{"address", "weight"}
)

func parseService(i int, n *yaml.Node) (NamedService, error) {
	fail := func(name string, fe *fieldError) error {
		return &ConfigError{Line: fe.line, Index: i, Name: name, Field: fe.field, Value: fe.value, Reason: fe.reason, Err: lb.ErrInvalid}
	}
	if n.Kind != yaml.MappingNode {
		return NamedService{}, fail("", &fieldError{line: n.Line, field: "service", reason: "want a mapping with name, frontend, protocol and backends, got " + kindName(n)})
	}
	fields, fe := mappingFields(n, serviceFields)
	// The name comes first so that every later error can carry it.
	name, nameErr := scalar(fields, "name")
	if fe != nil {
		return NamedService{}, fail(name, fe)
	}
	if nameErr != nil {
		return NamedService{}, fail("", nameErr)
	}
	if name == "" {
		return NamedService{}, fail("", &fieldError{line: n.Line, field: "name", reason: "missing"})
	}

	var s NamedService
	s.Name = name

	frontend, fe := scalar(fields, "frontend")
	if fe != nil {
		return NamedService{}, fail(name, fe)
	}
	frontendLine := lineOf(fields, "frontend", n)
	addr, reason := parseAddrPort(frontend)
	if reason != "" {
		return NamedService{}, fail(name, &fieldError{line: frontendLine, field: "frontend", value: frontend, reason: reason})
	}
	s.Service.Frontend.Address = addr

	proto, fe := scalar(fields, "protocol")
	if fe != nil {
		return NamedService{}, fail(name, fe)
	}
	s.Service.Frontend.Protocol = lb.TCP
	if proto != "" {
		p, perr := lb.ParseProtocol(proto)
		if perr != nil {
			return NamedService{}, fail(name, &fieldError{line: lineOf(fields, "protocol", n), field: "protocol", value: proto, reason: "want tcp or udp"})
		}
		s.Service.Frontend.Protocol = p
	}

	// Addresses as written, for errors that lb's validation reports.
	var written []string
	var lines []int
	if bn, ok := fields["backends"]; ok && !isNull(bn) {
		if bn.Kind != yaml.SequenceNode {
			return NamedService{}, fail(name, &fieldError{line: bn.Line, field: "backends", reason: "want a list, got " + kindName(bn)})
		}
		for j, item := range bn.Content {
			b, text, fe := parseBackend(j, deref(item))
			if fe != nil {
				return NamedService{}, fail(name, fe)
			}
			s.Service.Backends = append(s.Service.Backends, b)
			written = append(written, text)
			lines = append(lines, item.Line)
		}
	}

	// lb knows the remaining rules (port 0, one address family per
	// service, multicast, duplicate backends...): ask it, and say it in
	// the file's terms.
	if verr := s.Service.Validate(); verr != nil {
		ce := &ConfigError{Line: n.Line, Index: i, Name: name, Err: verr, Reason: verr.Error()}
		var ve *lb.ValidationError
		if errors.As(verr, &ve) {
			ce.Field, ce.Value, ce.Reason = ve.Field, fmt.Sprint(ve.Value), ve.Reason
			switch {
			case strings.HasPrefix(ve.Field, "frontend."):
				ce.Field, ce.Value, ce.Line = "frontend", frontend, frontendLine
			case strings.HasPrefix(ve.Field, "backends["):
				var j int
				if _, err := fmt.Sscanf(ve.Field, "backends[%d]", &j); err == nil && j < len(written) {
					ce.Line = lines[j]
					if strings.HasSuffix(ve.Field, ".address") {
						ce.Value = written[j]
						if b := s.Service.Backends[j].Address.Addr(); b.IsValid() && b.Is4() != addr.Addr().Is4() {
							ce.Reason += fmt.Sprintf(" (an %s backend for an %s frontend; write one service per family)",
								familyName(b), familyName(addr.Addr()))
						}
					}
				}
			case ve.Field == "backends":
				ce.Value = ""
			}
		}
		return NamedService{}, ce
	}
	return s, nil
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// parseBackend returns the backend, its address as written, or what is
// wrong with it.
func parseBackend(j int, n *yaml.Node) (lb.Backend, string, *fieldError) {
	prefix := fmt.Sprintf("backends[%d]", j)
	if n.Kind != yaml.MappingNode {
		return lb.Backend{}, "", &fieldError{line: n.Line, field: prefix, reason: "want a mapping with address and weight, got " + kindName(n)}
	}
	fields, fe := mappingFields(n, backendFields)
	if fe != nil {
		fe.field = prefix + "." + fe.field
		return lb.Backend{}, "", fe
	}
	text, fe := scalar(fields, "address")
	if fe != nil {
		fe.field = prefix + "." + fe.field
		return lb.Backend{}, "", fe
	}
	addr, reason := parseAddrPort(text)
	if reason != "" {
		return lb.Backend{}, "", &fieldError{line: lineOf(fields, "address", n), field: prefix + ".address", value: text, reason: reason}
	}
	b := lb.Backend{Address: addr, Weight: 1}
	if wn, ok := fields["weight"]; ok && !isNull(wn) {
		bad := &fieldError{line: wn.Line, field: prefix + ".weight", value: wn.Value,
			reason: fmt.Sprintf("want a whole number from 1 to %d", lb.MaxWeight)}
		if wn.Kind != yaml.ScalarNode || wn.ShortTag() != "!!int" {
			return lb.Backend{}, "", bad
		}
		var w int64
		if err := wn.Decode(&w); err != nil || w < 1 || w > lb.MaxWeight {
			return lb.Backend{}, "", bad
		}
		b.Weight = uint16(w)
	}
	return b, text, nil
}

// parseAddrPort parses "10.0.1.2:8080" or "[fd00:1::2]:8080", or says in
// a few words what is wrong with s.
func parseAddrPort(s string) (netip.AddrPort, string) {
	const want = "want address:port, such as 10.0.1.2:8080 or [fd00:1::2]:8080"
	if s == "" {
		return netip.AddrPort{}, "missing"
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, ""
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Is6() {
			// "fd00::10:80" is an address of its own: say how a port is
			// written, in case that was meant.
			return netip.AddrPort{}, "missing port (an IPv6 address with a port is written in brackets, such as [fd00:1::2]:8080)"
		}
		return netip.AddrPort{}, "missing port"
	}
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok := strings.CutSuffix(inner, "]"); ok {
			if _, err := netip.ParseAddr(inner); err == nil {
				return netip.AddrPort{}, "missing port"
			}
		}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, want
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Sprintf("%q is not an IP address (host names are not resolved)", host)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return netip.AddrPort{}, fmt.Sprintf("port %q is not a number from 1 to 65535", port)
	}
	if a.Is4() && strings.HasPrefix(s, "[") {
		return netip.AddrPort{}, "brackets are for IPv6 addresses only: write " + net.JoinHostPort(host, port)
	}
	return netip.AddrPort{}, want
}

// mappingFields indexes a mapping's values by key. It refuses keys
// outside known and keys given twice, but still returns the fields it
// could read, so that the error can name the service.
func mappingFields(n *yaml.Node, known []string) (map[string]*yaml.Node, *fieldError) {
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	var first *fieldError
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := deref(n.Content[k]), deref(n.Content[k+1])
		var fe *fieldError
		switch {
		case key.Kind != yaml.ScalarNode:
			fe = &fieldError{line: key.Line, field: "key", reason: "want a plain field name, got " + kindName(key)}
		case !slices.Contains(known, key.Value):
			fe = &fieldError{line: key.Line, field: key.Value,
				reason: "unknown field (known: " + strings.Join(known, ", ") + ")"}
		case out[key.Value] != nil:
			fe = &fieldError{line: key.Line, field: key.Value, reason: "given twice"}
		default:
			out[key.Value] = val
		}
		if first == nil {
			first = fe
		}
	}
	return out, first
}

// scalar returns the string value of an optional field; "" when it is
// absent or null.
func scalar(fields map[string]*yaml.Node, key string) (string, *fieldError) {
	n, ok := fields[key]
	if !ok || isNull(n) {
		return "", nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", &fieldError{line: n.Line, field: key, reason: "want a single value, got " + kindName(n)}
	}
	return n.Value, nil
}

func lineOf(fields map[string]*yaml.Node, key string, parent *yaml.Node) int {
	if n, ok := fields[key]; ok {
		return n.Line
	}
	return parent.Line
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}
