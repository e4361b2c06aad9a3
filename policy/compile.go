package policy

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
)

// This file turns one direction's rules into the two tables the datapath
// looks a new flow up in, so that the cost of a flow does not grow with the
// number of rules:
//
//  1. peers, a longest-prefix-match table from (policy, peer address) to
//     a ruleset, both families in one table with 16-byte addresses, IPv4
//     v4-mapped (struct peer_key in bpf/include/xdplane.h);
//  2. ports, a longest-prefix-match table over the 7-byte key
//     ruleset (32 bits) | protocol (8) | port (16, big endian) to allow or
//     deny (struct port_key). A key prefix of 32 bits matches every
//     protocol and port of the ruleset, 40 one protocol and every port,
//     40+b the protocol and the ports that share the top b bits. ICMP is
//     protocol 1 for both families, and its port is the ICMP type.
//
// A flow that finds no peer entry, or no port entry, matches no rule: it
// passes if the direction is not isolated and is denied by default if it
// is.
//
// The prefixes a policy mentions (peer prefixes and their excepts) cut the
// address space into pieces: every address whose longest match among them
// is p meets the same rules. compileRules finds each piece's rules in one
// depth-first walk over the prefixes in order, counting the peers that are
// active on the way down and restoring the counts on the way back up, and
// gives each piece the ruleset those rules make.

// verdict is what a port entry says. When rules overlap, the larger
// verdict wins: deny over allow over none.
type verdict uint8

const (
	verdictNone  verdict = 0
	verdictAllow verdict = 1 // PV_ALLOW in bpf/include/xdplane.h
	verdictDeny  verdict = 2 // PV_DENY
)

