package lb

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/bpf"
)

// The reference model: what the programs in bpf/lb.c decide for a frame,
// written plainly in Go from the same map contents the programs read. The
// differential fuzz test (FuzzModel) holds the two to the same answers.

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
	srcKey, dstKey   [16]byte // as in the maps: IPv4 v4-mapped
	sportRaw, dportR uint16   // network order, as the generated types hold them
}

const (
	mEthLen    = 14
	mMaxL4Off  = 256
	mMaxExtHdr = 4
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
	f.sportRaw, f.dportR = htons(f.sport), htons(f.dport)
	return f, 0
}

// modelDecision is what the model expects of one program run.
type modelDecision struct {
	stat modelStat
	// For mForwardNew and mForwardEst: where to. A Random service's new
	// flow may go to any of backends (with its slot weights); otherwise
	// backends has one element.
	backends []netip.AddrPort
	// For mReply: the new source.
	frontend netip.AddrPort
	// For mNoBackend: dropped (a Local policy) rather than rejected.
	drop bool
}

// modelDecide mirrors lb_main() for a program that does DNAT (forward),
// reverse NAT (reply), or both.
func modelDecide(maps *bpf.XdplaneMaps, b []byte, forward, reply bool) (modelDecision, error) {
	f, why := modelParse(b)
	if why != 0 {
		return modelDecision{stat: why}, nil
	}
	if forward {
		var sv bpf.XdplaneSvcValue
		sk := bpf.XdplaneSvcKey{Addr: f.dstKey, Port: f.dportR, Proto: f.proto}
		if err := maps.Services.Lookup(sk, &sv); err == nil {
			return modelForward(maps, f, sv)
		}
		var n uint32
		if maps.Vips.Lookup(bpf.XdplaneVipKey{Addr: f.dstKey}, &n) == nil {
			return modelDecision{stat: mUnknownPort}, nil
		}
	}
	if reply {
		var ct bpf.XdplaneCtValue
		k := bpf.XdplaneCtKey{Saddr: f.srcKey, Daddr: f.dstKey, Sport: f.sportRaw, Dport: f.dportR, Proto: f.proto, Dir: 1}
		if maps.Conntrack.Lookup(k, &ct) == nil {
			var rn bpf.XdplaneRevnatValue
			if maps.Revnat.Lookup(ct.SvcId, &rn) == nil {
				return modelDecision{stat: mReply, frontend: addrPortOf(rn.Addr, rn.Port)}, nil
			}
		}
	}
	return modelDecision{stat: mPass}, nil
}

func modelBackend(maps *bpf.XdplaneMaps, id, svcID, cookie uint32, checkCookie, mustTakeNew bool) (netip.AddrPort, bool) {
	var be bpf.XdplaneBackend
	if maps.Backends.Lookup(id, &be) != nil || be.SvcId != svcID || (checkCookie && be.Cookie != cookie) ||
		(mustTakeNew && be.Flags&beFlagTakesNew == 0) {
		return netip.AddrPort{}, false
	}
	return addrPortOf(be.Addr, be.Port), true
}

func modelForward(maps *bpf.XdplaneMaps, f modelFlow, sv bpf.XdplaneSvcValue) (modelDecision, error) {
	var ct bpf.XdplaneCtValue
	k := bpf.XdplaneCtKey{Saddr: f.srcKey, Daddr: f.dstKey, Sport: f.sportRaw, Dport: f.dportR, Proto: f.proto}
	if maps.Conntrack.Lookup(k, &ct) == nil && ct.SvcId == sv.Id {
		if a, ok := modelBackend(maps, ct.BackendId, sv.Id, ct.BackendCookie, true, false); ok {
			return modelDecision{stat: mForwardEst, backends: []netip.AddrPort{a}}, nil
		}
	}
	if sv.Flags&svcFlagSourceRanges != 0 {
		var v uint8
		rk := bpf.XdplaneSrcRangeKey{Prefixlen: 32 + 128, SvcId: rangeKey(sv.Id, netip.Prefix{}).SvcId, Addr: f.srcKey}
		if maps.SourceRanges.Lookup(rk, &v) != nil {
			return modelDecision{stat: mSourceDenied}, nil
		}
	}
	if sv.AffinityTimeout != 0 {
		var av bpf.XdplaneAffinityValue
		if maps.Affinity.Lookup(bpf.XdplaneAffinityKey{Client: f.srcKey, SvcId: sv.Id}, &av) == nil {
			// The fuzz test creates affinity only within one input, well
			// inside any timeout.
			if a, ok := modelBackend(maps, av.BackendId, sv.Id, av.BackendCookie, true, true); ok {
				return modelDecision{stat: mForwardNew, backends: []netip.AddrPort{a}}, nil
			}
		}
	}
	noBackend := modelDecision{stat: mNoBackend, drop: sv.Flags&svcFlagDropNoBackend != 0}
	if sv.Count == 0 {
		return noBackend, nil
	}
	if Algorithm(sv.Algorithm) == Maglev {
		var inner *ebpf.Map
		if maps.Maglev.Lookup(sv.Id, &inner) != nil || sv.MaglevSize == 0 {
			return noBackend, nil
		}
		defer inner.Close()
		idx := flowHash(f.src, f.sport, f.dport, Protocol(f.proto)) % sv.MaglevSize
		var id uint32
		if err := inner.Lookup(idx, &id); err != nil {
			return modelDecision{}, err
		}
		a, ok := modelBackend(maps, id, sv.Id, 0, false, false)
		if !ok {
			return noBackend, nil
		}
		return modelDecision{stat: mForwardNew, backends: []netip.AddrPort{a}}, nil
	}
	var d modelDecision
	d.stat = mForwardNew
	for slot := uint32(1); slot <= uint32(sv.Count); slot++ {
		var id uint32
		if err := maps.BackendSlots.Lookup(bpf.XdplaneSlotKey{SvcId: sv.Id, Slot: slot}, &id); err != nil {
			return modelDecision{}, err
		}
		if a, ok := modelBackend(maps, id, sv.Id, 0, false, false); ok && !slices.Contains(d.backends, a) {
			d.backends = append(d.backends, a)
		}
	}
	return d, nil
}
