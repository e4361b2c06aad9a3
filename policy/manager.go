package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/idalloc"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/verr"
)

// Endpoint is a pod as network policy sees it: the host side of its
// interface, which is where the datapath judges its traffic, and its
// addresses.
type Endpoint struct {
	// Interface is the name of the pod's host-side interface (a veth),
	// in the network namespace the Manager runs in. Required.
	Interface string
	// Addresses are the pod's addresses, for callers and events; the
	// datapath identifies the endpoint by its interface, which a pod
	// cannot forge. Optional; each valid and listed once.
	Addresses []netip.Addr
}

// EndpointStatus is an endpoint as the Manager holds it.
type EndpointStatus struct {
	Endpoint
	// ID is the endpoint's id in the datapath, as drop events carry it.
	ID uint32
	// Policy is what SetPolicy last installed. Recovered is true, and
	// Policy is empty, for an endpoint found in the maps at start: the
	// rules in force are the earlier process's, unknown to this one, until
	// the next SetPolicy.
	Policy    Policy
	Recovered bool
	// Fingerprint identifies the endpoint's state in the datapath: its
	// interface, id and rules. It changes when the endpoint is added
	// again after a removal, moves to a re-created interface or gets
	// other rules, and is the same for a Manager that recovered the
	// endpoint unchanged: a CNI plugin's CHECK compares it with what ADD
	// saw.
	Fingerprint string
}

// Manager installs endpoints and their policies into a datapath. Every
// change is all or nothing: a call that fails leaves the kernel as it
// was, and an endpoint switches from its old rules to its new ones with a
// single map update, so no packet is ever judged by a mix of the two.
//
// Identical rules are stored once: endpoints whose policy for a direction
// compiles to the same entries share them.
//
// A Manager is safe for concurrent use. It holds the datapath's "policy"
// lock until Close, so a second Manager on the same datapath, in this
// process or another, fails with ErrBusy.
type Manager struct {
	dp     *datapath.Datapath
	k      *kernel.Handle
	limits datapath.Limits
	held   *kernel.Held // the datapath's "policy" lock, until Close

	mu        sync.Mutex
	endpoints map[string]*endpointState // by interface name
	rulesets  map[[32]byte]*installed   // by digest of the compiled rules
	byID      map[uint32]*installed     // by policy id
	epIDs     *idalloc.Alloc
	policyIDs *idalloc.Alloc
	rsIDs     *idalloc.Alloc
	peers     int // entries in policy_peers and policy_peer_hash
	ports     int // entries in policy_ports and policy_port_hash
}

type endpointState struct {
	status  EndpointStatus
	cookie  uint32 // in its policy_ct keys; new each time it is added
	ifindex uint32
	ingress *installed // nil: no rules to look up
	egress  *installed
	flags   uint8 // endpoint.PolicyFlags
}

// installed is one direction's compiled rules in the maps, shared by every
// endpoint whose rules compile to the same entries.
type installed struct {
	digest [32]byte
	id     uint32 // policy id: the prefix of its policy_peers keys
	refs   int
	// Peers live in policy_peer_hash, with the lengths in policy_lens,
	// or, past PLENS_MAX lengths, in the trie policy_peers. Ports naming
	// one port live in policy_port_hash, the others in the trie.
	peerKeys  []bpf.XdplanePeerKey
	peerHKeys []bpf.XdplanePeerHkey
	portKeys  []bpf.XdplanePortKey
	portHKeys []bpf.XdplanePortHkey
	rulesets  []uint32
}

// Counters are an endpoint's packets in one direction.
type Counters struct {
	AllowedPackets, AllowedBytes uint64
	DeniedPackets, DeniedBytes   uint64
}

// EndpointCounters are an endpoint's counters in both directions.
type EndpointCounters struct {
	Ingress, Egress Counters
}

