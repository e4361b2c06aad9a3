package lb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// The reference model: what the programs in bpf/ decide for a frame,
// and the frame they make of it, written plainly in Go. It reads the
// control-plane maps the programs read (services, slots, Maglev tables,
// backends, reverse NAT, virtual IPs, source ranges) once, into a
// modelView, and keeps conntrack and session affinity itself, from its own
// decisions: so the differential fuzz test (FuzzModel) compares the
// programs' state with the model's as well as their answers.

// modelStat mirrors enum stat.
type modelStat int

const (
	mPass modelStat = iota
	mForwardNew
	mForwardEst
	mReply
	mNoBackend
	mMalformed
	mFragment
	mCTFull
	mSourceDenied
	mUnknownPort
)

type modelFlow struct {
	v6               bool
	src, dst         netip.Addr // IPv4 unmapped
	sport, dport     uint16
	proto            uint8
	l4off, l4len     int
	udpNoCsum        bool
	tcpFlags         uint8
	srcKey, dstKey   [16]byte // as in the maps: IPv4 v4-mapped
	sportRaw, dportR uint16   // network order, as the generated types hold them
}

const (
	mEthLen    = 14
	mMaxL4Off  = 256
	mMaxExtHdr = 8
)

// modelParse mirrors parse(): the flow, or why the frame is not one.
func modelParse(b []byte) (modelFlow, modelStat) {
	var f modelFlow
	if len(b) < mEthLen {
		return f, mMalformed
	}
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		return modelParse4(b)
	case 0x86dd:
		return modelParse6(b)
	}
	return f, mPass
}

func modelParse4(b []byte) (modelFlow, modelStat) {
	var f modelFlow
	ip := b[mEthLen:]
	if len(ip) < 20 {
		return f, mMalformed
	}
	if ip[0]>>4 != 4 || ip[0]&0xf < 5 {
		return f, mMalformed
	}
	if ip[9] != 6 && ip[9] != 17 {
		return f, mPass
	}
	if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return f, mFragment
	}
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if tot < ihl || mEthLen+tot > len(b) {
		return f, mMalformed
	}
	f.l4off, f.l4len, f.proto = mEthLen+ihl, tot-ihl, ip[9]
	f.src = netip.AddrFrom4([4]byte(ip[12:16]))
	f.dst = netip.AddrFrom4([4]byte(ip[16:20]))
	return modelParseL4(b, f)
}

func modelParse6(b []byte) (modelFlow, modelStat) {
	var f modelFlow
	ip := b[mEthLen:]
	if len(ip) < 40 {
		return f, mMalformed
	}
	if ip[0]>>4 != 6 {
		return f, mMalformed
	}
	payload := int(binary.BigEndian.Uint16(ip[4:]))
	if payload == 0 || mEthLen+40+payload > len(b) {
		return f, mMalformed
	}
	src, dst := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	if src.Is4In6() || dst.Is4In6() {
		return f, mPass
	}
	isExt := func(n byte) bool { return n == 0 || n == 43 || n == 60 || n == 51 }
	next, off := ip[6], mEthLen+40
	for range mMaxExtHdr {
		if next == 6 || next == 17 {
			break
		}
		if next == 44 {
			return f, mFragment
		}
		if !isExt(next) {
			return f, mPass
		}
		if off > mMaxL4Off || off+4 > len(b) {
			return f, mMalformed
		}
		if next == 43 && b[off+3] != 0 {
			return f, mPass
		}
		n := (int(b[off+1]) + 1) * 8
		if next == 51 {
			n = (int(b[off+1]) + 2) * 4
		}
		next, off = b[off], off+n
	}
	if isExt(next) || next == 44 {
		return f, mMalformed
	}
	if next != 6 && next != 17 {
		return f, mPass
	}
	if off > mEthLen+40+payload {
		return f, mMalformed
	}
	f.v6, f.src, f.dst = true, src, dst
	f.l4off, f.l4len, f.proto = off, mEthLen+40+payload-off, next
	return modelParseL4(b, f)
}