func (v verdict) String() string {
	switch v {
	case verdictNone:
		return "none"
	case verdictAllow:
		return "allow"
	case verdictDeny:
		return "deny"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

func actionVerdict(a Action) verdict {
	if a == Deny {
		return verdictDeny
	}
	return verdictAllow
}

// portEntry is one entry of a ruleset in the ports table.
type portEntry struct {
	// AnyProto makes the key prefix 32: every protocol and port of the
	// ruleset. Proto, Port and Bits are then zero.
	AnyProto bool
	// Proto is the IP protocol; ICMP is 1 for IPv6 peers too.
	Proto uint8
	// Port is the first port (or ICMP type) of the block; its low 16-Bits
	// bits are zero.
	Port uint16
	// Bits is how many top bits of Port the entry matches: the key prefix
	// is 40+Bits. 0 means every port of Proto.
	Bits    uint8
	Verdict verdict
}

// prefixLen is the entry's key prefix length in bits.
func (e portEntry) prefixLen() int {
	if e.AnyProto {
		return 32
	}
	return 40 + int(e.Bits)
}

func (e portEntry) matches(proto uint8, port uint16) bool {
	if e.AnyProto {
		return true
	}
	return e.Proto == proto && (e.Bits == 0 || port>>(16-e.Bits) == e.Port>>(16-e.Bits))
}

func comparePortEntries(a, b portEntry) int {
	if a.AnyProto != b.AnyProto {
		if a.AnyProto {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Bits, b.Bits))
}

// ruleset is the port entries of one piece of the address space, sorted by
// comparePortEntries, with no entry whose verdict its longest container
// already gives.
type ruleset []portEntry

// lookup returns the verdict of the longest entry matching proto and
// port, as the ports table does, or verdictNone.
func (rs ruleset) lookup(proto uint8, port uint16) verdict {
	best, v := -1, verdictNone
	for _, e := range rs {
		if l := e.prefixLen(); l > best && e.matches(proto, port) {
			best, v = l, e.Verdict
		}
	}
	return v
}

// peerEntry is one entry of the peers table.
type peerEntry struct {
	Prefix  netip.Prefix // masked; IPv4 in its IPv4 form
	Ruleset int          // index into compiledRules.Rulesets
}

// compiledRules is one direction's rules in the datapath's form.
type compiledRules struct {
	// Isolated says what a flow that matches no rule gets: denied by
	// default when set, allowed when not.
	Isolated bool
	// HasDeny says whether any rule is a Deny rule.
	HasDeny bool
	// Peers sorted by address, then prefix length. Each is there because
	// the datapath's lookup would find another ruleset without it: the
	// longest emitted prefix around it has a different one, or, with none
	// around it, its own is not empty. That is judged as the peers table
	// keys addresses, IPv4 v4-mapped beside IPv6, where ::/0 contains
	// 0.0.0.0/0: so 0.0.0.0/0 stands, with an empty ruleset if need be,
	// when an IPv6 prefix such as ::/0 would otherwise catch IPv4
	// addresses, and goes when that prefix gives IPv4 the same ruleset.
	Peers []peerEntry
	// Rulesets, all different from each other.
	Rulesets []ruleset
}

// lookup decides a new flow with the two table lookups the datapath makes,
// keys and all: the peers table holds both families in 16 bytes, IPv4
// v4-mapped. It takes peer, proto and port as Decide does (ICMP, or 58,
// is ICMPv6 for an IPv6 peer; the datapath, which sees the packet, turns
// ICMPv6 into 1 and an IPv6 packet's protocol 1 into 255). Tests use it to
// hold the compiled form to Decide.
func (c compiledRules) lookup(peer netip.Addr, proto uint8, port uint16) Decision {
	peer = peer.WithZone("").Unmap()
	if peer.Is6() && proto == ipprotoICMPv6 {
		proto = uint8(ICMP)
	}
	best, bestBits := -1, -1
	if peer.IsValid() {
		key := netip.AddrFrom16(peer.As16())
		for i, e := range c.Peers {
			p := as16Prefix(e.Prefix)
			if p.Bits() > bestBits && p.Contains(key) {
				best, bestBits = i, p.Bits()
			}
		}
	}
	v := verdictNone
	if best >= 0 {
		v = c.Rulesets[c.Peers[best].Ruleset].lookup(proto, port)
	}
	switch {
	case v == verdictDeny:
		return DeniedByRule
	case v == verdictAllow || !c.Isolated:
		return Allowed
	}
	return DeniedByDefault
}

// as16Prefix returns p as the peers table keys it: an IPv4 prefix
// v4-mapped, 96 bits longer.
func as16Prefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), 96+p.Bits())
	}
	return p
}

// compileRules compiles one direction's rules, already validated and
// normalized. Its cost grows with the number of peers and excepts (n log n
// for the sort) and with the number of different rulesets it builds, not
// with their product: 100,000 rules with a peer each take tens of
// milliseconds.
func compileRules(r Rules) compiledRules {
	c := compiledRules{Isolated: r.Isolated}
	w := newWalker()
	peers, events := 0, 0
	for _, rule := range r.Rules {
		n := len(rule.Peers)
		if n == 0 {
			n = 2 // 0.0.0.0/0 and ::/0
		}
		peers += n
		events += n
		for _, pe := range rule.Peers {
			events += len(pe.Except)
		}
	}
	w.peers = make([]peerInstance, 0, peers)
	w.events = make([]prefixEvent, 0, events)
	for _, rule := range r.Rules {
		if rule.Action == Deny {
			c.HasDeny = true
		}
		class := w.classes.intern(rule)
		if len(rule.Peers) == 0 {
			w.addPeer(class, Peer{Prefix: netip.PrefixFrom(netip.IPv4Unspecified(), 0)})
			w.addPeer(class, Peer{Prefix: netip.PrefixFrom(netip.IPv6Unspecified(), 0)})
		}
		for _, pe := range rule.Peers {
			w.addPeer(class, pe)
		}
	}
	w.walk(&c)
	return c
}

// portSpan is a protocol and an inclusive range of its ports.
type portSpan struct {
	proto  uint8
	lo, hi uint16
}

func comparePortSpans(a, b portSpan) int {
	return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi))
}

