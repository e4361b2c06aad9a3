package lb

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/bpf"
)

// entry is what the datapath holds for one service.
type entry struct {
	id         uint32
	svc        Service // normalized
	backendIDs map[netip.AddrPort]uint32
	slots      []uint32 // slots[i] is the backend id in slot i+1
}

func svcKey(f Frontend) bpf.XdplaneSvcKey {
	return bpf.XdplaneSvcKey{
		Addr:  f.Address.Addr().As16(),
		Port:  htons(f.Address.Port()),
		Proto: uint8(f.Protocol),
	}
}

func frontendOf(k bpf.XdplaneSvcKey) Frontend {
	return Frontend{
		Address:  netip.AddrPortFrom(netip.AddrFrom16(k.Addr).Unmap(), ntohs(k.Port)),
		Protocol: Protocol(k.Proto),
	}
}

func backendValue(svcID uint32, proto Protocol, a netip.AddrPort) bpf.XdplaneBackend {
	return bpf.XdplaneBackend{
		Addr:   a.Addr().As16(),
		Port:   htons(a.Port()),
		Proto:  uint8(proto),
		SvcId:  svcID,
		Cookie: rand.Uint32() | 1, // nonzero
	}
}

func addrPortOf(addr [16]uint8, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(addr).Unmap(), ntohs(port))
}

// Ports are stored in network byte order; the generated Go types hold them
// as native (little-endian) integers.
func htons(p uint16) uint16 { return p<<8 | p>>8 }
func ntohs(p uint16) uint16 { return htons(p) }

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
	it := maps.Services.Iterate()
	for it.Next(&key, &val) {
		f := frontendOf(key)
		e := &entry{id: val.Id, svc: Service{Frontend: f, Algorithm: Algorithm(val.Algorithm)}, backendIDs: map[netip.AddrPort]uint32{}}
		if e.svc.Algorithm == Maglev {
			e.svc.MaglevTableSize = val.MaglevSize
		}
		e.svc.SessionAffinity = time.Duration(val.AffinityTimeout) * time.Second
		services[f] = e
		byID[val.Id] = e
		counts[val.Id] = val.Count
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("read services: %w", err)
	}

	// A slot or backend that is missing (a writer died mid-update, or is
	// writing now) is recorded as slot id 0: such a service reads back
	// as different from any desired one, so the next Sync rewrites it.
	weights := make(map[uint32]map[netip.AddrPort]uint16)
	for id, e := range byID {
		weights[id] = map[netip.AddrPort]uint16{}
		for slot := uint32(1); slot <= uint32(counts[id]); slot++ {
			var beID uint32
			err := maps.BackendSlots.Lookup(bpf.XdplaneSlotKey{SvcId: id, Slot: slot}, &beID)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				e.slots = append(e.slots, 0)
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("read slot %d of service %s: %w", slot, e.svc.Frontend, err)
			}
			var be bpf.XdplaneBackend
			err = maps.Backends.Lookup(beID, &be)
			if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && be.SvcId != id) {
				e.slots = append(e.slots, 0)
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("read backend %d of service %s: %w", beID, e.svc.Frontend, err)
			}
			a := addrPortOf(be.Addr, be.Port)
			e.backendIDs[a] = beID
			e.slots = append(e.slots, beID)
			weights[id][a]++
		}
	}
	for id, e := range byID {
		for a, w := range weights[id] {
			e.svc.Backends = append(e.svc.Backends, Backend{Address: a, Weight: w})
		}
		e.svc = e.svc.normalized()
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
	if err != nil {
		return nil, fmt.Errorf("scan for orphans: %w", err)
	}
	return o, nil
}

func (o *orphans) delete(maps *bpf.XdplaneMaps) error {
	var errs []error
	for _, k := range o.slots {
		errs = append(errs, ignoreMissing(maps.BackendSlots.Delete(k)))
	}
	for _, id := range o.backends {
		errs = append(errs, ignoreMissing(maps.Backends.Delete(id)))
	}
	for _, id := range o.revnat {
		errs = append(errs, ignoreMissing(maps.Revnat.Delete(id)))
	}
	for _, id := range o.maglev {
		errs = append(errs, ignoreMissing(maps.Maglev.Delete(id)))
	}
	return errors.Join(errs...)
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// idAlloc hands out ids from 1 to max, round-robin, so that an id freed a
// moment ago is the last to be reused: a conntrack entry naming a deleted
// backend then finds nothing rather than a stranger.
type idAlloc struct {
	max  uint32
	next uint32
	used map[uint32]bool
}

func newIDAlloc(max uint32) *idAlloc {
	return &idAlloc{max: max, next: 1, used: make(map[uint32]bool)}
}

func (a *idAlloc) inUse() int { return len(a.used) }

func (a *idAlloc) take(id uint32) {
	a.used[id] = true
	if id >= a.next {
		a.next = id%a.max + 1
	}
}

func (a *idAlloc) alloc() (uint32, bool) {
	if uint32(len(a.used)) >= a.max {
		return 0, false
	}
	for {
		id := a.next
		a.next = a.next%a.max + 1
		if !a.used[id] {
			a.used[id] = true
			return id, true
		}
	}
}

func (a *idAlloc) release(id uint32) { delete(a.used, id) }