func modelParseL4(b []byte, f modelFlow) (modelFlow, modelStat) {
	off := f.l4off
	if off > mMaxL4Off {
		return f, mMalformed
	}
	if f.proto == 6 {
		if off+20 > len(b) {
			return f, mMalformed
		}
		doff := int(b[off+12] >> 4)
		if f.l4len < 20 || doff < 5 || doff*4 > f.l4len {
			return f, mMalformed
		}
		f.tcpFlags = b[off+13]
	} else {
		if off+8 > len(b) {
			return f, mMalformed
		}
		ulen := int(binary.BigEndian.Uint16(b[off+4:]))
		if f.l4len < 8 || ulen < 8 || ulen > f.l4len {
			return f, mMalformed
		}
		f.udpNoCsum = binary.BigEndian.Uint16(b[off+6:]) == 0
	}
	f.sport = binary.BigEndian.Uint16(b[off:])
	f.dport = binary.BigEndian.Uint16(b[off+2:])
	f.srcKey, f.dstKey = f.src.As16(), f.dst.As16()
	f.sportRaw, f.dportR = kernel.Htons(f.sport), kernel.Htons(f.dport)
	return f, 0
}

// modelView is the control-plane maps as the programs read them.
type modelView struct {
	services map[bpf.XdplaneSvcKey]*modelService
	backends map[uint32]bpf.XdplaneBackend
	revnat   map[uint32]netip.AddrPort
	vips     map[[16]byte]bool
}

type modelService struct {
	bpf.XdplaneSvcValue
	slots  []uint32 // backend ids, slot 1 first
	maglev []uint32 // the Maglev table, for a Maglev service that has one
	// ranges are the service's source prefixes as the LPM trie holds
	// them: over the 16-byte address, IPv4 v4-mapped.
	ranges []netip.Prefix
}

// readModelView reads the maps. A slot that names no backend of its
// service is an error: the Manager never leaves one. Maglev tables are
// read whole every time: the Manager rewrites them in place.
func readModelView(maps *bpf.XdplaneMaps) (*modelView, error) {
	services, err := kernel.ReadAll[bpf.XdplaneSvcKey, bpf.XdplaneSvcValue](maps.Services)
	if err != nil {
		return nil, err
	}
	slots, err := kernel.ReadAll[bpf.XdplaneSlotKey, uint32](maps.BackendSlots)
	if err != nil {
		return nil, err
	}
	v := &modelView{services: map[bpf.XdplaneSvcKey]*modelService{}, revnat: map[uint32]netip.AddrPort{}, vips: map[[16]byte]bool{}}
	if v.backends, err = kernel.ReadAll[uint32, bpf.XdplaneBackend](maps.Backends); err != nil {
		return nil, err
	}
	revnat, err := kernel.ReadAll[uint32, bpf.XdplaneRevnatValue](maps.Revnat)
	if err != nil {
		return nil, err
	}
	for id, rn := range revnat {
		v.revnat[id] = addrPortOf(rn.Addr, rn.Port)
	}
	vips, err := kernel.ReadAll[bpf.XdplaneVipKey, uint32](maps.Vips)
	if err != nil {
		return nil, err
	}
	for k := range vips {
		v.vips[k.Addr] = true
	}

	byID := map[uint32]*modelService{}
	for sk, sv := range services {
		s := &modelService{XdplaneSvcValue: sv}
		v.services[sk], byID[sv.Id] = s, s
		for slot := uint32(1); slot <= uint32(s.Count); slot++ {
			id, ok := slots[bpf.XdplaneSlotKey{SvcId: s.Id, Slot: slot}]
			if be, known := v.backends[id]; !ok || !known || be.SvcId != s.Id {
				return nil, fmt.Errorf("slot %d of service %d names backend %d (%v), not one of its own", slot, s.Id, id, ok)
			}
			s.slots = append(s.slots, id)
		}
		if Algorithm(s.Algorithm) == Maglev {
			if s.maglev, err = readMaglevTable(maps, s.Id); err != nil {
				return nil, err
			}
		}
	}

	// The LPM trie has no batch lookup.
	var (
		rk  bpf.XdplaneSrcRangeKey
		one uint8
	)
	it := maps.SourceRanges.Iterate()
	for it.Next(&rk, &one) {
		if s := byID[rangeKeyID(rk)]; s != nil {
			s.ranges = append(s.ranges, netip.PrefixFrom(netip.AddrFrom16(rk.Addr), int(rk.Prefixlen)-32))
		}
	}
	return v, it.Err()
}