// NewManager returns a Manager for dp's endpoints. Endpoints a previous
// process installed stay in force and are listed as Recovered; entries it
// left behind unreferenced (a crash mid-change) are deleted. Close
// releases the lock.
func NewManager(dp *datapath.Datapath) (*Manager, error) {
	k := kernel.Of(dp)
	held, err := kernel.Hold(k.Dir, kernel.LockPolicy)
	if err != nil {
		return nil, fmt.Errorf("policy.Manager: %w", err)
	}
	l := dp.Limits()
	m := &Manager{
		dp: dp, k: k, limits: l, held: held,
		endpoints: make(map[string]*endpointState),
		rulesets:  make(map[[32]byte]*installed),
		byID:      make(map[uint32]*installed),
		epIDs:     idalloc.New(l.MaxEndpoints),
		policyIDs: idalloc.New(1<<31 - 1),
		rsIDs:     idalloc.New(1<<31 - 1),
	}
	if err := m.recover(); err != nil {
		held.Release()
		return nil, err
	}
	return m, nil
}

// Close releases the Manager's lock. Endpoints and policies stay in force.
// Calls that write return ErrClosed after Close; reads go on answering
// from the Manager's copy.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held.Release()
	return nil
}

func (m *Manager) begin() error {
	return m.held.Check(ErrClosed)
}

func (e Endpoint) validate() error {
	if e.Interface == "" {
		return verr.Invalid("interface", e.Interface, "required")
	}
	seen := make(map[netip.Addr]bool, len(e.Addresses))
	for i, a := range e.Addresses {
		field := fmt.Sprintf("addresses[%d]", i)
		switch {
		case !a.IsValid():
			return verr.Invalid(field, a, "not an address")
		case a.Is4In6():
			return verr.Invalid(field, a, "an IPv4-mapped IPv6 address: give it as IPv4")
		case a.Zone() != "":
			return verr.Invalid(field, a, "has a zone")
		case seen[a]:
			return verr.Invalid(field, a, "listed twice")
		}
		seen[a] = true
	}
	return nil
}

// AddEndpoint registers e and attaches the datapath's tc programs to its
// interface (sharing the hook with the load balancer: one program each
// way). The endpoint starts with no policy: everything passes, and flows
// are tracked from now on, so the replies of connections it opens pass
// once a policy isolates it. Adding an endpoint that exists updates its
// addresses; its policy stays, and follows it to a re-created interface of
// the same name (a restarted pod's new veth).
func (m *Manager) AddEndpoint(e Endpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(); err != nil {
		return err
	}
	if err := e.validate(); err != nil {
		return verr.Named(e.Interface, err)
	}
	e.Addresses = slices.Clone(e.Addresses)
	ifindex, err := endpoint.Ifindex(e.Interface)
	if err != nil {
		return err
	}
	if ep, ok := m.endpoints[e.Interface]; ok {
		ep.status.Endpoint = e
		if ep.ifindex != ifindex {
			return m.move(ep, ifindex)
		}
		return nil
	}
	id, ok := m.epIDs.Get()
	if !ok {
		return verr.Named(e.Interface, verr.OverCapacity("interface", e.Interface, fmt.Sprintf("all %d endpoints are in use (datapath.Limits.MaxEndpoints)", m.limits.MaxEndpoints)))
	}
	if err := m.resetCounters(id); err != nil {
		m.epIDs.Release(id)
		return fmt.Errorf("endpoint %s: %w", e.Interface, err)
	}
	ep := &endpointState{status: EndpointStatus{Endpoint: e, ID: id}, cookie: rand.Uint32() | 1, ifindex: ifindex}
	if err := endpoint.Join(m.k, m.dp, e.Interface, ifindex, "policy", ep.fill); err != nil {
		m.epIDs.Release(id)
		return err
	}
	ep.fingerprint()
	m.endpoints[e.Interface] = ep
	return nil
}

// write puts ep's fields into its entry in the endpoints map.
func (m *Manager) write(ep *endpointState) error { return endpoint.Update(m.k, ep.ifindex, ep.fill) }

