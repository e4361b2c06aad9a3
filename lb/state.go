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

// addrPortOf reads an address and port as a map holds them: the address
// v4-mapped for IPv4, the port in network byte order in a field the
// generated Go types hold as a native (little-endian) integer.
func addrPortOf(addr [16]uint8, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(addr).Unmap(), kernel.Ntohs(port))
}

// loadState reads every service back from the maps. It returns the
// services and the entries that no service references (slots, backends,
// reverse NAT entries, Maglev tables, source ranges), which a process
// that died mid-update left.
func loadState(maps *bpf.XdplaneMaps) (map[Frontend]*entry, *orphans, error) {
	services := make(map[Frontend]*entry)
	byID := make(map[uint32]*entry)

	counts := make(map[uint32]uint16)
	flags := make(map[uint32]uint8)
	err := kernel.Scan(maps.Services, func(key bpf.XdplaneSvcKey, val bpf.XdplaneSvcValue) error {
		f := frontendOf(key)
		e := newEntry(val.Id, Service{Frontend: f, Algorithm: Algorithm(val.Algorithm)})
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
		return nil
	})
	if err != nil {
		return nil, nil, err
	}

	// Every backend entry names its service and carries all a Backend
	// holds, so one pass over the map recovers the backends.
	takesNew := make(map[uint32][]uint32)
	err = kernel.Scan(maps.Backends, func(id uint32, be bpf.XdplaneBackend) error {
		e := byID[be.SvcId]
		if e == nil {
			return nil // an orphan
		}
		a := addrPortOf(be.Addr, be.Port)
		if _, dup := e.backendIDs[a]; dup {
			return nil // an orphan: a writer died before deleting it
		}
		e.backendIDs[a], e.cookies[a] = id, be.Cookie
		if be.Flags&beFlagTakesNew != 0 {
			takesNew[be.SvcId] = append(takesNew[be.SvcId], id)
		}
		e.svc.Backends = append(e.svc.Backends, Backend{
			Address: a, Weight: be.Weight, State: BackendState(be.State), Local: be.Local != 0,
		})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}

	err = kernel.Scan(maps.SourceRanges, func(k bpf.XdplaneSrcRangeKey, _ uint8) error {
		if id, p := prefixOf(k); byID[id] != nil {
			byID[id].svc.SourceRanges = append(byID[id].svc.SourceRanges, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}

	// Read as a number, the inner map's id, a Maglev table opens no file
	// descriptor.
	tables, err := kernel.Keys(maps.Maglev, func(uint32, uint32) bool { return true })
	if err != nil {
		return nil, nil, err
	}
	hasTable := make(map[uint32]bool, len(tables))
	for _, id := range tables {
		hasTable[id] = true
	}

	// The slots must be what the backends make of them; a missing or
	// different one marks a service its writer left half-done, as does a
	// Maglev service without a table (a rollback that could not rebuild
	// it).
	for id, e := range byID {
		e.svc = e.svc.normalized()
		want := slotLayout(e.svc, e.backendIDs)
		hasRanges := flags[id]&svcFlagSourceRanges != 0
		e.damaged = len(want) != int(counts[id]) || hasRanges != (len(e.svc.SourceRanges) > 0) ||
			!slices.Equal(slices.Sorted(slices.Values(takesNew[id])), eligibleIDs(e)) ||
			e.svc.Algorithm == Maglev && !hasTable[id]
		for i := range int(counts[id]) {
			var beID uint32
			err := maps.BackendSlots.Lookup(slotKey(id, i), &beID)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				beID = 0
			} else if err != nil {
				return nil, nil, fmt.Errorf("read slot %d of service %s: %w", i+1, e.svc.Frontend, err)
			}
			if i >= len(want) || want[i] != beID {
				e.damaged = true
			}
			e.slots = append(e.slots, beID)
		}
	}

	orph, err := findOrphans(maps, byID, tables)
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

// findOrphans lists the entries that no service in byID refers to;
// tables are the ids the maglev map holds a table for.
func findOrphans(maps *bpf.XdplaneMaps, byID map[uint32]*entry, tables []uint32) (*orphans, error) {
	var (
		o    orphans
		errs [5]error
	)
	o.slots, errs[0] = kernel.Keys(maps.BackendSlots, func(k bpf.XdplaneSlotKey, _ uint32) bool {
		e := byID[k.SvcId]
		return e == nil || k.Slot == 0 || int(k.Slot) > len(e.slots)
	})
	o.backends, errs[1] = kernel.Keys(maps.Backends, func(id uint32, be bpf.XdplaneBackend) bool {
		e := byID[be.SvcId]
		return e == nil || e.backendIDs[addrPortOf(be.Addr, be.Port)] != id
	})
	o.revnat, errs[2] = kernel.Keys(maps.Revnat, func(id uint32, _ bpf.XdplaneRevnatValue) bool {
		return byID[id] == nil
	})
	for _, id := range tables {
		if e := byID[id]; e == nil || e.svc.Algorithm != Maglev {
			o.maglev = append(o.maglev, id)
		}
	}
	o.ranges, errs[4] = kernel.Keys(maps.SourceRanges, func(k bpf.XdplaneSrcRangeKey, _ uint8) bool {
		id, _ := prefixOf(k)
		return byID[id] == nil
	})
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("scan for orphans: %w", err)
	}
	return &o, nil
}

func (o *orphans) delete(maps *bpf.XdplaneMaps) error {
	return errors.Join(
		kernel.DeleteAll(maps.BackendSlots, o.slots),
		kernel.DeleteAll(maps.Backends, o.backends),
		kernel.DeleteAll(maps.Revnat, o.revnat),
		kernel.DeleteAll(maps.Maglev, o.maglev),
		kernel.DeleteAll(maps.SourceRanges, o.ranges),
	)
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