// rangeKeyID is the service id of a source range key.
func rangeKeyID(k bpf.XdplaneSrcRangeKey) uint32 {
	id, _ := prefixOf(k)
	return id
}

// readMaglevTable reads a service's Maglev table, or nil if it has none.
func readMaglevTable(maps *bpf.XdplaneMaps, svc uint32) ([]uint32, error) {
	var inner *ebpf.Map
	if err := maps.Maglev.Lookup(svc, &inner); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer inner.Close()
	keys := make([]uint32, inner.MaxEntries())
	table := make([]uint32, inner.MaxEntries())
	var cursor ebpf.MapBatchCursor
	n, err := inner.BatchLookup(&cursor, keys, table, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read the Maglev table of service %d: %w", svc, err)
	}
	if n != len(table) {
		return nil, fmt.Errorf("read %d of the %d entries of service %d's Maglev table", n, len(table), svc)
	}
	return table, nil
}

// modelBackend is a backend a decision may send a flow to.
type modelBackend struct {
	id     uint32
	addr   netip.AddrPort
	cookie uint32
}

// modelState is what the programs write: conntrack and session affinity,
// with the fields the model can predict (not the times), and how long
// each conntrack entry has been idle, by the clock the fuzz test moves
// (the real time an input takes, well under a second, aside).
type modelState struct {
	conntrack map[bpf.XdplaneCtKey]bpf.XdplaneCtValue
	affinity  map[bpf.XdplaneAffinityKey]bpf.XdplaneAffinityValue
	idle      map[bpf.XdplaneCtKey]time.Duration
	timeouts  kernel.CTTimeouts
	// created and reopened count as ct_stats does.
	created, reopened uint64
}

func newModelState(timeouts kernel.CTTimeouts) *modelState {
	return &modelState{
		conntrack: map[bpf.XdplaneCtKey]bpf.XdplaneCtValue{},
		affinity:  map[bpf.XdplaneAffinityKey]bpf.XdplaneAffinityValue{},
		idle:      map[bpf.XdplaneCtKey]time.Duration{},
		timeouts:  timeouts,
	}
}

// TCP flags, as in byte 13 of the header.
const (
	mFIN = 0x01
	mSYN = 0x02
	mRST = 0x04
	mACK = 0x10
)

// reusable mirrors ct_reusable(): whether forward entry k may carry f,
// or f starts a new flow over it. Idle times move in whole seconds and a
// run adds well under one, so an entry idle for its timeout exactly has
// expired.
func (st *modelState) reusable(k bpf.XdplaneCtKey, ct bpf.XdplaneCtValue, f modelFlow) bool {
	expired := st.idle[k] >= st.timeouts.Timeout(&ct, f.proto)
	if f.proto == 17 {
		return !expired
	}
	if f.tcpFlags&(mSYN|mACK) == mSYN {
		return !expired && !kernel.Closing(&ct)
	}
	return true
}

// touch mirrors the refresh of an entry's time, at most once a second.
func (st *modelState) touch(k bpf.XdplaneCtKey) {
	if st.idle[k] > time.Second {
		st.idle[k] = 0
	}
}