// fill sets policy's fields of an endpoints entry to ep's, leaving package
// bandwidth's flags as they are.
func (ep *endpointState) fill(e *bpf.XdplaneEndpoint) {
	e.Id, e.Cookie = ep.status.ID, ep.cookie
	e.IngressPolicy, e.EgressPolicy = ep.ingress.policyID(), ep.egress.policyID()
	e.Flags = e.Flags&^endpoint.PolicyFlags | ep.flags
}

// clear takes policy's fields out of the entry of the interface with index
// ifindex; the entry goes if package bandwidth has no flags there.
func (m *Manager) clear(ifindex uint32) error {
	return endpoint.Update(m.k, ifindex, func(e *bpf.XdplaneEndpoint) {
		*e = bpf.XdplaneEndpoint{Flags: e.Flags &^ endpoint.PolicyFlags}
	})
}

// fingerprint sets ep's Fingerprint from what its entry holds.
func (ep *endpointState) fingerprint() {
	ep.status.Fingerprint = fmt.Sprintf("%d-%d-%08x-%d-%d-%d", ep.ifindex, ep.status.ID, ep.cookie,
		ep.ingress.policyID(), ep.egress.policyID(), ep.flags)
}

// move re-points ep at a re-created interface of the same name (a
// restarted pod's new veth): the endpoint keeps its id and its policy.
func (m *Manager) move(ep *endpointState, ifindex uint32) error {
	name := ep.status.Interface
	old := ep.ifindex
	ep.ifindex = ifindex
	if err := endpoint.Join(m.k, m.dp, name, ifindex, "policy", ep.fill); err != nil {
		ep.ifindex = old
		return err
	}
	ep.fingerprint()
	if err := m.clear(old); err != nil {
		return fmt.Errorf("endpoint %s: delete its old interface's entry: %w", name, err)
	}
	return nil
}

// RemoveEndpoint stops judging the endpoint's traffic and deletes its
// rules. The tc programs stay attached, for the load balancer and any
// bandwidth limits; the interface usually goes with the pod, and
// datapath.Detach removes them otherwise.
func (m *Manager) RemoveEndpoint(ifname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(); err != nil {
		return err
	}
	ep, ok := m.endpoints[ifname]
	if !ok {
		return fmt.Errorf("endpoint %s: %w", ifname, ErrNotFound)
	}
	if err := m.clear(ep.ifindex); err != nil {
		return fmt.Errorf("endpoint %s: %w", ifname, err)
	}
	delete(m.endpoints, ifname)
	m.epIDs.Release(ep.status.ID)
	return m.release(ep.ingress, ep.egress)
}

// SetPolicy makes p the endpoint's policy, replacing the one before in a
// single switch. Connections the old policy let through keep flowing;
// the new one judges new connections. On error nothing changed.
func (m *Manager) SetPolicy(ifname string, p Policy) error {
	if err := p.Validate(); err != nil {
		return verr.Named(ifname, err)
	}
	p = p.Normalize()
	in, eg := compileRules(p.Ingress), compileRules(p.Egress)

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(); err != nil {
		return err
	}
	ep, ok := m.endpoints[ifname]
	if !ok {
		return fmt.Errorf("endpoint %s: %w", ifname, ErrNotFound)
	}

	newIn, err := m.acquire("ingress", in)
	if err != nil {
		return verr.Named(ifname, err)
	}
	newEg, err := m.acquire("egress", eg)
	if err != nil {
		return errors.Join(verr.Named(ifname, err), m.release(newIn))
	}
	var flags uint8
	if in.Isolated {
		flags |= endpoint.IngressIsolated
	}
	if in.HasDeny {
		flags |= endpoint.IngressDeny
	}
	if eg.Isolated {
		flags |= endpoint.EgressIsolated
	}
	if eg.HasDeny {
		flags |= endpoint.EgressDeny
	}
	next := *ep
	next.ingress, next.egress, next.flags = newIn, newEg, flags
	if err := m.write(&next); err != nil {
		err = fmt.Errorf("endpoint %s: switch to the new rules: %w", ifname, err)
		return errors.Join(err, m.release(newIn, newEg))
	}
	oldIn, oldEg := ep.ingress, ep.egress
	ep.ingress, ep.egress, ep.flags = newIn, newEg, flags
	ep.status.Policy, ep.status.Recovered = p, false
	ep.fingerprint()
	// The new rules are in force; what is left is garbage collection.
	if err := m.release(oldIn, oldEg); err != nil {
		return fmt.Errorf("endpoint %s: the new policy is in force, but deleting the old rules failed: %w", ifname, err)
	}
	return nil
}

