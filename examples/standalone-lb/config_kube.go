package main

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/xdplane/xdplane/lb"
)

var portFields = []string{"name", "protocol", "port", "targetPort", "nodePort"}

const wantPort = "want a port number from 1 to 65535"

// kubePort is a port of a Kubernetes-shaped service as the file gives it.
type kubePort struct {
	lb.KubePort
	target uint16 // the endpoints' port
	m      mapping
}

// endpoint is an endpoint of a Kubernetes-shaped service as the file
// gives it.
type endpoint struct {
	addr   listedAddr
	weight uint16
	state  lb.BackendState
	local  bool
	m      mapping
}

// kubeOrigin is what made a frontend of a Kubernetes-shaped service.
type kubeOrigin struct {
	origin
	typ     FrontendType
	portIdx int // index in ports
}

// parseKube reads a service in the Kubernetes form and expands it with
// lb.KubeService.Expand to one service per frontend.
func parseKube(c svcCtx, m mapping, cm common, nodeAddrs []listedAddr) (parsed, error) {
	ks := lb.KubeService{Algorithm: cm.algorithm, MaglevTableSize: cm.tableSize, SessionAffinity: cm.affinity}

	// The service's own addresses, each in one list once: an address in
	// two would make every frontend twice.
	addrs := map[FrontendType][]listedAddr{}
	listed := map[netip.Addr]string{}
	for _, l := range []struct {
		key string
		typ FrontendType
		dst *[]netip.Addr
	}{
		{"clusterIPs", TypeClusterIP, &ks.ClusterIPs},
		{"externalIPs", TypeExternalIP, &ks.ExternalIPs},
		{"loadBalancerIPs", TypeLoadBalancer, &ks.LoadBalancerIPs},
	} {
		items, fe := m.list(l.key)
		if fe != nil {
			return parsed{}, c.fail(fe)
		}
		for k, item := range items {
			a, fe := parseListedAddr(fmt.Sprintf("%s[%d]", l.key, k), item)
			if fe != nil {
				return parsed{}, c.fail(fe)
			}
			if prev, dup := listed[a.addr]; dup {
				return parsed{}, c.fail(&fieldError{line: a.line, field: a.field, value: a.value, reason: "already listed in " + prev})
			}
			listed[a.addr] = a.field
			addrs[l.typ] = append(addrs[l.typ], a)
			*l.dst = append(*l.dst, a.addr)
		}
	}

	ports, err := parsePorts(c, m)
	if err != nil {
		return parsed{}, err
	}
	for _, p := range ports {
		ks.Ports = append(ks.Ports, p.KubePort)
	}

	var fe *fieldError
	if ks.ExternalTrafficPolicy, fe = parsePolicy(m, "externalTrafficPolicy"); fe != nil {
		return parsed{}, c.fail(fe)
	}
	if ks.InternalTrafficPolicy, fe = parsePolicy(m, "internalTrafficPolicy"); fe != nil {
		return parsed{}, c.fail(fe)
	}
	ranges, fe := parsePrefixes(m, "loadBalancerSourceRanges")
	if fe != nil {
		return parsed{}, c.fail(fe)
	}
	if len(ranges) > 0 && len(ks.LoadBalancerIPs) == 0 {
		// As kube-proxy: the ranges guard load balancer IPs only, not
		// node ports or external IPs; better say so than let a reader
		// think them guarded.
		return parsed{}, c.fail(m.fail("loadBalancerSourceRanges", "",
			"applies to loadBalancerIPs only, and the service has none (node ports and external IPs are not restricted)"))
	}
	ks.LoadBalancerSourceRanges = ranges

	// Node ports listen on the node addresses of the service's families:
	// those of its cluster IPs, as kube-proxy serves a service in the
	// families of its clusterIPs; every node address when it has none.
	for _, p := range ports {
		if p.NodePort == 0 {
			continue
		}
		if len(nodeAddrs) == 0 {
			return parsed{}, c.fail(p.m.fail("nodePort", fmt.Sprint(p.NodePort),
				"no nodeAddresses to listen on: list this node's addresses under nodeAddresses at the top of the file"))
		}
		for _, a := range nodeAddrs {
			if len(ks.ClusterIPs) == 0 || slices.ContainsFunc(ks.ClusterIPs, func(ip netip.Addr) bool { return ip.Is4() == a.addr.Is4() }) {
				ks.NodeAddresses = append(ks.NodeAddresses, a.addr)
				addrs[TypeNodePort] = append(addrs[TypeNodePort], a)
			}
		}
		if len(ks.NodeAddresses) == 0 {
			return parsed{}, c.fail(p.m.fail("nodePort", fmt.Sprint(p.NodePort),
				fmt.Sprintf("nodeAddresses has no %s address, the family of the service's clusterIPs", familyName(ks.ClusterIPs[0]))))
		}
		break
	}

	// Every frontend, with the field that makes it, in Expand's order.
	origins := map[lb.Frontend]kubeOrigin{}
	for k, p := range ports {
		portField := fmt.Sprintf("ports[%d]", k)
		for _, typ := range []FrontendType{TypeClusterIP, TypeExternalIP, TypeLoadBalancer, TypeNodePort} {
			port := p.Port
			if typ == TypeNodePort {
				if port = p.NodePort; port == 0 {
					continue
				}
			}
			for _, a := range addrs[typ] {
				fe := lb.Frontend{Address: netip.AddrPortFrom(a.addr, port), Protocol: p.Protocol}
				o := kubeOrigin{origin: origin{field: a.field, value: a.value, line: a.line, with: portField}, typ: typ, portIdx: k}
				if typ == TypeNodePort {
					// The node port is the service's; the address, the
					// node's.
					o.origin = origin{field: portField + ".nodePort", value: fmt.Sprint(port), line: p.m.line("nodePort"), with: a.field}
				}
				if prev, dup := origins[fe]; dup {
					// Only a node address that is also one of the
					// service's addresses, with a node port equal to a
					// port, gets here.
					return parsed{}, c.fail(&fieldError{line: o.line, field: o.field, value: o.value,
						reason: fmt.Sprintf("on %s it makes %s, which %s with %s already is", a.field, fe, prev.field, prev.with)})
				}
				origins[fe] = o
			}
		}
	}
	if len(origins) == 0 {
		return parsed{}, c.fail(&fieldError{line: c.line, field: "clusterIPs",
			reason: "missing: the service has no frontend (give clusterIPs, externalIPs, loadBalancerIPs or a nodePort)"})
	}

	endpoints, err := parseEndpoints(c, m, origins)
	if err != nil {
		return parsed{}, err
	}
	for _, ep := range endpoints {
		ke := lb.KubeEndpoint{Address: ep.addr.addr, Ports: map[string]uint16{}, Local: ep.local, Weight: ep.weight}
		for _, p := range ports {
			ke.Ports[p.Name] = p.target
		}
		switch ep.state {
		case lb.Active:
			ke.Ready, ke.Serving = true, true
		case lb.Terminating:
			ke.Serving, ke.Terminating = true, true
		}
		// An endpoint in maintenance has no EndpointSlice conditions:
		// Expand leaves it out, and it is added below.
		ks.Endpoints = append(ks.Endpoints, ke)
	}

	kubeErr := func(verr error) error {
		return c.kubeError(verr, m, origins, endpoints, ranges)
	}
	services, err := ks.Expand()
	if err != nil {
		return parsed{}, kubeErr(err)
	}
	out := parsed{name: c.name, backends: "endpoints", backendsLine: m.line("endpoints")}
	for _, s := range services {
		o, ok := origins[s.Frontend]
		if !ok {
			return parsed{}, fmt.Errorf("%w: services[%d] %q: expanded to %s, which no field makes", lb.ErrInvalid, c.index, c.name, s.Frontend)
		}
		fam := s.Frontend.Address.Addr().Is4()
		// Endpoints in maintenance stay in the service, taking no new
		// flows, so that their established ones carry on.
		for _, ep := range endpoints {
			if ep.state == lb.Maintenance && ep.addr.addr.Is4() == fam {
				s.Backends = append(s.Backends, lb.Backend{
					Address: netip.AddrPortFrom(ep.addr.addr, ports[o.portIdx].target),
					Weight:  ep.weight, State: lb.Maintenance, Local: ep.local,
				})
			}
		}
		if err := s.Validate(); err != nil {
			return parsed{}, kubeErr(err)
		}
		out.services = append(out.services, NamedService{Name: c.name, Port: ports[o.portIdx].Name, Type: o.typ, Service: s})
		out.origins = append(out.origins, o.origin)
	}
	return out, nil
}

