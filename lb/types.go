package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/xdplane/xdplane/internal/enum"
)

// Protocol is a transport protocol a frontend serves.
type Protocol uint8

// The protocols xdplane load-balances. The values are IANA protocol
// numbers.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

var protocols = enum.New[Protocol]("protocol", func() []string {
	names := make([]string, UDP+1)
	names[TCP], names[UDP] = "tcp", "udp"
	return names
}()...)

// ParseProtocol parses "tcp" or "udp", in any case. An error wraps
// ErrInvalid and quotes s.
func ParseProtocol(s string) (Protocol, error) { return protocols.Parse(s, ErrInvalid) }

// IsValid reports whether p is TCP or UDP.
func (p Protocol) IsValid() bool { return protocols.Valid(p) }

// String returns "tcp" or "udp", or "protocol(N)" for another protocol
// number N.
func (p Protocol) String() string { return protocols.String(p) }

// MarshalText implements encoding.TextMarshaler: the form of String. A
// protocol other than TCP and UDP is an error that wraps ErrInvalid.
func (p Protocol) MarshalText() ([]byte, error) { return protocols.Marshal(p, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler: what ParseProtocol
// accepts.
func (p *Protocol) UnmarshalText(b []byte) error { return protocols.Unmarshal(p, b, ErrInvalid) }

// Frontend is where clients reach a service: an address, a port and a
// protocol. It is comparable and identifies a service.
type Frontend struct {
	Address  netip.AddrPort
	Protocol Protocol
}

// String formats f as "10.96.0.10:80/tcp".
func (f Frontend) String() string {
	return f.Address.String() + "/" + f.Protocol.String()
}

// ParseFrontend parses the form String returns.
func ParseFrontend(s string) (Frontend, error) {
	addr, proto, ok := strings.Cut(s, "/")
	if !ok {
		return Frontend{}, fmt.Errorf("%w: frontend %q: want address:port/protocol", ErrInvalid, s)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return Frontend{}, fmt.Errorf("%w: frontend %q: %w", ErrInvalid, s, err)
	}
	p, err := ParseProtocol(proto)
	if err != nil {
		return Frontend{}, err
	}
	return Frontend{Address: ap, Protocol: p}, nil
}

func compareFrontends(a, b Frontend) int {
	if c := a.Address.Compare(b.Address); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}

// MaxWeight is the largest backend weight.
const MaxWeight = 1000

// BackendState says whether a backend takes new flows. Flows it already
// has continue in every state; a backend removed from the service loses
// them.
type BackendState uint8

const (
	// Active backends take new flows. The default.
	Active BackendState = iota
	// Terminating backends (Kubernetes: ready false, serving true) take
	// new flows only when no active backend is left, as kube-proxy falls
	// back to them.
	Terminating
	// Maintenance backends take no new flows.
	Maintenance
)

var backendStates = enum.New[BackendState]("backend state", "active", "terminating", "maintenance")

// ParseBackendState parses "active", "terminating" or "maintenance", in
// any case. An error wraps ErrInvalid and quotes s.
func ParseBackendState(s string) (BackendState, error) { return backendStates.Parse(s, ErrInvalid) }

// IsValid reports whether s is Active, Terminating or Maintenance.
func (s BackendState) IsValid() bool { return backendStates.Valid(s) }

// String returns "active", "terminating" or "maintenance", or "state(N)"
// for another value N.
func (s BackendState) String() string { return backendStates.String(s) }

// MarshalText implements encoding.TextMarshaler: the form of String. A
// value other than the three states is an error that wraps ErrInvalid.
func (s BackendState) MarshalText() ([]byte, error) { return backendStates.Marshal(s, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler: what
// ParseBackendState accepts.
func (s *BackendState) UnmarshalText(b []byte) error {
	return backendStates.Unmarshal(s, b, ErrInvalid)
}

// Backend is one destination of a service.
type Backend struct {
	// Address is where the backend listens.
	Address netip.AddrPort
	// Weight is the backend's share of new flows relative to the other
	// backends of the service, 1 to MaxWeight. Optional. Default: 1.
	Weight uint16
	// State says whether the backend takes new flows. Optional. Default:
	// Active.
	State BackendState
	// Local marks a backend on this node, for services whose
	// TrafficPolicy is Local. Optional. Default: false.
	Local bool
}

// TrafficPolicy says which backends a frontend's traffic may reach, as
// Kubernetes' externalTrafficPolicy (for NodePort, LoadBalancer and
// external IP frontends) and internalTrafficPolicy (for the cluster IP) do.
type TrafficPolicy uint8

const (
	// Cluster: every backend. The default.
	Cluster TrafficPolicy = iota
	// Local: only backends marked Local; with none, new flows are
	// dropped (rejected if no backend of the service, local or not,
	// takes new flows).
	Local
)

var trafficPolicies = enum.New[TrafficPolicy]("traffic policy", "cluster", "local")

// ParseTrafficPolicy parses "cluster" or "local", in any case. An error
// wraps ErrInvalid and quotes s.
func ParseTrafficPolicy(s string) (TrafficPolicy, error) { return trafficPolicies.Parse(s, ErrInvalid) }

// IsValid reports whether p is Cluster or Local.
func (p TrafficPolicy) IsValid() bool { return trafficPolicies.Valid(p) }

// String returns "cluster" or "local", or "policy(N)" for another value
// N.
func (p TrafficPolicy) String() string { return trafficPolicies.String(p) }

// MarshalText implements encoding.TextMarshaler: the form of String. A
// value other than Cluster and Local is an error that wraps ErrInvalid.
func (p TrafficPolicy) MarshalText() ([]byte, error) { return trafficPolicies.Marshal(p, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler: what
// ParseTrafficPolicy accepts.
func (p *TrafficPolicy) UnmarshalText(b []byte) error {
	return trafficPolicies.Unmarshal(p, b, ErrInvalid)
}

func (b Backend) weight() uint16 {
	if b.Weight == 0 {
		return 1
	}
	return b.Weight
}

// Algorithm is how a service picks the backend of a new flow.
type Algorithm uint8

const (
	// Random picks a backend at random, weighted. The default.
	Random Algorithm = iota // ALG_RANDOM in bpf/include/xdplane.h
	// Maglev picks by a hash of the flow's source address, ports and
	// protocol through the service's Maglev table (consistent hashing):
	// every node with the same backends picks the same one, and a change
	// of backends moves few flows.
	Maglev // ALG_MAGLEV
)

var algorithms = enum.New[Algorithm]("algorithm", "random", "maglev")

// ParseAlgorithm parses "random" or "maglev", in any case. An error wraps
// ErrInvalid and quotes s.
func ParseAlgorithm(s string) (Algorithm, error) { return algorithms.Parse(s, ErrInvalid) }

// IsValid reports whether a is Random or Maglev.
func (a Algorithm) IsValid() bool { return algorithms.Valid(a) }

// String returns "random" or "maglev", or "algorithm(N)" for another
// value N.
func (a Algorithm) String() string { return algorithms.String(a) }

// MarshalText implements encoding.TextMarshaler: the form of String. A
// value other than Random and Maglev is an error that wraps ErrInvalid.
func (a Algorithm) MarshalText() ([]byte, error) { return algorithms.Marshal(a, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler: what ParseAlgorithm
// accepts.
func (a *Algorithm) UnmarshalText(b []byte) error { return algorithms.Unmarshal(a, b, ErrInvalid) }

// Service is a frontend and the backends its flows are spread over. A
// service with no backends (or none that takes new flows) is valid: new
// flows are rejected with an ICMP port unreachable, as kube-proxy does.
type Service struct {
	Frontend Frontend
	Backends []Backend
	// Algorithm picks the backend of each new flow. Optional. Default:
	// Random.
	Algorithm Algorithm
	// MaglevTableSize is the number of entries in the Maglev table, a
	// prime from MinMaglevTableSize to MaxMaglevTableSize; only for
	// Maglev. Optional. Default: DefaultMaglevTableSize, or larger for
	// services with more than 32 backends, to keep 500 entries per
	// backend.
	MaglevTableSize uint32
	// SessionAffinity, when not zero, sends a client's new flows to the
	// backend of its previous one, as Kubernetes' sessionAffinity ClientIP
	// does, if that flow started no longer than this ago and the backend
	// is still there. Whole seconds, up to MaxSessionAffinity. Optional.
	// Default: 0, none. Kubernetes' own default timeout is
	// DefaultSessionAffinity.
	SessionAffinity time.Duration
	// TrafficPolicy limits new flows to local backends. Optional.
	// Default: Cluster.
	TrafficPolicy TrafficPolicy
	// VirtualIP marks a frontend address that belongs to services alone,
	// as a Kubernetes cluster IP does: TCP and UDP to its other ports are
	// rejected (ICMP port unreachable), not passed on. Optional. Default:
	// false (other ports pass, as a node address's must).
	VirtualIP bool
	// SourceRanges, when not empty, admit new flows only from clients in
	// these prefixes, as Kubernetes' loadBalancerSourceRanges do; flows
	// already established continue. The prefixes are of the frontend's
	// address family. Optional. Default: all clients.
	SourceRanges []netip.Prefix
}

// Session affinity timeouts, as Kubernetes defines them.
const (
	DefaultSessionAffinity = 10800 * time.Second
	MaxSessionAffinity     = 86400 * time.Second
)

// normalized returns s with defaults filled in and backends sorted, the form
// in which services are stored and compared.
func (s Service) normalized() Service {
	out := s
	out.Backends = make([]Backend, len(s.Backends))
	for i, b := range s.Backends {
		out.Backends[i] = b
		out.Backends[i].Weight = b.weight()
	}
	slices.SortFunc(out.Backends, func(a, b Backend) int { return a.Address.Compare(b.Address) })
	if len(s.SourceRanges) > 0 {
		out.SourceRanges = make([]netip.Prefix, len(s.SourceRanges))
		for i, p := range s.SourceRanges {
			out.SourceRanges[i] = p.Masked()
		}
		slices.SortFunc(out.SourceRanges, comparePrefixes)
		out.SourceRanges = slices.Compact(out.SourceRanges)
	}
	if out.Algorithm == Maglev && out.MaglevTableSize == 0 {
		out.MaglevTableSize = maglevTableSizeFor(len(out.Backends))
	}
	return out
}

// equal reports whether two normalized services are the same.
func (s Service) equal(o Service) bool {
	return s.Frontend == o.Frontend && slices.Equal(s.Backends, o.Backends) &&
		s.Algorithm == o.Algorithm && s.MaglevTableSize == o.MaglevTableSize &&
		s.SessionAffinity == o.SessionAffinity && s.TrafficPolicy == o.TrafficPolicy &&
		slices.Equal(s.SourceRanges, o.SourceRanges) && s.VirtualIP == o.VirtualIP
}

// eligible returns the backends of a normalized service that take new
// flows: under a Local policy only local ones; of those, the active ones,
// or if none is active, the terminating ones (kube-proxy's fallback).
func (s Service) eligible() []Backend { return s.eligibleUnder(s.TrafficPolicy) }

// dropsWithoutBackend reports whether new flows are to be dropped rather
// than rejected when no backend takes them: a Local policy leaves none
// here, but there are backends elsewhere (kube-proxy drops such traffic;
// it rejects only when a service has no endpoints at all).
func (s Service) dropsWithoutBackend() bool {
	return s.TrafficPolicy == Local && len(s.eligible()) == 0 && len(s.eligibleUnder(Cluster)) > 0
}

func (s Service) eligibleUnder(policy TrafficPolicy) []Backend {
	var active, terminating []Backend
	for _, b := range s.Backends {
		if policy == Local && !b.Local {
			continue
		}
		switch b.State {
		case Active:
			active = append(active, b)
		case Terminating:
			terminating = append(terminating, b)
		}
	}
	if len(active) > 0 {
		return active
	}
	return terminating
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