// Endpoints lists the endpoints, sorted by interface.
func (m *Manager) Endpoints() []EndpointStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]EndpointStatus, 0, len(m.endpoints))
	for _, ep := range m.endpoints {
		out = append(out, ep.status)
	}
	slices.SortFunc(out, func(a, b EndpointStatus) int {
		if a.Interface < b.Interface {
			return -1
		}
		if a.Interface > b.Interface {
			return 1
		}
		return 0
	})
	return out
}

// Endpoint returns one endpoint's status.
func (m *Manager) Endpoint(ifname string) (EndpointStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.endpoints[ifname]
	if !ok {
		return EndpointStatus{}, fmt.Errorf("endpoint %s: %w", ifname, ErrNotFound)
	}
	return ep.status, nil
}

// Counters reads an endpoint's allowed and denied packets, summed over
// CPUs, since it was added.
func (m *Manager) Counters(ifname string) (EndpointCounters, error) {
	m.mu.Lock()
	ep, ok := m.endpoints[ifname]
	m.mu.Unlock()
	if !ok {
		return EndpointCounters{}, fmt.Errorf("endpoint %s: %w", ifname, ErrNotFound)
	}
	var out EndpointCounters
	for dir, c := range []*Counters{&out.Ingress, &out.Egress} {
		var per []bpf.XdplaneEpCounter
		if err := m.k.Maps.PolicyStats.Lookup(2*ep.status.ID+uint32(dir), &per); err != nil {
			return EndpointCounters{}, fmt.Errorf("read policy_stats: %w", err)
		}
		for _, p := range per {
			c.AllowedPackets += p.AllowedPackets
			c.AllowedBytes += p.AllowedBytes
			c.DeniedPackets += p.DeniedPackets
			c.DeniedBytes += p.DeniedBytes
		}
	}
	return out, nil
}

func (m *Manager) resetCounters(id uint32) error {
	zero := make([]bpf.XdplaneEpCounter, ebpf.MustPossibleCPU())
	for dir := range uint32(2) {
		if err := m.k.Maps.PolicyStats.Update(2*id+dir, zero, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("reset policy_stats: %w", err)
		}
	}
	return nil
}

func (in *installed) policyID() uint32 {
	if in == nil {
		return 0
	}
	return in.id
}

