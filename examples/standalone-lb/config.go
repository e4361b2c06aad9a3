package main

import (
	"bytes"
	"context"
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
	"syscall"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

// Config is a parsed configuration file.
type Config struct {
	// NodeAddresses are this node's own addresses, on which node ports
	// listen, in the order the file lists them.
	NodeAddresses []netip.Addr
	// Prefilter is the node-wide deny list: sources that XDP drops on
	// every interface run attaches to, before load balancing, in the order
	// of the file. A bare address in the file is its one-address prefix.
	Prefilter []netip.Prefix
	// Services holds one entry per frontend, in the order of the file: a
	// plain service gives one, a Kubernetes-shaped one as many as it
	// expands to.
	Services []NamedService

	prefilterLine int // where the prefilter key is, for checkHook
	// sources says where each frontend comes from in the file, for
	// errors found when the services are installed.
	sources map[lb.Frontend]source
}

// source is where a frontend comes from in the file.
type source struct {
	index        int // in services
	name         string
	origin       origin // the field that makes the frontend
	backends     string // "backends" or "endpoints"
	backendsLine int
}

// FrontendType says which field of its service made a frontend; for the
// Kubernetes form it is the service type that frontend belongs to.
type FrontendType string

// The frontend types.
const (
	TypeFrontend     FrontendType = "frontend"     // the plain form's frontend
	TypeClusterIP    FrontendType = "ClusterIP"    // clusterIPs, on the port
	TypeExternalIP   FrontendType = "ExternalIP"   // externalIPs, on the port
	TypeLoadBalancer FrontendType = "LoadBalancer" // loadBalancerIPs, on the port
	TypeNodePort     FrontendType = "NodePort"     // nodeAddresses, on the nodePort
)

// NamedService is a service with the name the configuration gives it. The
// name lives only in the configuration and in logs: the datapath knows a
// service by its frontend.
type NamedService struct {
	Name string
	// Port is the name of the Kubernetes-shaped service's port this
	// frontend serves, which may be empty; always empty in the plain form.
	Port    string
	Type    FrontendType
	Service lb.Service
}

// Label is how logs and status name the service: its name, and for a
// Kubernetes-shaped service with named ports, the port's name after a
// colon, as kube-proxy names a service port ("shop:http").
func (s NamedService) Label() string {
	if s.Port != "" {
		return s.Name + ":" + s.Port
	}
	return s.Name
}

// LBServices returns the services for lb.Manager.Sync.
func (c Config) LBServices() []lb.Service {
	out := make([]lb.Service, len(c.Services))
	for i, s := range c.Services {
		out[i] = s.Service
	}
	return out
}

// Names maps each frontend to its service's Label.
func (c Config) Names() map[lb.Frontend]string {
	out := make(map[lb.Frontend]string, len(c.Services))
	for _, s := range c.Services {
		out[s.Service.Frontend] = s.Label()
	}
	return out
}

// ByFrontend maps each frontend to its service.
func (c Config) ByFrontend() map[lb.Frontend]NamedService {
	out := make(map[lb.Frontend]NamedService, len(c.Services))
	for _, s := range c.Services {
		out[s.Service.Frontend] = s
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
	if e.Field != "" {
		b.WriteString(e.Field)
		if e.Value != "" {
			fmt.Fprintf(&b, " %q", e.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// DefaultMaxConfigBytes is the largest configuration file run and status
// read, unless run's --max-config-bytes says otherwise: room for a file
// that fills the default datapath (65,536 services and 262,144 backends
// take about 13 MB written as doc.go shows), not for much more. Decoding
// costs memory: up to about 100 bytes for each byte of YAML.
const DefaultMaxConfigBytes = 16 << 20

// readLimits bound what reading a configuration file may cost.
type readLimits struct {
	// maxBytes is the largest file accepted.
	maxBytes int64
	// maxNodes is how many YAML nodes (keys, values, lists, mappings)
	// the file may have once every alias is counted as the nodes it
	// stands for: aliases to one long list would otherwise make a small
	// file take minutes and gigabytes to parse.
	maxNodes int64
}

// limitsFor is the limits for files of at most maxBytes: a quarter as
// many nodes as bytes. A node takes at least 2 bytes of YAML and, written
// as doc.go shows, about 10; a file without aliases rarely comes near.
func limitsFor(maxBytes int64) readLimits {
	return readLimits{maxBytes: maxBytes, maxNodes: max(maxBytes/4, 1)}
}

// parseHook, when set (by a test build), runs after the file is read and
// before it is parsed.
var parseHook func(ctx context.Context, data []byte)

// LoadConfig reads and parses the configuration file at path, within the
// default limits (DefaultMaxConfigBytes). Errors name the file and line
// as well as the service and field.
func LoadConfig(path string) (Config, error) {
	return loadConfig(context.Background(), path, limitsFor(DefaultMaxConfigBytes))
}

func loadConfig(ctx context.Context, path string, lim readLimits) (Config, error) {
	data, err := readConfigFile(path, lim)
	if err != nil {
		return Config{}, inFile(path, err)
	}
	if parseHook != nil {
		parseHook(ctx, data)
	}
	cfg, err := parseConfig(ctx, data, lim)
	if err != nil {
		return Config{}, inFile(path, err)
	}
	return cfg, nil
}

// LoadConfigFor is LoadConfig for run with the given hook, within
// maxBytes (see limitsFor), until ctx is done: it also refuses what the
// hook cannot do (see checkHook).
func LoadConfigFor(ctx context.Context, path string, hook datapath.Hook, maxBytes int64) (Config, error) {
	cfg, err := loadConfig(ctx, path, limitsFor(maxBytes))
	if err != nil {
		return Config{}, err
	}
	if err := cfg.checkHook(hook); err != nil {
		return Config{}, inFile(path, err)
	}
	return cfg, nil
}

// readConfigFile reads a configuration file: a regular file of at most
// lim.maxBytes. It opens without blocking and looks at what it opened
// before reading, so that a FIFO (which would wait for a writer) or a
// device such as /dev/zero (which never ends) is refused at once.
func readConfigFile(path string, lim readLimits) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fileError(0, "", "", fmt.Sprintf("not a regular file but %s: the configuration must be a file "+
			"(a FIFO would wait for a writer, a device may never end)", fileKind(fi.Mode())))
	}
	tooBig := func(size int64) error {
		return fileError(0, "", "", fmt.Sprintf("%d bytes, more than the limit of %d (--max-config-bytes)", size, lim.maxBytes))
	}
	if fi.Size() > lim.maxBytes {
		return nil, tooBig(fi.Size())
	}
	// The file may grow while it is read: read no more than the limit.
	data, err := io.ReadAll(io.LimitReader(f, lim.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if int64(len(data)) > lim.maxBytes {
		return nil, tooBig(int64(len(data)))
	}
	return data, nil
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "of type " + m.Type().String()
}

// installError turns an error of lb.Manager.Sync about one of the
// configuration's services (a *lb.ValidationError: most often that the
// datapath is full) into a *ConfigError naming the service, its field and
// line, as a parsing error does; nil for other errors.
func (c Config) installError(err error) *ConfigError {
	var ve *lb.ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	src, ok := c.sources[ve.Frontend]
	if !ok {
		return nil
	}
	ce := &ConfigError{Line: src.origin.line, Index: src.index, Name: src.name, Field: src.origin.field,
		Value: src.origin.value, Reason: ve.Reason, Err: err}
	if src.origin.with != "" {
		// A frontend of the Kubernetes form: say which.
		ce.Reason = fmt.Sprintf("%s (with %s, frontend %s)", ve.Reason, src.origin.with, ve.Frontend)
	}
	if ve.Field == "backends" {
		ce.Field, ce.Value, ce.Line = src.backends, "", src.backendsLine
		ce.Reason = fmt.Sprintf("%v of them for %s: %s", ve.Value, ve.Frontend, ve.Reason)
	}
	return ce
}

// inFile puts the file's name, and the line when known, before err.
func inFile(path string, err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) && ce.Line > 0 {
		return fmt.Errorf("%s:%d: %w", path, ce.Line, err)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// checkHook refuses a prefilter with the tc hook: only the XDP program
// consults it, so at tc it would list sources it never drops. An empty
// list is accepted (it removes the list an earlier run left).
func (c Config) checkHook(hook datapath.Hook) error {
	if hook == datapath.HookXDP || len(c.Prefilter) == 0 {
		return nil
	}
	return &ConfigError{Line: c.prefilterLine, Index: -1, Field: "prefilter", Err: lb.ErrInvalid,
		Reason: fmt.Sprintf("the prefilter drops at XDP only, and --hook is %s: run with --hook xdp (or remove prefilter)", hook)}
}

// ParseConfig parses a configuration (doc.go describes every field):
//
//	nodeAddresses: [192.168.1.10]    # for node ports
//	prefilter: [203.0.113.66, "2001:db8:bad::/48"]  # dropped at XDP
//	services:
//	  - name: web                    # the plain form: one frontend
//	    frontend: 10.96.0.10:80
//	    protocol: tcp                # or udp; default tcp
//	    algorithm: maglev            # or random, the default
//	    sessionAffinity: 3h          # clientIP, none or a duration
//	    trafficPolicy: cluster       # or local
//	    sourceRanges: [10.0.0.0/8]
//	    backends:
//	      - address: 10.0.1.2:8080
//	        weight: 1                # 1 to lb.MaxWeight; default 1
//	        state: active            # terminating, maintenance
//	        local: true
//	  - name: shop                   # the Kubernetes form
//	    clusterIPs: [10.96.0.20, "fd00::20"]
//	    loadBalancerIPs: [198.51.100.20]
//	    ports:
//	      - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
//	    externalTrafficPolicy: Local
//	    endpoints:
//	      - {address: 10.0.1.2, local: true}
//
// A plain service is IPv4 or IPv6: its backends are of its frontend's
// family. A Kubernetes-shaped service expands, through
// lb.KubeService.Expand, to one frontend per address and port, each
// served by the endpoints of its family.
//
// Decoding is strict: an unknown or repeated field, a value of the wrong
// kind, two services with one name or one frontend are all errors, each a
// *ConfigError. The services key must be present, so that an empty or
// truncated file is refused rather than read as "remove every service";
// write `services: []` to mean none. The prefilter key may be absent: an
// absent or empty prefilter is an empty deny list. Names (of services and
// ports) are printable text.
//
// ParseConfig applies the limits of LoadConfig: no more than
// DefaultMaxConfigBytes/4 nodes, aliases expanded.
func ParseConfig(data []byte) (Config, error) {
	return parseConfig(context.Background(), data, limitsFor(DefaultMaxConfigBytes))
}

// parseConfig is ParseConfig within lim, until ctx is done.
func parseConfig(ctx context.Context, data []byte, lim readLimits) (Config, error) {
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

	if err := ctx.Err(); err != nil {
		return Config{}, interrupted(err)
	}
	// Every later step visits a node as often as aliases name it: count
	// them first, each alias as what it stands for.
	if ce := checkExpansion(&doc, lim); ce != nil {
		return Config{}, ce
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
	fields, fe := mappingFields(root, topFields, nil)
	if fe != nil {
		return Config{}, fileError(fe.line, fe.field, fe.value, fe.reason)
	}
	top := mapping{node: root, fields: fields}

	var cfg Config
	nodeAddrs, fe := parseNodeAddresses(top)
	if fe != nil {
		return Config{}, fileError(fe.line, fe.field, fe.value, fe.reason)
	}
	for _, a := range nodeAddrs {
		cfg.NodeAddresses = append(cfg.NodeAddresses, a.addr)
	}
	prefilter, fe := parsePrefilter(top)
	if fe != nil {
		return Config{}, fileError(fe.line, fe.field, fe.value, fe.reason)
	}
	for _, p := range prefilter {
		cfg.Prefilter = append(cfg.Prefilter, p.prefix)
	}
	cfg.prefilterLine = top.line("prefilter")

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

	names := map[string]int{}
	type owner struct {
		index int
		name  string
	}
	frontends := map[lb.Frontend]owner{}
	for i, n := range list.Content {
		if err := ctx.Err(); err != nil {
			return Config{}, interrupted(err)
		}
		e, err := parseService(i, deref(n), nodeAddrs)
		if err != nil {
			return Config{}, err
		}
		if j, dup := names[e.name]; dup {
			return Config{}, &ConfigError{Line: n.Line, Index: i, Name: e.name, Field: "name", Value: e.name,
				Reason: fmt.Sprintf("duplicate of services[%d]", j), Err: lb.ErrInvalid}
		}
		names[e.name] = i
		for k, s := range e.services {
			fe := s.Service.Frontend
			if o, dup := frontends[fe]; dup {
				ce := &ConfigError{Line: e.origins[k].line, Index: i, Name: e.name, Field: e.origins[k].field,
					Value: e.origins[k].value, Err: lb.ErrInvalid}
				if s.Type == TypeFrontend {
					ce.Value = fe.Address.String()
					ce.Reason = fmt.Sprintf("%s is already the frontend of services[%d] %q", fe.Protocol, o.index, o.name)
				} else {
					ce.Reason = fmt.Sprintf("%s (%s) is already a frontend of services[%d] %q", fe, e.origins[k].with, o.index, o.name)
				}
				return Config{}, ce
			}
			frontends[fe] = owner{i, e.name}
			if cfg.sources == nil {
				cfg.sources = map[lb.Frontend]source{}
			}
			cfg.sources[fe] = source{index: i, name: e.name, origin: e.origins[k], backends: e.backends, backendsLine: e.backendsLine}
		}
		cfg.Services = append(cfg.Services, e.services...)
	}
	if fe := checkPrefilterBackends(prefilter, cfg.Services, names); fe != nil {
		return Config{}, fileError(fe.line, fe.field, fe.value, fe.reason)
	}
	return cfg, nil
}

// interrupted is the error of a parse that ctx ended.
func interrupted(err error) error {
	return fmt.Errorf("reading stopped before the end: %w", err)
}

// checkExpansion refuses a document of more than max nodes once each
// alias is counted as the nodes it stands for, or with an alias inside
// the node it names (which would never end). It visits each node of the
// file once, and each alias's target once more.
func checkExpansion(doc *yaml.Node, lim readLimits) *ConfigError {
	c := expansion{max: lim.maxNodes, maxBytes: lim.maxBytes, sizes: map[*yaml.Node]int64{}, open: map[*yaml.Node]bool{}}
	c.size(doc)
	return c.err
}

type expansion struct {
	max      int64
	maxBytes int64                // for the error
	sizes    map[*yaml.Node]int64 // of each alias's target, once counted
	open     map[*yaml.Node]bool  // targets being counted
	err      *ConfigError
}

// size is the number of nodes n stands for, or more than max.
func (c *expansion) size(n *yaml.Node) int64 {
	if c.err != nil {
		return c.max + 1
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		t := n.Alias
		if s, ok := c.sizes[t]; ok {
			return s
		}
		if c.open[t] {
			c.err = fileError(n.Line, "yaml", "*"+n.Value, "the alias is inside the node it names")
			return c.max + 1
		}
		c.open[t] = true
		s := c.size(t)
		delete(c.open, t)
		c.sizes[t] = s
		return s
	}
	total := int64(1)
	for _, child := range n.Content {
		total += c.size(child)
		if total > c.max {
			if c.err == nil {
				line := child.Line
				if line == 0 {
					line = n.Line
				}
				c.err = fileError(line, "yaml", "", fmt.Sprintf(
					"more than %d nodes (keys, values, lists and mappings), counting each alias as the nodes it names, by here: "+
						"the limit for files of up to %d bytes (--max-config-bytes raises both)", c.max, c.maxBytes))
			}
			return c.max + 1
		}
	}
	return total
}

// unquotedIPv6 finds a frontend or address written [IPv6]:port without
// quotes, which YAML reads as the start of a list: the likeliest cause of
// a syntax error in a file with IPv6 services.
var unquotedIPv6 = regexp.MustCompile(`(frontend|address)\s*:\s*\[[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*\]`)

func fileError(line int, field, value, reason string) *ConfigError {
	return &ConfigError{Line: line, Index: -1, Field: field, Value: value, Reason: reason, Err: lb.ErrInvalid}
}

var topFields = []string{"nodeAddresses", "prefilter", "services"}

// listedAddr is an address from a list in the file, with where it is.
type listedAddr struct {
	addr  netip.Addr
	field string // for example "clusterIPs[1]"
	value string // as written
	line  int
}

// parseNodeAddresses reads the top-level nodeAddresses: this node's own
// addresses, each once.
func parseNodeAddresses(top mapping) ([]listedAddr, *fieldError) {
	items, fe := top.list("nodeAddresses")
	if fe != nil {
		return nil, fe
	}
	var out []listedAddr
	for k, item := range items {
		a, fe := parseListedAddr(fmt.Sprintf("nodeAddresses[%d]", k), item)
		if fe != nil {
			if _, err := netip.ParsePrefix(item.Value); err == nil {
				// kube-proxy's --nodeport-addresses takes prefixes.
				fe.reason = "want one of this node's addresses, not a prefix: list each address the node ports listen on"
			}
			return nil, fe
		}
		for _, prev := range out {
			if prev.addr == a.addr {
				return nil, &fieldError{line: a.line, field: a.field, value: a.value, reason: "duplicate of " + prev.field}
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// listedPrefix is a prefix of the prefilter, with where it is.
type listedPrefix struct {
	prefix netip.Prefix
	field  string // for example "prefilter[2]"
	value  string // as written
	line   int
}

// parsePrefilter reads the top-level prefilter: prefixes, or addresses
// meaning their one-address prefix, each once and without bits set past
// its length.
func parsePrefilter(top mapping) ([]listedPrefix, *fieldError) {
	items, fe := top.list("prefilter")
	if fe != nil {
		return nil, fe
	}
	var out []listedPrefix
	seen := make(map[netip.Prefix]string, len(items))
	for k, item := range items {
		field := fmt.Sprintf("prefilter[%d]", k)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			return nil, &fieldError{line: item.Line, field: field, reason: "want a prefix or an address, got " + kindName(item)}
		}
		s := item.Value
		bad := func(reason string) ([]listedPrefix, *fieldError) {
			return nil, &fieldError{line: item.Line, field: field, value: s, reason: reason}
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			switch {
			case aerr == nil && a.Zone() != "":
				return bad("want an address without a zone")
			case aerr == nil:
				p = netip.PrefixFrom(a, a.BitLen())
			case isAddrPort(s):
				return bad("want a prefix or an address, without a port: the prefilter drops every packet from a source")
			default:
				return bad("want a prefix such as 192.0.2.0/24 or 2001:db8::/32, or an address")
			}
		}
		if p.Addr().Is4In6() {
			// The datapath looks an IPv4 source up as IPv4: such a
			// prefix would never match.
			fix := "its IPv4 form"
			if p.Bits() >= 96 {
				fix = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).String()
			}
			return bad("an IPv4-mapped IPv6 prefix, which no IPv4 packet matches: write " + fix)
		}
		if m := p.Masked(); m != p {
			// Masking it would silently drop far more than the one
			// address a slip of the length may have meant.
			return bad(fmt.Sprintf("bits set past the prefix length: write %s for the prefix, or %s for the one address", m, p.Addr()))
		}
		if prev, dup := seen[p]; dup {
			return bad("duplicate of " + prev)
		}
		seen[p] = field
		out = append(out, listedPrefix{prefix: p, field: field, value: s, line: item.Line})
	}
	return out, nil
}

// checkPrefilterBackends refuses a prefix of the prefilter that contains a
// backend's address: under XDP the backends' replies arrive on interfaces
// the prefilter guards, and it would drop them. index maps a service's
// name to its index in services.
func checkPrefilterBackends(prefilter []listedPrefix, services []NamedService, index map[string]int) *fieldError {
	if len(prefilter) == 0 {
		return nil
	}
	// One lookup per prefix length in use, rather than one comparison per
	// prefix: the list may be long.
	at := make(map[netip.Prefix]int, len(prefilter))
	lengths := map[bool][]int{} // by Is4
	for k, p := range prefilter {
		at[p.prefix] = k
		if is4 := p.prefix.Addr().Is4(); !slices.Contains(lengths[is4], p.prefix.Bits()) {
			lengths[is4] = append(lengths[is4], p.prefix.Bits())
		}
	}
	first, backend, owner := -1, netip.Addr{}, NamedService{}
	for _, s := range services {
		for _, b := range s.Service.Backends {
			a := b.Address.Addr()
			for _, bits := range lengths[a.Is4()] {
				k, ok := at[netip.PrefixFrom(a, bits).Masked()]
				if ok && (first < 0 || k < first) {
					first, backend, owner = k, a, s
				}
			}
		}
	}
	if first < 0 {
		return nil
	}
	p, kind := prefilter[first], "a backend"
	if owner.Type != TypeFrontend {
		kind = "an endpoint"
	}
	return &fieldError{line: p.line, field: p.field, value: p.value,
		reason: fmt.Sprintf("contains %s, %s of services[%d] %q: the prefilter would drop its replies", backend, kind, index[owner.Name], owner.Name)}
}

// parseListedAddr parses an address without a port (a cluster IP, a node
// address, an endpoint) and applies lb's rules for service addresses.
func parseListedAddr(field string, n *yaml.Node) (listedAddr, *fieldError) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return listedAddr{}, &fieldError{line: n.Line, field: field, reason: "want an IP address, got " + kindName(n)}
	}
	s := n.Value
	bad := func(reason string) (listedAddr, *fieldError) {
		return listedAddr{}, &fieldError{line: n.Line, field: field, value: s, reason: reason}
	}
	a, err := netip.ParseAddr(s)
	switch {
	case s == "":
		return bad("missing")
	case err == nil:
	case isAddrPort(s):
		return bad("want an address without a port: the ports come from the service's ports")
	case isPrefix(s):
		return bad("want an address, not a prefix")
	default:
		return bad("not an IP address (host names are not resolved)")
	}
	if why := addrProblem(a); why != "" {
		return bad(why)
	}
	return listedAddr{addr: a, field: field, value: s, line: n.Line}, nil
}

func isAddrPort(s string) bool { _, err := netip.ParseAddrPort(s); return err == nil }
func isPrefix(s string) bool   { _, err := netip.ParsePrefix(s); return err == nil }

// addrProblem is lb's objection to a as the address of a frontend or a
// backend (the rules are the same), or "". Asking lb keeps one set of
// rules, and lets the error name the field as the file writes it.
func addrProblem(a netip.Addr) string {
	s := lb.Service{Frontend: lb.Frontend{Address: netip.AddrPortFrom(a, 1), Protocol: lb.TCP}}
	var ve *lb.ValidationError
	if errors.As(s.Validate(), &ve) {
		return ve.Reason
	}
	return ""
}

// parsePrefixes reads a list of prefixes (sourceRanges,
// loadBalancerSourceRanges) under lb's rules.
func parsePrefixes(m mapping, key string) ([]netip.Prefix, *fieldError) {
	items, fe := m.list(key)
	if fe != nil {
		return nil, fe
	}
	var out []netip.Prefix
	for k, item := range items {
		field := fmt.Sprintf("%s[%d]", m.prefix+key, k)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			return nil, &fieldError{line: item.Line, field: field, reason: "want a prefix, got " + kindName(item)}
		}
		bad := func(reason string) *fieldError {
			return &fieldError{line: item.Line, field: field, value: item.Value, reason: reason}
		}
		p, err := netip.ParsePrefix(item.Value)
		if err != nil {
			if a, err := netip.ParseAddr(item.Value); err == nil {
				return nil, bad(fmt.Sprintf("missing prefix length (write %s for one address)", netip.PrefixFrom(a, a.BitLen())))
			}
			return nil, bad("want a prefix such as 10.0.0.0/8 or fd00::/8")
		}
		// lb's own rules, on a frontend of the prefix's family (whether
		// the family suits the service is checked where it is known).
		probeFE := netip.MustParseAddrPort("192.0.2.1:1")
		if !p.Addr().Is4() {
			probeFE = netip.MustParseAddrPort("[2001:db8::1]:1")
		}
		probe := lb.Service{
			Frontend:     lb.Frontend{Address: probeFE, Protocol: lb.TCP},
			SourceRanges: []netip.Prefix{p},
		}
		var ve *lb.ValidationError
		if errors.As(probe.Validate(), &ve) {
			return nil, bad(ve.Reason)
		}
		out = append(out, p)
	}
	return out, nil
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
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

// fieldError is a problem found inside a mapping, before we know whose.
type fieldError struct {
	line   int
	field  string
	value  string
	reason string
}

// mappingFields indexes a mapping's values by key. It refuses keys
// outside known and keys given twice, but still returns the fields it
// could read, so that the error can name the service. hints gives the
// reason for keys that are known elsewhere (in the other form of a
// service).
func mappingFields(n *yaml.Node, known []string, hints map[string]string) (map[string]*yaml.Node, *fieldError) {
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	var first *fieldError
	for k := 0; k+1 < len(n.Content); k += 2 {
		key, val := deref(n.Content[k]), deref(n.Content[k+1])
		var fe *fieldError
		switch {
		case key.Kind != yaml.ScalarNode:
			fe = &fieldError{line: key.Line, field: "key", reason: "want a plain field name, got " + kindName(key)}
		case !slices.Contains(known, key.Value) && hints[key.Value] != "":
			fe = &fieldError{line: key.Line, field: key.Value, reason: hints[key.Value]}
		case !slices.Contains(known, key.Value) && nameProblem(key.Value) != "":
			// Written as Go would quote it, so that it prints safely.
			fe = &fieldError{line: key.Line, field: strconv.Quote(key.Value),
				reason: "unknown field (known: " + strings.Join(known, ", ") + ")"}
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

// nameProblem says what makes s unfit for a name (of a service, of a
// port), or "": names go to logs and to status's tables, where a control
// character could rewrite the terminal or forge a line.
func nameProblem(s string) string {
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case unicode.IsControl(r):
			return fmt.Sprintf("contains the control character %U: write printable characters only", r)
		case !unicode.IsPrint(r):
			return fmt.Sprintf("contains the unprintable character %U: write printable characters only (the space is the only blank allowed)", r)
		}
	}
	return ""
}

// hasKey reports whether the mapping n has the key.
func hasKey(n *yaml.Node, key string) bool {
	for k := 0; k+1 < len(n.Content); k += 2 {
		if kn := deref(n.Content[k]); kn.Kind == yaml.ScalarNode && kn.Value == key {
			return true
		}
	}
	return false
}

// mapping reads the fields of a YAML mapping by key. Absent and null
// fields read as not given.
type mapping struct {
	node   *yaml.Node
	fields map[string]*yaml.Node
	prefix string // put before field names in errors, such as "backends[0]."
}

// line is the line of the key's value, or of the mapping.
func (m mapping) line(key string) int {
	if n, ok := m.fields[key]; ok {
		return n.Line
	}
	return m.node.Line
}

// written is the key's value as written, when it is a single value.
func (m mapping) written(key string) string {
	if n, ok := m.fields[key]; ok && n.Kind == yaml.ScalarNode && !isNull(n) {
		return n.Value
	}
	return ""
}

func (m mapping) fail(key, value, reason string) *fieldError {
	return &fieldError{line: m.line(key), field: m.prefix + key, value: value, reason: reason}
}

// str returns the value of an optional single-value field; "" when it is
// not given.
func (m mapping) str(key string) (string, *fieldError) {
	n, ok := m.fields[key]
	if !ok || isNull(n) {
		return "", nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", m.fail(key, "", "want a single value, got "+kindName(n))
	}
	return n.Value, nil
}

// int returns an optional whole-number field, from lo to hi; want says
// what is wanted when it is not one.
func (m mapping) int(key string, lo, hi int64, want string) (int64, bool, *fieldError) {
	n, ok := m.fields[key]
	if !ok || isNull(n) {
		return 0, false, nil
	}
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil || v < lo || v > hi {
		value := ""
		if n.Kind == yaml.ScalarNode {
			value = n.Value
		}
		return 0, false, m.fail(key, value, want)
	}
	return v, true, nil
}

// bool returns an optional true or false field.
func (m mapping) bool(key string) (bool, *fieldError) {
	n, ok := m.fields[key]
	if !ok || isNull(n) {
		return false, nil
	}
	var v bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&v) != nil {
		value := ""
		if n.Kind == yaml.ScalarNode {
			value = n.Value
		}
		return false, m.fail(key, value, "want true or false")
	}
	return v, nil
}

// list returns the items of an optional list field.
func (m mapping) list(key string) ([]*yaml.Node, *fieldError) {
	n, ok := m.fields[key]
	if !ok || isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, m.fail(key, "", "want a list, got "+kindName(n))
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, item := range n.Content {
		out[i] = deref(item)
	}
	return out, nil
}

// item is the node of a list field's k-th item.
func (m mapping) item(key string, k int) *yaml.Node {
	if n, ok := m.fields[key]; ok && n.Kind == yaml.SequenceNode && k < len(n.Content) {
		return deref(n.Content[k])
	}
	return nil
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