// modelDecision is what the model expects of one program run.
type modelDecision struct {
	stat modelStat
	flow modelFlow
	svc  *modelService
	// For mForwardNew and mForwardEst: where to. A Random service's new
	// flow may go to any of backends; otherwise backends has one element.
	backends []modelBackend
	// For mReply: the new source.
	frontend netip.AddrPort
	// For mNoBackend: dropped (a Local policy) rather than rejected.
	drop bool
}

// decide mirrors lb_main() for a program that does DNAT (forward),
// reverse NAT (reply), or both.
func (v *modelView) decide(st *modelState, b []byte, forward, reply bool) modelDecision {
	f, why := modelParse(b)
	if why != 0 {
		return modelDecision{stat: why}
	}
	if forward {
		if s := v.services[bpf.XdplaneSvcKey{Addr: f.dstKey, Port: f.dportR, Proto: f.proto}]; s != nil {
			d := v.forward(st, f, s)
			d.flow, d.svc = f, s
			return d
		}
		if v.vips[f.dstKey] {
			return modelDecision{stat: mUnknownPort, flow: f}
		}
	}
	if reply {
		if ct, ok := st.conntrack[modelCtKey(f, 1)]; ok {
			if fe, ok := v.revnat[ct.SvcId]; ok {
				return modelDecision{stat: mReply, flow: f, frontend: fe}
			}
		}
	}
	return modelDecision{stat: mPass}
}

func modelCtKey(f modelFlow, dir uint8) bpf.XdplaneCtKey {
	return bpf.XdplaneCtKey{Saddr: f.srcKey, Daddr: f.dstKey, Sport: f.sportRaw, Dport: f.dportR, Proto: f.proto, Dir: dir}
}

// backend returns backend id if it belongs to service svc (and, with
// cookie not 0, has that cookie; with mustTakeNew, takes new flows).
func (v *modelView) backend(id, svc, cookie uint32, mustTakeNew bool) (modelBackend, bool) {
	be, ok := v.backends[id]
	if !ok || be.SvcId != svc || (cookie != 0 && be.Cookie != cookie) || (mustTakeNew && be.Flags&beFlagTakesNew == 0) {
		return modelBackend{}, false
	}
	return modelBackend{id: id, addr: addrPortOf(be.Addr, be.Port), cookie: be.Cookie}, true
}

func (v *modelView) forward(st *modelState, f modelFlow, s *modelService) modelDecision {
	if ct, ok := st.conntrack[modelCtKey(f, 0)]; ok && ct.SvcId == s.Id && st.reusable(modelCtKey(f, 0), ct, f) {
		if be, ok := v.backend(ct.BackendId, s.Id, ct.BackendCookie, false); ok {
			return modelDecision{stat: mForwardEst, backends: []modelBackend{be}}
		}
	}
	if s.Flags&svcFlagSourceRanges != 0 && !slices.ContainsFunc(s.ranges, func(p netip.Prefix) bool {
		return p.Contains(netip.AddrFrom16(f.srcKey))
	}) {
		return modelDecision{stat: mSourceDenied}
	}
	if s.AffinityTimeout != 0 {
		// Affinity entries are made within one input, well inside any
		// timeout the fuzz test sets.
		if av, ok := st.affinity[bpf.XdplaneAffinityKey{Client: f.srcKey, SvcId: s.Id}]; ok {
			if be, ok := v.backend(av.BackendId, s.Id, av.BackendCookie, true); ok {
				return modelDecision{stat: mForwardNew, backends: []modelBackend{be}}
			}
		}
	}
	noBackend := modelDecision{stat: mNoBackend, drop: s.Flags&svcFlagDropNoBackend != 0}
	if s.Count == 0 {
		return noBackend
	}
	if Algorithm(s.Algorithm) == Maglev {
		if s.maglev == nil || s.MaglevSize == 0 {
			return noBackend
		}
		idx := flowHash(f.src, f.sport, f.dport, Protocol(f.proto)) % s.MaglevSize
		if int(idx) >= len(s.maglev) {
			return noBackend
		}
		be, ok := v.backend(s.maglev[idx], s.Id, 0, false)
		if !ok {
			return noBackend
		}
		return modelDecision{stat: mForwardNew, backends: []modelBackend{be}}
	}
	d := modelDecision{stat: mForwardNew}
	for _, id := range s.slots {
		if !slices.ContainsFunc(d.backends, func(b modelBackend) bool { return b.id == id }) {
			be, _ := v.backend(id, s.Id, 0, false)
			d.backends = append(d.backends, be)
		}
	}
	return d
}