// digest identifies compiled rules by their content.
func digest(c compiledRules) [32]byte {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], uint32(len(c.Rulesets)))
	binary.BigEndian.PutUint32(b[4:], uint32(len(c.Peers)))
	h.Write(b[:])
	for _, rs := range c.Rulesets {
		binary.BigEndian.PutUint32(b[:4], uint32(len(rs)))
		h.Write(b[:4])
		for _, e := range rs {
			flag := byte(0)
			if e.AnyProto {
				flag = 1
			}
			h.Write([]byte{flag, e.Proto, byte(e.Port >> 8), byte(e.Port), e.Bits, byte(e.Verdict)})
		}
	}
	for _, p := range c.Peers {
		a := p.Prefix.Addr().As16()
		h.Write(a[:])
		binary.BigEndian.PutUint32(b[:4], uint32(p.Prefix.Bits()))
		binary.BigEndian.PutUint32(b[4:], uint32(p.Ruleset))
		h.Write(b[:])
		if p.Prefix.Addr().Is4() {
			h.Write([]byte{4})
		}
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// acquire returns the installed form of c, writing it if no endpoint
// shares it yet; nil when c needs no lookups (no peer entries). dir names
// the direction in errors.
func (m *Manager) acquire(dir string, c compiledRules) (*installed, error) {
	if len(c.Peers) == 0 {
		return nil, nil
	}
	d := digest(c)
	if in, ok := m.rulesets[d]; ok {
		in.refs++
		return in, nil
	}
	nports := 0
	for _, rs := range c.Rulesets {
		nports += len(rs)
	}
	if free := int(m.limits.MaxPolicyPrefixes) - m.peers; len(c.Peers) > free {
		return nil, verr.OverCapacity(dir+".rules", len(c.Peers), fmt.Sprintf("the rules need %d peer prefixes, %d of datapath.Limits.MaxPolicyPrefixes %d are free", len(c.Peers), free, m.limits.MaxPolicyPrefixes))
	}
	if free := int(m.limits.MaxPolicyPorts) - m.ports; nports > free {
		return nil, verr.OverCapacity(dir+".rules", nports, fmt.Sprintf("the rules need %d port entries, %d of datapath.Limits.MaxPolicyPorts %d are free", nports, free, m.limits.MaxPolicyPorts))
	}
	pid, ok := m.policyIDs.Get()
	if !ok {
		return nil, verr.OverCapacity(dir, "", "no free policy id")
	}
	in := &installed{digest: d, id: pid, refs: 1}
	// Ruleset ids, then the port entries, then the peers that name
	// them: nothing looks the new entries up before the endpoint switches
	// to pid, but this order keeps every written entry whole.
	rsIDs := make([]uint32, len(c.Rulesets))
	for i, rs := range c.Rulesets {
		if len(rs) == 0 {
			continue // ruleset 0: nothing to look up
		}
		id, ok := m.rsIDs.Get()
		if !ok {
			return nil, errors.Join(verr.OverCapacity(dir, "", "no free ruleset id"), m.forget(in))
		}
		rsIDs[i] = id
		in.rulesets = append(in.rulesets, id)
	}
	var vals, hvals []uint8
	peerVal := make([]bpf.XdplanePeerValue, len(c.Rulesets))
	for i, rs := range c.Rulesets {
		peerVal[i].Ruleset = rsIDs[i]
		if v, ok := inlineRuleset(rsIDs[i], rs); ok {
			peerVal[i] = v // small: in the peer entries, no port entries
			continue
		}
		peerVal[i].N = peerNotInline
		for _, e := range rs {
			if !e.AnyProto && e.Bits == 16 {
				in.portHKeys = append(in.portHKeys, bpf.XdplanePortHkey{Ruleset: kernel.Htonl(rsIDs[i]), Proto: e.Proto, Port: kernel.Htons(e.Port)})
				hvals = append(hvals, uint8(e.Verdict))
			} else {
				in.portKeys = append(in.portKeys, portKey(rsIDs[i], e))
				vals = append(vals, uint8(e.Verdict))
			}
		}
	}
	lens := peerLengths(c.Peers)
	peerVals := make([]bpf.XdplanePeerValue, len(c.Peers))
	for i, p := range c.Peers {
		peerVals[i] = peerVal[p.Ruleset]
		if lens.Count == plensLPM {
			in.peerKeys = append(in.peerKeys, peerKey(pid, p.Prefix))
		} else {
			in.peerHKeys = append(in.peerHKeys, peerHashKey(pid, p.Prefix))
		}
	}
	err := kernel.PutAll(m.k.Maps.PolicyPorts, in.portKeys, vals)
	if err == nil {
		err = kernel.PutAll(m.k.Maps.PolicyPortHash, in.portHKeys, hvals)
	}
	if err == nil {
		err = kernel.PutAll(m.k.Maps.PolicyPeers, in.peerKeys, peerVals)
	}
	if err == nil {
		err = kernel.PutAll(m.k.Maps.PolicyPeerHash, in.peerHKeys, peerVals)
	}
	if err == nil {
		// Last: the peers are looked up by it.
		err = m.k.Maps.PolicyLens.Update(pid, lens, ebpf.UpdateAny)
	}
	if err != nil {
		return nil, errors.Join(err, m.forget(in))
	}
	m.peers += in.peerCount()
	m.ports += in.portCount()
	m.rulesets[d] = in
	m.byID[pid] = in
	return in, nil
}

// forget deletes what acquire wrote of in, which no endpoint uses, and
// frees its ids. Used when acquire fails part-way. If entries may be
// left, the ids stay taken, as release keeps them: no later rule set is
// mixed with them, and the next Manager's recovery deletes them.
func (m *Manager) forget(in *installed) error {
	if err := m.deleteEntries(in); err != nil {
		return err
	}
	for _, id := range in.rulesets {
		m.rsIDs.Release(id)
	}
	m.policyIDs.Release(in.id)
	return nil
}

// release drops one endpoint's use of each of ins, deleting the entries
// of those it used last. A packet may have read the old endpoint entry
// just before the switch: the entries are deleted, and their ids freed,
// only once every program run that could still look them up has ended.
func (m *Manager) release(ins ...*installed) error {
	var last []*installed
	for _, in := range ins {
		if in == nil {
			continue
		}
		in.refs--
		if in.refs > 0 {
			continue
		}
		delete(m.rulesets, in.digest)
		delete(m.byID, in.id)
		last = append(last, in)
	}
	if len(last) == 0 {
		return nil
	}
	if err := m.k.WaitForPrograms(); err != nil {
		// Entries are left, with their ids and room, as below.
		return err
	}
	var errs []error
	for _, in := range last {
		if err := m.deleteEntries(in); err != nil {
			// Entries may be left: their ids and their room stay taken,
			// so that no later rule set is mixed with them. The next
			// Manager's recovery deletes them.
			errs = append(errs, err)
			continue
		}
		m.peers -= in.peerCount()
		m.ports -= in.portCount()
		for _, id := range in.rulesets {
			m.rsIDs.Release(id)
		}
		m.policyIDs.Release(in.id)
	}
	return errors.Join(errs...)
}

// deleteEntries deletes in's entries from every map, the lengths first.
func (m *Manager) deleteEntries(in *installed) error {
	return errors.Join(
		kernel.IgnoreMissing(m.k.Maps.PolicyLens.Delete(in.id)),
		kernel.DeleteAll(m.k.Maps.PolicyPeers, in.peerKeys), kernel.DeleteAll(m.k.Maps.PolicyPeerHash, in.peerHKeys),
		kernel.DeleteAll(m.k.Maps.PolicyPorts, in.portKeys), kernel.DeleteAll(m.k.Maps.PolicyPortHash, in.portHKeys))
}

func (in *installed) peerCount() int { return len(in.peerKeys) + len(in.peerHKeys) }
func (in *installed) portCount() int { return len(in.portKeys) + len(in.portHKeys) }

// peerInline and peerNotInline are PEER_INLINE and PEER_NOT_INLINE;
// ikAny, ikProto and ikPort are enum inline_kind.
const (
	peerInline    = 6
	peerNotInline = 255
	ikAny         = 1
	ikProto       = 2
	ikPort        = 3
)

// inlineRuleset returns the peer value that holds ruleset rs (id id)
// inline, if it is small enough and has only entries for every protocol,
// one protocol or one port: the datapath then decides a flow with no
// second lookup.
func inlineRuleset(id uint32, rs ruleset) (bpf.XdplanePeerValue, bool) {
	v := bpf.XdplanePeerValue{Ruleset: id, N: uint8(len(rs))}
	if len(rs) > peerInline {
		return v, false
	}
	for i, e := range rs {
		var kind uint8
		switch {
		case e.AnyProto:
			kind = ikAny
		case e.Bits == 0:
			kind = ikProto
		case e.Bits == 16:
			kind = ikPort
		default:
			return v, false
		}
		v.Ports[i] = bpf.XdplanePortInline{Proto: e.Proto, KindVerdict: kind<<4 | uint8(e.Verdict), Port: kernel.Htons(e.Port)}
	}
	return v, true
}

// plensMax and plensLPM are PLENS_MAX and PLENS_LPM.
const (
	plensMax = 31
	plensLPM = 255
)

// peerLengths lists the key prefix lengths of peers, longest first, or
// says the trie is to be used when there are more than plensMax.
func peerLengths(peers []peerEntry) bpf.XdplanePlens {
	seen := make(map[int]bool)
	var lens []int
	for _, p := range peers {
		if n := keyBits(p.Prefix); !seen[n] {
			seen[n] = true
			lens = append(lens, n)
		}
	}
	if len(lens) > plensMax {
		return bpf.XdplanePlens{Count: plensLPM}
	}
	slices.Sort(lens)
	slices.Reverse(lens)
	out := bpf.XdplanePlens{Count: uint8(len(lens))}
	for i, n := range lens {
		out.Len[i] = uint8(n)
	}
	return out
}

// keyBits is p's prefix length over the 16-byte address of the maps.
func keyBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 96 + p.Bits()
	}
	return p.Bits()
}

