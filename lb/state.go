package lb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// entry is what the datapath holds for one service.
type entry struct {
	id         uint32
	svc        Service // normalized
	backendIDs map[netip.AddrPort]uint32
	cookies    map[netip.AddrPort]uint32
	slots      []uint32 // slots[i] is the backend id in slot i+1
	// damaged: read back with a missing or wrong slot (its writer died
	// mid-update); the next write of the service rewrites everything.
	damaged bool
}

// backendID is the id of the backend at a, or 0; nil-safe.
func (e *entry) backendID(a netip.AddrPort) uint32 {
	if e == nil {
		return 0
	}
	return e.backendIDs[a]
}

func newCookie() uint32 { return rand.Uint32() | 1 } // nonzero

func svcKey(f Frontend) bpf.XdplaneSvcKey {
	return bpf.XdplaneSvcKey{
		Addr:  f.Address.Addr().As16(),
		Port:  kernel.Htons(f.Address.Port()),
		Proto: uint8(f.Protocol),
	}
}

func frontendOf(k bpf.XdplaneSvcKey) Frontend {
	return Frontend{
		Address:  netip.AddrPortFrom(netip.AddrFrom16(k.Addr).Unmap(), kernel.Ntohs(k.Port)),
		Protocol: Protocol(k.Proto),
	}
}

// beFlagTakesNew is BE_TAKES_NEW (enum backend_flags): the backend is
// eligible for new flows, which session affinity checks.
const beFlagTakesNew = 1

func backendValue(svcID uint32, proto Protocol, b Backend, cookie uint32, takesNew bool) bpf.XdplaneBackend {
	v := bpf.XdplaneBackend{
		Addr:   b.Address.Addr().As16(),
		Port:   kernel.Htons(b.Address.Port()),
		Proto:  uint8(proto),
		SvcId:  svcID,
		Cookie: cookie,
		Weight: b.Weight,
		State:  uint8(b.State),
	}
	if b.Local {
		v.Local = 1
	}
	if takesNew {
		v.Flags |= beFlagTakesNew
	}
	return v
}

func addrPortOf(addr [16]uint8, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(addr).Unmap(), kernel.Ntohs(port))
}

// Ports are stored in network byte order; the generated Go types hold them
// as native (little-endian) integers.

// loadState reads every service back from the maps. It returns the
// services and the ids of backends, slots and reverse-NAT entries that no
// service references (left by a process that died mid-update).
func loadState(maps *bpf.XdplaneMaps) (map[Frontend]*entry, *orphans, error) {
	services := make(map[Frontend]*entry)
	byID := make(map[uint32]*entry)

	var (
		key bpf.XdplaneSvcKey
		val bpf.XdplaneSvcValue
	)
	counts := make(map[uint32]uint16)
	flags := make(map[uint32]uint8)
	it := maps.Services.Iterate()
	for it.Next(&key, &val) {
		f := frontendOf(key)
		e := &entry{
			id:         val.Id,
			svc:        Service{Frontend: f, Algorithm: Algorithm(val.Algorithm)},
			backendIDs: map[netip.AddrPort]uint32{},
			cookies:    map[netip.AddrPort]uint32{},
		}
		if e.svc.Algorithm == Maglev {
			e.svc.MaglevTableSize = val.MaglevSize
		}
		e.svc.SessionAffinity = time.Duration(val.AffinityTimeout) * time.Second
		if val.Flags&svcFlagLocalPolicy != 0 {
			e.svc.TrafficPolicy = Local
		}
		e.svc.VirtualIP = val.Flags&svcFlagVirtualIP != 0
		services[f] = e
		byID[val.Id] = e
		counts[val.Id] = val.Count
		flags[val.Id] = val.Flags
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("read services: %w", err)
	}

	// Every backend entry names its service and carries all a Backend
	// holds, so one pass over the map recovers the backends.
	var (
		id uint32
		be bpf.XdplaneBackend
	)
	takesNew := make(map[uint32][]uint32)
	bit := maps.Backends.Iterate()
	for bit.Next(&id, &be) {
		e := byID[be.SvcId]
		if e == nil {
			continue // an orphan
		}
		a := addrPortOf(be.Addr, be.Port)
		if _, dup := e.backendIDs[a]; dup {
			continue // an orphan: a writer died before deleting it
		}
		e.backendIDs[a], e.cookies[a] = id, be.Cookie
		if be.Flags&beFlagTakesNew != 0 {
			takesNew[be.SvcId] = append(takesNew[be.SvcId], id)
		}
		e.svc.Backends = append(e.svc.Backends, Backend{
			Address: a, Weight: be.Weight, State: BackendState(be.State), Local: be.Local != 0,
		})
	}
	if err := bit.Err(); err != nil {
		return nil, nil, fmt.Errorf("read backends: %w", err)
	}

	var (
		rk bpf.XdplaneSrcRangeKey
		rv uint8
	)
	rit := maps.SourceRanges.Iterate()
	for rit.Next(&rk, &rv) {
		id, p := prefixOf(rk)
		if e := byID[id]; e != nil {
			e.svc.SourceRanges = append(e.svc.SourceRanges, p)
		}
	}
	if err := rit.Err(); err != nil {
		return nil, nil, fmt.Errorf("read source ranges: %w", err)
	}

	// The slots must be what the backends make of them; a missing or
	// different one marks a service its writer left half-done.
	for id, e := range byID {
		e.svc = e.svc.normalized()
		var want []uint32
		for _, b := range e.svc.eligible() {
			for range b.Weight {
				want = append(want, e.backendIDs[b.Address])
			}
		}
		hasRanges := flags[id]&svcFlagSourceRanges != 0
		e.damaged = len(want) != int(counts[id]) || hasRanges != (len(e.svc.SourceRanges) > 0) ||
			!slices.Equal(slices.Sorted(slices.Values(takesNew[id])), eligibleIDs(e))
		for slot := uint32(1); slot <= uint32(counts[id]); slot++ {
			var beID uint32
			err := maps.BackendSlots.Lookup(bpf.XdplaneSlotKey{SvcId: id, Slot: slot}, &beID)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				beID = 0
			} else if err != nil {
				return nil, nil, fmt.Errorf("read slot %d of service %s: %w", slot, e.svc.Frontend, err)
			}
			if int(slot) > len(want) || want[slot-1] != beID {
				e.damaged = true
			}
			e.slots = append(e.slots, beID)
		}
	}

	orph, err := findOrphans(maps, byID)
	if err != nil {
		return nil, nil, err
	}
	return services, orph, nil
}