// commit records in st what the program did for d, given the backend it
// chose (for a forwarded packet) and the frame's length.
func (st *modelState) commit(d modelDecision, be modelBackend, n int) {
	f := d.flow
	tcp := f.proto == 6
	fin, rst := tcp && f.tcpFlags&mFIN != 0, tcp && f.tcpFlags&mRST != 0
	set := func(flag *uint8, on bool) {
		if on {
			*flag = 1
		}
	}
	switch d.stat {
	case mForwardEst:
		k := modelCtKey(f, 0)
		ct := st.conntrack[k]
		ct.Packets++
		ct.Bytes += uint64(n)
		set(&ct.FinForward, fin)
		set(&ct.Rst, rst)
		st.conntrack[k] = ct
		if st.idle[k] > time.Second {
			st.idle[k] = 0
			// The reply entry is put back if it has gone.
			rk := modelReplyKey(f, be)
			if _, ok := st.conntrack[rk]; !ok {
				st.conntrack[rk] = bpf.XdplaneCtValue{BackendId: ct.BackendId, SvcId: ct.SvcId, BackendCookie: ct.BackendCookie}
				st.idle[rk] = 0
				st.created++
			}
		}
	case mReply:
		k := modelCtKey(f, 1)
		ct := st.conntrack[k]
		ct.Packets++
		ct.Bytes += uint64(n)
		st.touch(k)
		if ct.SeenReply == 0 || (fin && ct.FinReply == 0) || (rst && ct.Rst == 0) {
			fk := bpf.XdplaneCtKey{Saddr: f.dstKey, Daddr: d.frontend.Addr().As16(), Sport: f.dportR,
				Dport: kernel.Htons(d.frontend.Port()), Proto: f.proto, Dir: 0}
			if fwd, ok := st.conntrack[fk]; ok && fwd.BackendId == ct.BackendId && fwd.BackendCookie == ct.BackendCookie {
				fwd.SeenReply = 1
				set(&fwd.FinReply, fin)
				set(&fwd.Rst, rst)
				st.conntrack[fk] = fwd
			}
			ct.SeenReply = 1
			set(&ct.FinReply, fin)
			set(&ct.Rst, rst)
		}
		st.conntrack[k] = ct
	case mForwardNew:
		if d.svc.AffinityTimeout != 0 {
			st.affinity[bpf.XdplaneAffinityKey{Client: f.srcKey, SvcId: d.svc.Id}] = bpf.XdplaneAffinityValue{BackendId: be.id, BackendCookie: be.cookie}
		}
		ct := bpf.XdplaneCtValue{BackendId: be.id, SvcId: d.svc.Id, BackendCookie: be.cookie}
		rk := modelReplyKey(f, be)
		if _, ok := st.conntrack[rk]; !ok {
			st.created++
		}
		st.conntrack[rk], st.idle[rk] = ct, 0
		k := modelCtKey(f, 0)
		if _, ok := st.conntrack[k]; ok {
			st.reopened++
		} else {
			st.created++
		}
		ct.Packets, ct.Bytes = 1, uint64(n)
		set(&ct.FinForward, fin)
		set(&ct.Rst, rst)
		st.conntrack[k], st.idle[k] = ct, 0
	}
}

// modelReplyKey is the key of the replies of f from be.
func modelReplyKey(f modelFlow, be modelBackend) bpf.XdplaneCtKey {
	return bpf.XdplaneCtKey{Saddr: be.addr.Addr().As16(), Daddr: f.srcKey, Sport: kernel.Htons(be.addr.Port()), Dport: f.sportRaw, Proto: f.proto, Dir: 1}
}