// ruleClass is what a rule does, leaving out whom to: rules of one class
// are interchangeable in a ruleset, so the walk counts classes, not rules,
// and thousands of rules that share a port spec cost one.
type ruleClass struct {
	verdict verdict
	anyPort bool       // the rule has no Ports: every protocol and port
	spans   []portSpan // sorted and deduplicated; a whole protocol is 0 to 0xffff
}

// classTable interns rule classes.
type classTable struct {
	list  []ruleClass
	ids   map[string]int32
	spans []portSpan // scratch
	key   []byte     // scratch
}

func (t *classTable) intern(rule Rule) int32 {
	t.spans = t.spans[:0]
	for _, pr := range rule.Ports {
		lo, hi := pr.bounds()
		t.spans = append(t.spans, portSpan{proto: uint8(pr.Protocol), lo: lo, hi: hi})
	}
	slices.SortFunc(t.spans, comparePortSpans)
	t.spans = slices.Compact(t.spans)
	anyPort := len(rule.Ports) == 0

	t.key = append(t.key[:0], byte(actionVerdict(rule.Action)))
	if anyPort {
		t.key = append(t.key, 1)
	} else {
		t.key = append(t.key, 0)
	}
	for _, s := range t.spans {
		t.key = append(t.key, s.proto)
		t.key = binary.BigEndian.AppendUint16(t.key, s.lo)
		t.key = binary.BigEndian.AppendUint16(t.key, s.hi)
	}
	if id, ok := t.ids[string(t.key)]; ok {
		return id
	}
	id := int32(len(t.list))
	t.ids[string(t.key)] = id
	t.list = append(t.list, ruleClass{
		verdict: actionVerdict(rule.Action),
		anyPort: anyPort,
		spans:   slices.Clone(t.spans),
	})
	return id
}

// peerInstance is one Peer of one rule (or, for a rule without peers, one
// of 0.0.0.0/0 and ::/0). It is active inside its prefix and outside
// every except.
type peerInstance struct {
	class    int32
	inside   bool  // the walk is inside the peer's prefix
	excepted int32 // how many of the peer's excepts the walk is inside
}

// prefixEvent is a peer's prefix (except false) or one of its excepts.
type prefixEvent struct {
	prefix netip.Prefix
	peer   int32
	except bool
}

// frame is a prefix on the walk's stack: one of the prefixes that contain
// the current one.
type frame struct {
	prefix netip.Prefix
	events []prefixEvent // undone, in reverse, when the walk leaves it
	set    int32         // the set of active classes inside it
	reach  int32         // the ruleset a lookup inside it reaches: its own if emitted, else its parent's
}

// walker holds the state of compileRules: the rule classes, every peer
// and its prefixes, and, during the walk, which classes apply where it is.
type walker struct {
	classes classTable
	peers   []peerInstance
	events  []prefixEvent

	count  []int32 // per class: active peer instances of rules of that class
	pos    []int32 // per class: index in active, or -1
	active []int32 // the classes with count > 0

	// Per node, the classes whose count changed and whether they were
	// active before.
	stamp     []uint32
	gen       uint32
	touched   []int32
	wasActive []bool
	flips     []int32

	// A set of active classes is named by the set it was reached from and
	// the classes that flipped on the way: setIDs maps that to its number,
	// setRuleset numbers its ruleset. Set 0 is the empty set.
	setIDs     map[string]int32
	setRuleset []int32
	key        []byte

	// Interned rulesets; ruleset 0 is the empty one.
	rulesets   []ruleset
	rulesetIDs map[string]int32
	outIndex   []int32 // per interned ruleset: index in compiledRules.Rulesets, or -1

	spans []verdictSpan // scratch
	edges []verdictEdge // scratch
}

func newWalker() *walker {
	w := &walker{
		classes:    classTable{ids: make(map[string]int32)},
		setIDs:     make(map[string]int32),
		setRuleset: []int32{0},
		rulesets:   []ruleset{nil},
		rulesetIDs: map[string]int32{"": 0},
		outIndex:   []int32{-1},
	}
	return w
}

