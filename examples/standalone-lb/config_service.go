package main

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xdplane/xdplane/lb"
)

// The fields of each kind of mapping. A service is in the plain form
// (frontend) or the Kubernetes form (ports).
var (
	commonFields = []string{"algorithm", "maglevTableSize", "sessionAffinity"}
	plainFields  = slices.Concat([]string{"name", "frontend", "protocol"}, commonFields,
		[]string{"trafficPolicy", "sourceRanges", "backends"})
	kubeFields = slices.Concat([]string{"name", "clusterIPs", "externalIPs", "loadBalancerIPs", "ports"}, commonFields,
		[]string{"externalTrafficPolicy", "internalTrafficPolicy", "loadBalancerSourceRanges", "endpoints"})
	// A service in neither form yet may have the fields of both.
	anyFields     = union(plainFields, kubeFields)
	backendFields = []string{"address", "weight", "state", "local"}
)

// union is a followed by the elements of b not in a.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Hints for a field of one form used in the other.
var (
	kubeOnly = map[string]string{
		"clusterIPs":               "only in the Kubernetes form (a service with ports instead of a frontend)",
		"externalIPs":              "only in the Kubernetes form (a service with ports instead of a frontend)",
		"loadBalancerIPs":          "only in the Kubernetes form (a service with ports instead of a frontend)",
		"endpoints":                "only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write backends",
		"externalTrafficPolicy":    "only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write trafficPolicy",
		"internalTrafficPolicy":    "only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write trafficPolicy",
		"loadBalancerSourceRanges": "only in the Kubernetes form (a service with ports instead of a frontend); with a frontend, write sourceRanges",
	}
	plainOnly = map[string]string{
		"protocol":      "with ports, each port has its own protocol",
		"backends":      "with ports, write endpoints (addresses without a port: the port is each port's targetPort)",
		"trafficPolicy": "with ports, write externalTrafficPolicy and internalTrafficPolicy",
		"sourceRanges":  "with ports, write loadBalancerSourceRanges",
	}
)

// parsed is one entry of services: its name, and its frontends with the
// field that made each.
type parsed struct {
	name     string
	services []NamedService
	origins  []origin // parallel to services
	// backends is the field of the service's backends ("backends", or
	// "endpoints" in the Kubernetes form), backendsLine its line.
	backends     string
	backendsLine int
}

// origin is the field a frontend comes from, as written.
type origin struct {
	field, value string
	line         int
	// with is the field that makes the frontend together with field, in
	// the Kubernetes form: "ports[k]" for an address, "nodeAddresses[i]"
	// for a node port.
	with string
}

// svcCtx makes errors about one service.
type svcCtx struct {
	index int
	name  string
	line  int
}

func (c svcCtx) fail(fe *fieldError) error {
	return &ConfigError{Line: fe.line, Index: c.index, Name: c.name, Field: fe.field, Value: fe.value, Reason: fe.reason, Err: lb.ErrInvalid}
}

func parseService(i int, n *yaml.Node, nodeAddrs []listedAddr) (parsed, error) {
	c := svcCtx{index: i, line: n.Line}
	if n.Kind != yaml.MappingNode {
		return parsed{}, c.fail(&fieldError{line: n.Line, field: "service",
			reason: "want a mapping with a name and a frontend (or ports), got " + kindName(n)})
	}
	plain, kube := hasKey(n, "frontend"), hasKey(n, "ports")
	known, hints := anyFields, map[string]string(nil)
	switch {
	case plain && !kube:
		known, hints = plainFields, kubeOnly
	case kube && !plain:
		known, hints = kubeFields, plainOnly
	}
	fields, fe := mappingFields(n, known, hints)
	m := mapping{node: n, fields: fields}
	// The name comes first so that every later error can carry it.
	name, nameErr := m.str("name")
	if fe != nil {
		c.name = name
		return parsed{}, c.fail(fe)
	}
	if nameErr != nil {
		return parsed{}, c.fail(nameErr)
	}
	if name == "" {
		return parsed{}, c.fail(&fieldError{line: n.Line, field: "name", reason: "missing"})
	}
	if why := nameProblem(name); why != "" {
		// The error quotes it; the name is not put on the service, where
		// it would be quoted twice.
		return parsed{}, c.fail(m.fail("name", name, why))
	}
	c.name = name

	switch {
	case plain && kube:
		return parsed{}, c.fail(m.fail("ports", "",
			"a service has a frontend or ports (the Kubernetes form), not both: write one service for each"))
	case !plain && !kube:
		return parsed{}, c.fail(&fieldError{line: n.Line, field: "frontend", reason: "missing (or write ports, for a Kubernetes-shaped service)"})
	}
	cm, fe := parseCommon(m)
	if fe != nil {
		return parsed{}, c.fail(fe)
	}
	if kube {
		return parseKube(c, m, cm, nodeAddrs)
	}
	s, err := parsePlain(c, m, cm)
	if err != nil {
		return parsed{}, err
	}
	return parsed{name: name, backends: "backends", backendsLine: m.line("backends"), services: []NamedService{s},
		origins: []origin{{field: "frontend", value: m.written("frontend"), line: m.line("frontend")}}}, nil
}