// output is the frame a program makes of in for d, sending a forwarded
// packet to be.
func (d modelDecision) output(in []byte, be modelBackend) ([]byte, error) {
	switch d.stat {
	case mForwardNew, mForwardEst:
		return modelRewrite(in, d.flow, true, be.addr), nil
	case mReply:
		return modelRewrite(in, d.flow, false, d.frontend), nil
	case mNoBackend, mUnknownPort:
		if !d.drop {
			return modelReject(in, d.flow)
		}
	}
	return in, nil
}

// modelCsumUpdate mirrors csum_update() in bpf/include/csum.h: RFC 1624, eqn. 3,
// for one 4-byte word, as 16-bit words in network order (the one's
// complement sum does not care about byte order).
func modelCsumUpdate(check uint16, from, to [4]byte) uint16 {
	s := uint32(^check)
	s += uint32(^binary.BigEndian.Uint16(from[:2])) + uint32(^binary.BigEndian.Uint16(from[2:]))
	s += uint32(binary.BigEndian.Uint16(to[:2])) + uint32(binary.BigEndian.Uint16(to[2:]))
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// modelRewrite mirrors rewrite_xdp(): in with the flow's destination (dst)
// or source address and port replaced by to, the transport checksum (and
// IPv4's header checksum) updated incrementally, word by word.
func modelRewrite(in []byte, f modelFlow, dst bool, to netip.AddrPort) []byte {
	out := slices.Clone(in)
	from, addrOff, portOff := f.srcKey, mEthLen+12, f.l4off
	if dst {
		from, addrOff, portOff = f.dstKey, mEthLen+16, f.l4off+2
	}
	toKey := to.Addr().As16()
	words := []int{12} // offsets of the address words that change
	if f.v6 {
		words = []int{0, 4, 8, 12}
		addrOff = mEthLen + 8
		if dst {
			addrOff = mEthLen + 24
		}
	}
	checkOff := f.l4off + 6
	if f.proto == 6 {
		checkOff = f.l4off + 16
	}
	if !f.udpNoCsum {
		c := binary.BigEndian.Uint16(out[checkOff:])
		for _, w := range words {
			c = modelCsumUpdate(c, [4]byte(from[w:w+4]), [4]byte(toKey[w:w+4]))
		}
		var oldPort, newPort [4]byte
		binary.BigEndian.PutUint16(oldPort[:], binary.BigEndian.Uint16(out[portOff:]))
		binary.BigEndian.PutUint16(newPort[:], to.Port())
		c = modelCsumUpdate(c, oldPort, newPort)
		if f.proto == 17 && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(out[checkOff:], c)
	}
	binary.BigEndian.PutUint16(out[portOff:], to.Port())
	if f.v6 {
		copy(out[addrOff:], toKey[:])
	} else {
		ipCheck := binary.BigEndian.Uint16(out[mEthLen+10:])
		binary.BigEndian.PutUint16(out[mEthLen+10:], modelCsumUpdate(ipCheck, [4]byte(from[12:]), [4]byte(toKey[12:])))
		copy(out[addrOff:], toKey[12:])
	}
	return out
}

// modelReject mirrors reject_xdp() and reject_tc(): the ICMP (ICMPv6)
// port unreachable from the flow's destination to its source, back to
// the sender's MAC address, quoting the IP header (IPv6: the fixed
// header) and the 8 bytes after it, or 20 for TCP.
func modelReject(in []byte, f modelFlow) ([]byte, error) {
	l4 := 8
	if f.proto == 6 {
		l4 = 20
	}
	n := 40 + l4
	if !f.v6 {
		n = f.l4off - mEthLen + l4
	}
	n &= 0x7c
	return rejectFrame(net.HardwareAddr(in[0:6]), net.HardwareAddr(in[6:12]), f.dst, f.src, in[mEthLen:mEthLen+n])
}