func (w *walker) addPeer(class int32, pe Peer) {
	id := int32(len(w.peers))
	w.peers = append(w.peers, peerInstance{class: class})
	w.events = append(w.events, prefixEvent{prefix: pe.Prefix.Masked(), peer: id})
	for _, ex := range pe.Except {
		w.events = append(w.events, prefixEvent{prefix: ex.Masked(), peer: id, except: true})
	}
}

// walk visits the prefixes in pre-order (netip's prefix order: family,
// address, length) and fills in c.Peers and c.Rulesets.
func (w *walker) walk(c *compiledRules) {
	n := len(w.classes.list)
	w.count = make([]int32, n)
	w.pos = slices.Repeat([]int32{-1}, n)
	w.stamp = make([]uint32, n)
	slices.SortFunc(w.events, func(a, b prefixEvent) int { return a.prefix.Compare(b.prefix) })

	unique := 0
	for i := range w.events {
		if i == 0 || w.events[i].prefix != w.events[i-1].prefix {
			unique++
		}
	}
	if unique > 0 {
		c.Peers = make([]peerEntry, 0, unique)
	}

	var stack []frame
	for i := 0; i < len(w.events); {
		p := w.events[i].prefix
		j := i + 1
		for j < len(w.events) && w.events[j].prefix == p {
			j++
		}
		node := w.events[i:j:j]
		i = j

		for len(stack) > 0 {
			top := stack[len(stack)-1]
			if top.prefix.Bits() < p.Bits() && top.prefix.Contains(p.Addr()) {
				break
			}
			w.begin()
			for k := len(top.events) - 1; k >= 0; k-- {
				w.undo(top.events[k])
			}
			w.end()
			stack = stack[:len(stack)-1]
		}

		parent := frame{set: 0, reach: 0}
		if len(stack) > 0 {
			parent = stack[len(stack)-1]
		}
		w.begin()
		for _, ev := range node {
			w.apply(ev)
		}
		flips := w.end()
		set := parent.set
		if len(flips) > 0 {
			set = w.setFrom(parent.set, flips)
		}
		own := w.setRuleset[set]
		reach := parent.reach
		if own != parent.reach {
			c.Peers = append(c.Peers, peerEntry{Prefix: p, Ruleset: w.output(c, own)})
			reach = own
		}
		stack = append(stack, frame{prefix: p, events: node, set: set, reach: reach})
	}
	w.settleIPv4Root(c)
}

// v4MappedZero is ::ffff:0.0.0.0, where the peers table keeps IPv4.
var v4MappedZero = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff})

// settleIPv4Root puts in or takes out 0.0.0.0/0 as the peers table needs
// it. The walk keeps the families apart, but the table keys IPv4
// v4-mapped next to IPv6, so an IPv4 address that no IPv4 entry covers
// reaches the longest IPv6 entry that covers ::ffff:0:0/96 (::/0, say).
// 0.0.0.0/0 must stand, with the empty ruleset if nothing else, when that
// entry's ruleset is not its own, and must go when it is. The walk left
// 0.0.0.0/0 out only if its ruleset is empty, and judged the IPv4 entries
// below it by that, so neither change alters what they need.
func (w *walker) settleIPv4Root(c *compiledRules) {
	all4 := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	have := len(c.Peers) > 0 && c.Peers[0].Prefix == all4
	cover := -1
	for i, e := range c.Peers {
		if e.Prefix.Contains(v4MappedZero) && (cover < 0 || e.Prefix.Bits() > c.Peers[cover].Prefix.Bits()) {
			cover = i
		}
	}
	switch {
	case cover < 0:
	case have && c.Peers[0].Ruleset == c.Peers[cover].Ruleset:
		c.Peers = slices.Delete(c.Peers, 0, 1)
	case !have && len(c.Rulesets[c.Peers[cover].Ruleset]) > 0:
		c.Peers = slices.Insert(c.Peers, 0, peerEntry{Prefix: all4, Ruleset: w.output(c, 0)})
	}
}