// common holds the fields both forms share.
type common struct {
	algorithm lb.Algorithm
	tableSize uint32
	affinity  time.Duration
}

func parseCommon(m mapping) (common, *fieldError) {
	var cm common
	alg, fe := m.str("algorithm")
	if fe != nil {
		return cm, fe
	}
	if alg != "" {
		a, err := lb.ParseAlgorithm(alg)
		if err != nil {
			return cm, m.fail("algorithm", alg, "want random or maglev")
		}
		cm.algorithm = a
	}
	size, ok, fe := m.int("maglevTableSize", 1, math.MaxUint32,
		fmt.Sprintf("want a whole number: a prime from %d to %d, such as %d", lb.MinMaglevTableSize, lb.MaxMaglevTableSize, lb.DefaultMaglevTableSize))
	if fe != nil {
		return cm, fe
	}
	if ok {
		cm.tableSize = uint32(size)
	}
	aff, fe := m.str("sessionAffinity")
	if fe != nil {
		return cm, fe
	}
	if aff != "" {
		d, why := parseAffinity(aff)
		if why != "" {
			return cm, m.fail("sessionAffinity", aff, why)
		}
		cm.affinity = d
	}
	return cm, nil
}

// parseAffinity reads a session affinity: none, clientIP (Kubernetes'
// ClientIP with its default timeout) or a timeout as a Go duration. lb
// checks the range.
func parseAffinity(s string) (time.Duration, string) {
	switch strings.ToLower(s) {
	case "none":
		return 0, ""
	case "clientip":
		return lb.DefaultSessionAffinity, ""
	}
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, ""
	}
	if _, err := time.ParseDuration(s + "s"); err == nil {
		return 0, fmt.Sprintf("missing unit: write %ss for seconds, or a duration such as 3h", s)
	}
	return 0, "want clientIP, none or a duration such as 3h or 10800s"
}

func parsePolicy(m mapping, key string) (lb.TrafficPolicy, *fieldError) {
	s, fe := m.str(key)
	if fe != nil || s == "" {
		return lb.Cluster, fe
	}
	p, err := lb.ParseTrafficPolicy(s)
	if err != nil {
		return 0, m.fail(key, s, "want cluster or local")
	}
	return p, nil
}

// parseState reads a backend's or endpoint's state.
func parseState(m mapping) (lb.BackendState, *fieldError) {
	s, fe := m.str("state")
	if fe != nil || s == "" {
		return lb.Active, fe
	}
	st, err := lb.ParseBackendState(s)
	if err != nil {
		return 0, m.fail("state", s, "want active, terminating or maintenance")
	}
	return st, nil
}

// parseWeight reads a backend's or endpoint's weight; default 1.
func parseWeight(m mapping) (uint16, *fieldError) {
	w, ok, fe := m.int("weight", 1, lb.MaxWeight, fmt.Sprintf("want a whole number from 1 to %d", lb.MaxWeight))
	if fe != nil || !ok {
		return 1, fe
	}
	return uint16(w), nil
}