// parsePorts reads ports: at least one; a name for each when there are
// several; no port or node port twice for one protocol.
func parsePorts(c svcCtx, m mapping) ([]kubePort, error) {
	items, fe := m.list("ports")
	if fe != nil {
		return nil, c.fail(fe)
	}
	if len(items) == 0 {
		return nil, c.fail(m.fail("ports", "", "want at least one port, such as {port: 80, targetPort: 8080}"))
	}
	var ports []kubePort
	for k, item := range items {
		p, fe := parsePort(k, item)
		if fe != nil {
			return nil, c.fail(fe)
		}
		if p.Name == "" && len(items) > 1 {
			return nil, c.fail(p.m.fail("name", "", "missing: a service with several ports names each, as Kubernetes does"))
		}
		for j, q := range ports {
			switch {
			case q.Name == p.Name:
				return nil, c.fail(p.m.fail("name", p.Name, fmt.Sprintf("duplicate of ports[%d]", j)))
			case q.Port == p.Port && q.Protocol == p.Protocol:
				return nil, c.fail(p.m.fail("port", fmt.Sprint(p.Port), fmt.Sprintf("ports[%d] already serves %d/%s", j, p.Port, p.Protocol)))
			case p.NodePort != 0 && q.NodePort == p.NodePort && q.Protocol == p.Protocol:
				return nil, c.fail(p.m.fail("nodePort", fmt.Sprint(p.NodePort),
					fmt.Sprintf("ports[%d] already has node port %d/%s", j, p.NodePort, p.Protocol)))
			}
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func parsePort(k int, n *yaml.Node) (kubePort, *fieldError) {
	prefix := fmt.Sprintf("ports[%d]", k)
	if n.Kind != yaml.MappingNode {
		return kubePort{}, &fieldError{line: n.Line, field: prefix,
			reason: "want a mapping with a port (and name, protocol, targetPort, nodePort), got " + kindName(n)}
	}
	fields, fe := mappingFields(n, portFields, nil)
	if fe != nil {
		fe.field = prefix + "." + fe.field
		return kubePort{}, fe
	}
	m := mapping{node: n, fields: fields, prefix: prefix + "."}
	p := kubePort{m: m}
	if p.Name, fe = m.str("name"); fe != nil {
		return p, fe
	}
	if why := nameProblem(p.Name); p.Name != "" && why != "" {
		return p, m.fail("name", p.Name, why)
	}
	proto, fe := m.str("protocol")
	if fe != nil {
		return p, fe
	}
	p.Protocol = lb.TCP
	if proto != "" {
		v, err := lb.ParseProtocol(proto)
		if err != nil {
			return p, m.fail("protocol", proto, "want TCP or UDP")
		}
		p.Protocol = v
	}
	port, ok, fe := m.int("port", 1, 65535, wantPort)
	if fe != nil {
		return p, fe
	}
	if !ok {
		return p, m.fail("port", "", "missing")
	}
	p.Port, p.target = uint16(port), uint16(port)
	target, ok, fe := m.int("targetPort", 1, 65535, wantPort)
	if fe != nil {
		if n := fields["targetPort"]; n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			fe.reason = wantPort + " (named target ports are not resolved: write the endpoints' port number)"
		}
		return p, fe
	}
	if ok {
		p.target = uint16(target)
	}
	nodePort, ok, fe := m.int("nodePort", 1, 65535, wantPort)
	if fe != nil {
		return p, fe
	}
	if ok {
		p.NodePort = uint16(nodePort)
	}
	return p, nil
}

// parseEndpoints reads endpoints: each address once, and of the family of
// some frontend.
func parseEndpoints(c svcCtx, m mapping, origins map[lb.Frontend]kubeOrigin) ([]endpoint, error) {
	items, fe := m.list("endpoints")
	if fe != nil {
		return nil, c.fail(fe)
	}
	families := map[bool]bool{}
	for f := range origins {
		families[f.Address.Addr().Is4()] = true
	}
	var out []endpoint
	for k, n := range items {
		prefix := fmt.Sprintf("endpoints[%d]", k)
		if n.Kind != yaml.MappingNode {
			return nil, c.fail(&fieldError{line: n.Line, field: prefix,
				reason: "want a mapping with an address (and weight, state, local), got " + kindName(n)})
		}
		fields, fe := mappingFields(n, backendFields, nil)
		if fe != nil {
			fe.field = prefix + "." + fe.field
			return nil, c.fail(fe)
		}
		em := mapping{node: n, fields: fields, prefix: prefix + "."}
		ep := endpoint{m: em}
		an, ok := fields["address"]
		if !ok || isNull(an) {
			return nil, c.fail(em.fail("address", "", "missing"))
		}
		if ep.addr, fe = parseListedAddr(prefix+".address", an); fe != nil {
			if isAddrPort(fe.value) {
				fe.reason = "want an address without a port: the port is each port's targetPort"
			}
			return nil, c.fail(fe)
		}
		for j, prev := range out {
			if prev.addr.addr == ep.addr.addr {
				return nil, c.fail(em.fail("address", ep.addr.value, fmt.Sprintf("duplicate of endpoints[%d]", j)))
			}
		}
		if !families[ep.addr.addr.Is4()] {
			fam := familyName(ep.addr.addr)
			return nil, c.fail(em.fail("address", ep.addr.value,
				fmt.Sprintf("an %s endpoint, but the service has no %s frontend (in clusterIPs, externalIPs, loadBalancerIPs or nodeAddresses)", fam, fam)))
		}
		if ep.weight, fe = parseWeight(em); fe != nil {
			return nil, c.fail(fe)
		}
		if ep.state, fe = parseState(em); fe != nil {
			return nil, c.fail(fe)
		}
		if ep.local, fe = em.bool("local"); fe != nil {
			return nil, c.fail(fe)
		}
		out = append(out, ep)
	}
	return out, nil
}

// kubeError turns an error from Expand, or from the validation of one of
// its services, into a *ConfigError naming the field of the file.
func (c svcCtx) kubeError(verr error, m mapping, origins map[lb.Frontend]kubeOrigin, endpoints []endpoint, ranges []netip.Prefix) error {
	ce := c.lbError(verr, m)
	var ve *lb.ValidationError
	if !errors.As(verr, &ve) {
		return ce
	}
	switch {
	case strings.HasPrefix(ve.Field, "frontend."):
		if o, ok := origins[ve.Frontend]; ok {
			ce.Field, ce.Value, ce.Line = o.field, o.value, o.line
		}
	case strings.HasPrefix(ve.Field, "sourceRanges["):
		ce.Field = "loadBalancerSourceRanges"
		if k := slices.IndexFunc(ranges, func(p netip.Prefix) bool { return p == ve.Value }); k >= 0 {
			n := m.item("loadBalancerSourceRanges", k)
			ce.Field, ce.Value, ce.Line = fmt.Sprintf("loadBalancerSourceRanges[%d]", k), n.Value, n.Line
		}
	case ve.Field == "backends":
		ce.Field, ce.Line = "endpoints", m.line("endpoints")
	case strings.HasPrefix(ve.Field, "backends["):
		ap, _ := ve.Value.(netip.AddrPort)
		_, rest, _ := strings.Cut(ve.Field, "]")
		for k, ep := range endpoints {
			if ep.addr.addr == ap.Addr() {
				ce.Field, ce.Line = fmt.Sprintf("endpoints[%d]%s", k, rest), ep.m.node.Line
				if key := strings.TrimPrefix(rest, "."); ep.m.written(key) != "" {
					ce.Value, ce.Line = ep.m.written(key), ep.m.line(key)
				}
			}
		}
	}
	return ce
}