// output returns the index in c.Rulesets of interned ruleset id, adding it
// on first use.
func (w *walker) output(c *compiledRules, id int32) int {
	if w.outIndex[id] < 0 {
		w.outIndex[id] = int32(len(c.Rulesets))
		c.Rulesets = append(c.Rulesets, w.rulesets[id])
	}
	return int(w.outIndex[id])
}

func (w *walker) apply(ev prefixEvent) {
	pi := &w.peers[ev.peer]
	if ev.except {
		pi.excepted++
		if pi.excepted == 1 && pi.inside {
			w.add(pi.class, -1)
		}
		return
	}
	pi.inside = true
	if pi.excepted == 0 {
		w.add(pi.class, 1)
	}
}

func (w *walker) undo(ev prefixEvent) {
	pi := &w.peers[ev.peer]
	if ev.except {
		pi.excepted--
		if pi.excepted == 0 && pi.inside {
			w.add(pi.class, 1)
		}
		return
	}
	if pi.excepted == 0 {
		w.add(pi.class, -1)
	}
	pi.inside = false
}

// begin starts a batch of count changes; end returns the classes that
// became active or inactive in it, sorted, and updates w.active.
func (w *walker) begin() {
	w.gen++
	w.touched = w.touched[:0]
	w.wasActive = w.wasActive[:0]
}

func (w *walker) add(class int32, delta int32) {
	if w.stamp[class] != w.gen {
		w.stamp[class] = w.gen
		w.touched = append(w.touched, class)
		w.wasActive = append(w.wasActive, w.count[class] > 0)
	}
	w.count[class] += delta
}

func (w *walker) end() []int32 {
	w.flips = w.flips[:0]
	for k, class := range w.touched {
		now := w.count[class] > 0
		if now == w.wasActive[k] {
			continue
		}
		w.flips = append(w.flips, class)
		if now {
			w.pos[class] = int32(len(w.active))
			w.active = append(w.active, class)
			continue
		}
		at, last := w.pos[class], w.active[len(w.active)-1]
		w.active[at] = last
		w.pos[last] = at
		w.active = w.active[:len(w.active)-1]
		w.pos[class] = -1
	}
	slices.Sort(w.flips)
	return w.flips
}

// setFrom numbers the set of active classes reached from set parent by
// flipping the classes in flips, building its ruleset the first time.
// Sets reached in different ways get different numbers; their rulesets
// are interned, so equal ones still share an index.
func (w *walker) setFrom(parent int32, flips []int32) int32 {
	w.key = binary.AppendUvarint(w.key[:0], uint64(parent))
	for _, f := range flips {
		w.key = binary.AppendUvarint(w.key, uint64(f))
	}
	if id, ok := w.setIDs[string(w.key)]; ok {
		return id
	}
	id := int32(len(w.setRuleset))
	w.setIDs[string(w.key)] = id
	w.setRuleset = append(w.setRuleset, w.internRuleset(w.buildRuleset()))
	return id
}

func (w *walker) internRuleset(rs ruleset) int32 {
	w.key = w.key[:0]
	for _, e := range rs {
		b := byte(0)
		if e.AnyProto {
			b = 1
		}
		w.key = append(w.key, b, e.Proto, byte(e.Port>>8), byte(e.Port), e.Bits, byte(e.Verdict))
	}
	if id, ok := w.rulesetIDs[string(w.key)]; ok {
		return id
	}
	id := int32(len(w.rulesets))
	w.rulesetIDs[string(w.key)] = id
	w.rulesets = append(w.rulesets, rs)
	w.outIndex = append(w.outIndex, -1)
	return id
}

// verdictSpan is a port span and the verdict a class gives it.
type verdictSpan struct {
	portSpan
	verdict verdict
}

// verdictEdge is where a span starts (up) or ends (down, one past its
// last port).
type verdictEdge struct {
	at      uint32
	verdict verdict
	up      bool
}