// peerHashKey is p's key in policy_peer_hash under policy id.
func peerHashKey(id uint32, p netip.Prefix) bpf.XdplanePeerHkey {
	return bpf.XdplanePeerHkey{PolicyId: kernel.Htonl(id), Plen: uint8(keyBits(p)), Addr: p.Masked().Addr().As16()}
}

// peerKey is p's key under policy id: the id, then the address, IPv4
// v4-mapped with its prefix counted past the 96 bits of ::ffff:0:0/96.
func peerKey(id uint32, p netip.Prefix) bpf.XdplanePeerKey {
	return bpf.XdplanePeerKey{Prefixlen: uint32(32 + keyBits(p)), PolicyId: kernel.Htonl(id), Addr: p.Addr().As16()}
}

func portKey(ruleset uint32, e portEntry) bpf.XdplanePortKey {
	k := bpf.XdplanePortKey{Prefixlen: 32, Ruleset: kernel.Htonl(ruleset)}
	if !e.AnyProto {
		k.Prefixlen = 40 + uint32(e.Bits)
		k.Proto = e.Proto
		k.Port = [2]uint8{uint8(e.Port >> 8), uint8(e.Port)}
	}
	return k
}

// recover adopts the endpoints an earlier process installed, and deletes
// entries no endpoint references.
func (m *Manager) recover() error {
	referenced := make(map[uint32]*installed)
	var stale, gone []uint32
	err := kernel.Scan(m.k.Maps.Endpoints, func(ifindex uint32, v bpf.XdplaneEndpoint) error {
		if v.Id == 0 && v.Flags&endpoint.PolicyFlags == 0 && v.IngressPolicy == 0 && v.EgressPolicy == 0 {
			return nil // package bandwidth's alone
		}
		ifc, err := net.InterfaceByIndex(int(ifindex))
		if err != nil {
			gone = append(gone, ifindex)
		}
		if err != nil || v.Id == 0 || v.Id > m.limits.MaxEndpoints {
			stale = append(stale, ifindex)
			return nil
		}
		ep := &endpointState{status: EndpointStatus{Endpoint: Endpoint{Interface: ifc.Name}, ID: v.Id, Recovered: true},
			cookie: v.Cookie, ifindex: ifindex, flags: v.Flags & endpoint.PolicyFlags}
		for _, p := range []struct {
			id  uint32
			dst **installed
		}{{v.IngressPolicy, &ep.ingress}, {v.EgressPolicy, &ep.egress}} {
			if p.id == 0 {
				continue
			}
			in := referenced[p.id]
			if in == nil {
				in = &installed{id: p.id}
				referenced[p.id] = in
			}
			in.refs++
			*p.dst = in
		}
		ep.fingerprint()
		m.epIDs.Take(v.Id)
		m.endpoints[ifc.Name] = ep
		return nil
	})
	if err != nil {
		return err
	}
	if err := endpoint.RefuseOtherNetNS(m.dp, gone); err != nil {
		return err
	}
	for _, ifindex := range stale {
		if err := m.clear(ifindex); err != nil {
			return fmt.Errorf("delete stale endpoint: %w", err)
		}
	}

	// Peer entries are kept under a referenced policy id, port entries
	// under a ruleset such a peer names; the rest is garbage.
	usedRulesets := make(map[uint32]*installed)
	owner := func(policyID uint32, v bpf.XdplanePeerValue) *installed {
		in := referenced[kernel.Ntohl(policyID)]
		if in != nil && v.Ruleset != 0 && usedRulesets[v.Ruleset] == nil {
			usedRulesets[v.Ruleset] = in
			in.rulesets = append(in.rulesets, v.Ruleset)
		}
		return in
	}
	garbagePeers, err1 := kernel.Keys(m.k.Maps.PolicyPeers, func(k bpf.XdplanePeerKey, v bpf.XdplanePeerValue) bool {
		in := owner(k.PolicyId, v)
		if in != nil {
			in.peerKeys = append(in.peerKeys, k)
		}
		return in == nil
	})
	garbageHPeers, err2 := kernel.Keys(m.k.Maps.PolicyPeerHash, func(k bpf.XdplanePeerHkey, v bpf.XdplanePeerValue) bool {
		in := owner(k.PolicyId, v)
		if in != nil {
			in.peerHKeys = append(in.peerHKeys, k)
		}
		return in == nil
	})
	garbageLens, err3 := kernel.Keys(m.k.Maps.PolicyLens, func(id uint32, _ bpf.XdplanePlens) bool { return referenced[id] == nil })
	garbagePorts, err4 := kernel.Keys(m.k.Maps.PolicyPorts, func(k bpf.XdplanePortKey, _ uint8) bool {
		in := usedRulesets[kernel.Ntohl(k.Ruleset)]
		if in != nil {
			in.portKeys = append(in.portKeys, k)
		}
		return in == nil
	})
	garbageHPorts, err5 := kernel.Keys(m.k.Maps.PolicyPortHash, func(k bpf.XdplanePortHkey, _ uint8) bool {
		in := usedRulesets[kernel.Ntohl(k.Ruleset)]
		if in != nil {
			in.portHKeys = append(in.portHKeys, k)
		}
		return in == nil
	})
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return err
	}
	if err := errors.Join(kernel.DeleteAll(m.k.Maps.PolicyLens, garbageLens),
		kernel.DeleteAll(m.k.Maps.PolicyPeers, garbagePeers), kernel.DeleteAll(m.k.Maps.PolicyPeerHash, garbageHPeers),
		kernel.DeleteAll(m.k.Maps.PolicyPorts, garbagePorts), kernel.DeleteAll(m.k.Maps.PolicyPortHash, garbageHPorts)); err != nil {
		return err
	}
	for id, in := range referenced {
		// A recovered rule set's content is unknown: its digest is its
		// id, so nothing new is ever shared with it.
		binary.BigEndian.PutUint32(in.digest[:], id)
		in.digest[31] = 0xff
		m.policyIDs.Take(id)
		for _, r := range in.rulesets {
			m.rsIDs.Take(r)
		}
		m.rulesets[in.digest] = in
		m.byID[id] = in
		m.peers += in.peerCount()
		m.ports += in.portCount()
	}
	return nil
}