type orphans struct {
	slots    []bpf.XdplaneSlotKey
	backends []uint32
	revnat   []uint32
	maglev   []uint32
	ranges   []bpf.XdplaneSrcRangeKey
}

func findOrphans(maps *bpf.XdplaneMaps, byID map[uint32]*entry) (*orphans, error) {
	o := &orphans{}
	var (
		sk  bpf.XdplaneSlotKey
		sv  uint32
		id  uint32
		be  bpf.XdplaneBackend
		rn  bpf.XdplaneRevnatValue
		err error
	)
	it := maps.BackendSlots.Iterate()
	for it.Next(&sk, &sv) {
		if e := byID[sk.SvcId]; e == nil || sk.Slot == 0 || int(sk.Slot) > len(e.slots) {
			o.slots = append(o.slots, sk)
		}
	}
	err = errors.Join(err, it.Err())
	it = maps.Backends.Iterate()
	for it.Next(&id, &be) {
		e := byID[be.SvcId]
		if e == nil || e.backendIDs[addrPortOf(be.Addr, be.Port)] != id {
			o.backends = append(o.backends, id)
		}
	}
	err = errors.Join(err, it.Err())
	it = maps.Revnat.Iterate()
	for it.Next(&id, &rn) {
		if byID[id] == nil {
			o.revnat = append(o.revnat, id)
		}
	}
	err = errors.Join(err, it.Err())
	var keys []uint32
	var key uint32
	var inner *ebpf.Map
	mit := maps.Maglev.Iterate()
	for mit.Next(&key, &inner) {
		inner.Close()
		if e := byID[key]; e == nil || e.svc.Algorithm != Maglev {
			keys = append(keys, key)
		}
	}
	o.maglev = keys
	err = errors.Join(err, mit.Err())
	var (
		rk bpf.XdplaneSrcRangeKey
		rv uint8
	)
	rit := maps.SourceRanges.Iterate()
	for rit.Next(&rk, &rv) {
		if id, _ := prefixOf(rk); byID[id] == nil {
			o.ranges = append(o.ranges, rk)
		}
	}
	err = errors.Join(err, rit.Err())
	if err != nil {
		return nil, fmt.Errorf("scan for orphans: %w", err)
	}
	return o, nil
}

func (o *orphans) delete(maps *bpf.XdplaneMaps) error {
	var errs []error
	for _, k := range o.slots {
		errs = append(errs, kernel.IgnoreMissing(maps.BackendSlots.Delete(k)))
	}
	for _, id := range o.backends {
		errs = append(errs, kernel.IgnoreMissing(maps.Backends.Delete(id)))
	}
	for _, id := range o.revnat {
		errs = append(errs, kernel.IgnoreMissing(maps.Revnat.Delete(id)))
	}
	for _, id := range o.maglev {
		errs = append(errs, kernel.IgnoreMissing(maps.Maglev.Delete(id)))
	}
	for _, k := range o.ranges {
		errs = append(errs, kernel.IgnoreMissing(maps.SourceRanges.Delete(k)))
	}
	return errors.Join(errs...)
}

// eligibleIDs lists the ids of the backends of e that take new flows,
// sorted.
func eligibleIDs(e *entry) []uint32 {
	var ids []uint32
	for _, b := range e.svc.eligible() {
		ids = append(ids, e.backendIDs[b.Address])
	}
	slices.Sort(ids)
	return ids
}