// buildRuleset makes the ruleset of the active classes: an AnyProto entry
// for what every protocol and port gets, an entry per protocol whose every
// port gets more, and port blocks for the ranges that get more than their
// protocol. A verdict only ever grows as more classes apply, so every
// longer entry is at least its containers, which longest-prefix match
// needs.
func (w *walker) buildRuleset() ruleset {
	anyV := verdictNone
	w.spans = w.spans[:0]
	for _, id := range w.active {
		cl := &w.classes.list[id]
		if cl.anyPort {
			anyV = max(anyV, cl.verdict)
			continue
		}
		for _, s := range cl.spans {
			w.spans = append(w.spans, verdictSpan{s, cl.verdict})
		}
	}
	var rs ruleset
	if anyV != verdictNone {
		rs = append(rs, portEntry{AnyProto: true, Verdict: anyV})
	}
	slices.SortFunc(w.spans, func(a, b verdictSpan) int { return cmp.Compare(a.proto, b.proto) })
	for i := 0; i < len(w.spans); {
		proto := w.spans[i].proto
		j := i + 1
		for j < len(w.spans) && w.spans[j].proto == proto {
			j++
		}
		group := w.spans[i:j]
		i = j

		base := anyV
		for _, s := range group {
			if s.lo == 0 && s.hi == 0xffff {
				base = max(base, s.verdict)
			}
		}
		if base != anyV {
			rs = append(rs, portEntry{Proto: proto, Verdict: base})
		}
		rs = w.appendPortBlocks(rs, proto, base, group)
	}
	return rs
}

// appendPortBlocks appends the port blocks of the spans of one protocol
// whose verdict is above base.
func (w *walker) appendPortBlocks(rs ruleset, proto uint8, base verdict, group []verdictSpan) ruleset {
	w.edges = w.edges[:0]
	for _, s := range group {
		if s.verdict > base {
			w.edges = append(w.edges,
				verdictEdge{at: uint32(s.lo), verdict: s.verdict, up: true},
				verdictEdge{at: uint32(s.hi) + 1, verdict: s.verdict})
		}
	}
	if len(w.edges) == 0 {
		return rs
	}
	slices.SortFunc(w.edges, func(a, b verdictEdge) int { return cmp.Compare(a.at, b.at) })

	// Sweep the edges; between two of them the verdict is constant. Runs
	// of one verdict above base become blocks.
	var allows, denies int
	runStart, runVerdict := uint32(0), base
	flush := func(end uint32) {
		if runVerdict != base && end > runStart {
			splitPortRange(uint16(runStart), uint16(end-1), func(port uint16, bits uint8) {
				rs = append(rs, portEntry{Proto: proto, Port: port, Bits: bits, Verdict: runVerdict})
			})
		}
	}
	for k := 0; k < len(w.edges); {
		at := w.edges[k].at
		for ; k < len(w.edges) && w.edges[k].at == at; k++ {
			d := -1
			if w.edges[k].up {
				d = 1
			}
			if w.edges[k].verdict == verdictDeny {
				denies += d
			} else {
				allows += d
			}
		}
		v := base
		switch {
		case denies > 0:
			v = verdictDeny
		case allows > 0:
			v = max(base, verdictAllow)
		}
		if v != runVerdict {
			flush(at)
			runStart, runVerdict = at, v
		}
	}
	flush(1 << 16)
	return rs
}

// splitPortRange calls emit with the aligned power-of-two blocks that
// cover lo to hi (both included) exactly, in order, fewest possible: each
// block is the ports that share the top bits bits of port.
func splitPortRange(lo, hi uint16, emit func(port uint16, bits uint8)) {
	start, end := uint32(lo), uint32(hi)+1
	for start < end {
		size := uint32(1) << 16
		if start != 0 {
			size = start & -start
		}
		for start+size > end {
			size >>= 1
		}
		emit(uint16(start), uint8(16-bits.TrailingZeros32(size)))
		start += size
	}
}