// parsePlain reads a service in the plain form: one frontend and its
// backends.
func parsePlain(c svcCtx, m mapping, cm common) (NamedService, error) {
	s := NamedService{Name: c.name, Type: TypeFrontend}
	s.Service.Algorithm, s.Service.MaglevTableSize, s.Service.SessionAffinity = cm.algorithm, cm.tableSize, cm.affinity

	frontend, fe := m.str("frontend")
	if fe != nil {
		return s, c.fail(fe)
	}
	addr, reason := parseAddrPort(frontend)
	if reason != "" {
		return s, c.fail(m.fail("frontend", frontend, reason))
	}
	s.Service.Frontend.Address = addr

	proto, fe := m.str("protocol")
	if fe != nil {
		return s, c.fail(fe)
	}
	s.Service.Frontend.Protocol = lb.TCP
	if proto != "" {
		p, err := lb.ParseProtocol(proto)
		if err != nil {
			return s, c.fail(m.fail("protocol", proto, "want tcp or udp"))
		}
		s.Service.Frontend.Protocol = p
	}

	if s.Service.TrafficPolicy, fe = parsePolicy(m, "trafficPolicy"); fe != nil {
		return s, c.fail(fe)
	}
	if s.Service.SourceRanges, fe = parsePrefixes(m, "sourceRanges"); fe != nil {
		return s, c.fail(fe)
	}
	// One frontend, one family: a prefix of the other family is refused,
	// as lb refuses it (an IPv6 ::/0 would cover IPv4 clients in their
	// v4-mapped form).
	for k, p := range s.Service.SourceRanges {
		if p.Addr().Is4() != addr.Addr().Is4() {
			fe := m.fail(fmt.Sprintf("sourceRanges[%d]", k), p.String(),
				fmt.Sprintf("not of the frontend's address family (%s)", familyName(addr.Addr())))
			fe.line = m.line("sourceRanges")
			return s, c.fail(fe)
		}
	}

	items, fe := m.list("backends")
	if fe != nil {
		return s, c.fail(fe)
	}
	var backends []mapping // for errors that lb's validation reports
	for j, item := range items {
		b, bm, fe := parseBackend(j, item)
		if fe != nil {
			return s, c.fail(fe)
		}
		s.Service.Backends = append(s.Service.Backends, b)
		backends = append(backends, bm)
	}

	// lb knows the remaining rules (port 0, one address family per
	// service, multicast, duplicate backends, Maglev table sizes,
	// affinity timeouts...): ask it, and say it in the file's terms.
	if verr := s.Service.Validate(); verr != nil {
		ce := c.lbError(verr, m)
		var ve *lb.ValidationError
		if errors.As(verr, &ve) {
			switch {
			case strings.HasPrefix(ve.Field, "frontend."):
				ce.Field, ce.Value, ce.Line = "frontend", frontend, m.line("frontend")
			case strings.HasPrefix(ve.Field, "backends["):
				var j int
				if _, err := fmt.Sscanf(ve.Field, "backends[%d]", &j); err == nil && j < len(backends) {
					bm := backends[j]
					ce.Line = bm.node.Line
					if key, ok := strings.CutPrefix(ve.Field, bm.prefix); ok && bm.written(key) != "" {
						ce.Value, ce.Line = bm.written(key), bm.line(key)
					}
					if b := s.Service.Backends[j].Address.Addr(); strings.HasSuffix(ve.Field, ".address") &&
						b.IsValid() && b.Is4() != addr.Addr().Is4() {
						ce.Reason += fmt.Sprintf(" (an %s backend for an %s frontend; write one service per family)",
							familyName(b), familyName(addr.Addr()))
					}
				}
			}
		}
		return s, ce
	}
	return s, nil
}

// hasFamily reports whether a prefix of a's family is among ps.
func hasFamily(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Addr().Is4() == a.Is4() {
			return true
		}
	}
	return false
}

// lbError turns an error of lb's validation into a *ConfigError about the
// service, naming the field as lb does and, for the fields both share, as
// written in m. Callers rename the fields lb and the file name
// differently.
func (c svcCtx) lbError(verr error, m mapping) *ConfigError {
	ce := &ConfigError{Line: c.line, Index: c.index, Name: c.name, Err: verr, Reason: verr.Error()}
	var ve *lb.ValidationError
	if !errors.As(verr, &ve) {
		return ce
	}
	ce.Field, ce.Value, ce.Reason = ve.Field, fmt.Sprint(ve.Value), ve.Reason
	if n, ok := m.fields[ve.Field]; ok {
		ce.Line, ce.Value = n.Line, m.written(ve.Field)
	}
	var k int
	if _, err := fmt.Sscanf(ve.Field, "sourceRanges[%d]", &k); err == nil {
		if n := m.item("sourceRanges", k); n != nil {
			ce.Line, ce.Value = n.Line, n.Value
		}
	}
	if ve.Field == "backends" {
		ce.Value = ""
	}
	return ce
}

// parseBackend returns a backend of the plain form, its fields, or what
// is wrong with it.
func parseBackend(j int, n *yaml.Node) (lb.Backend, mapping, *fieldError) {
	prefix := fmt.Sprintf("backends[%d]", j)
	if n.Kind != yaml.MappingNode {
		return lb.Backend{}, mapping{}, &fieldError{line: n.Line, field: prefix,
			reason: "want a mapping with an address (and weight, state, local), got " + kindName(n)}
	}
	fields, fe := mappingFields(n, backendFields, nil)
	if fe != nil {
		fe.field = prefix + "." + fe.field
		return lb.Backend{}, mapping{}, fe
	}
	m := mapping{node: n, fields: fields, prefix: prefix + "."}
	text, fe := m.str("address")
	if fe != nil {
		return lb.Backend{}, m, fe
	}
	addr, reason := parseAddrPort(text)
	if reason != "" {
		return lb.Backend{}, m, m.fail("address", text, reason)
	}
	b := lb.Backend{Address: addr}
	if b.Weight, fe = parseWeight(m); fe != nil {
		return lb.Backend{}, m, fe
	}
	if b.State, fe = parseState(m); fe != nil {
		return lb.Backend{}, m, fe
	}
	if b.Local, fe = m.bool("local"); fe != nil {
		return lb.Backend{}, m, fe
	}
	return b, m, nil
}
