package lb

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/idalloc"
	"github.com/xdplane/xdplane/internal/kernel"
)

// Manager installs services into a datapath. It keeps a copy of what it
// wrote, recovered from the maps when it is created, so a restarted process
// carries on where the last one stopped.
//
// Every call validates its whole input before it touches a map, and a
// failure part-way through a call (the kernel refusing a write) rolls back
// what that call wrote. Packets never see a half-written service: backends
// and slots are written before the service entry that publishes them, and a
// shrinking service lowers its slot count before the slots and backends
// behind it go.
//
// A Manager is safe for concurrent use. It holds the datapath's "lb" lock
// until Close, so a second Manager on the same datapath, in this process or
// another, fails with ErrBusy instead of corrupting the first one's writes.
type Manager struct {
	maps   *bpf.XdplaneMaps
	limits datapath.Limits
	held   *kernel.Held // the datapath's "lb" lock, until Close
	// mmapable: the maglev map takes tables filled through a mapping
	// (mmapableTables), as those this version makes do.
	mmapable bool

	mu       sync.Mutex
	services map[Frontend]*entry
	drops    map[uint32]*entry // during Sync, the Maglev tables it deletes at its end, by id
	svcIDs   *idalloc.Alloc
	beIDs    *idalloc.Alloc
	slots    int                   // slots in use, over all services
	vips     map[netip.Addr]uint32 // services per virtual IP, as in the vips map
}

// SyncResult says what Sync changed.
type SyncResult struct {
	Added   []Frontend
	Changed []Frontend
	Removed []Frontend
}

// NewManager reads the services already in dp and returns a Manager for
// them. Entries a crashed writer left without a service are deleted, and a
// service it left half-written is rewritten by the next Upsert or Sync of
// it. Close releases the Manager's lock on the datapath.
func NewManager(dp *datapath.Datapath) (*Manager, error) {
	k := kernel.Of(dp)
	held, err := kernel.Hold(k.Dir, kernel.LockLB)
	if err != nil {
		return nil, fmt.Errorf("lb.Manager: %w", err)
	}
	m := &Manager{maps: k.Maps, limits: dp.Limits(), held: held, mmapable: mmapableTables(k.Maps.Maglev)}
	if err := m.load(); err != nil {
		held.Release()
		return nil, err
	}
	return m, nil
}

// load (re)builds the Manager's view from the maps.
func (m *Manager) load() error {
	services, orph, err := loadState(m.maps)
	if err != nil {
		return err
	}
	if err := orph.delete(m.maps); err != nil {
		return fmt.Errorf("delete orphaned entries: %w", err)
	}
	m.services = services
	if err := m.loadVIPs(); err != nil {
		return err
	}
	m.svcIDs = idalloc.New(m.limits.MaxServices)
	m.beIDs = idalloc.New(m.limits.MaxBackends)
	m.slots = 0
	for _, e := range services {
		m.svcIDs.Take(e.id)
		for _, id := range e.backendIDs {
			m.beIDs.Take(id)
		}
		m.slots += len(e.slots)
	}
	return nil
}

// Close releases the Manager's lock on the datapath. The services stay
// installed. Calls that write return ErrClosed after Close; reads go on
// answering from the Manager's copy.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held.Release()
	return nil
}

// fail ends a call whose writes the kernel refused part-way: it rolls them
// back, and if even that fails, re-reads the maps so that the Manager's
// view matches what the kernel holds.
func (m *Manager) fail(t *kernel.Txn, cause error) error {
	err, clean := t.Rollback(cause)
	if !clean {
		if rerr := m.load(); rerr != nil {
			err = fmt.Errorf("%w (and re-reading the datapath failed: %w)", err, rerr)
		}
	}
	return err
}

// List returns the installed services, ordered by frontend.
func (m *Manager) List() []Service {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Service, 0, len(m.services))
	for _, e := range m.services {
		out = append(out, cloneService(e.svc))
	}
	slices.SortFunc(out, func(a, b Service) int { return compareFrontends(a.Frontend, b.Frontend) })
	return out
}

// Get returns the service with frontend f.
func (m *Manager) Get(f Frontend) (Service, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.services[f]
	if !ok {
		return Service{}, false
	}
	return cloneService(e.svc), true
}

func cloneService(s Service) Service {
	s.Backends = slices.Clone(s.Backends)
	return s
}

// Upsert installs s, or replaces the service with the same frontend.
// Flows already established keep their backend if it is still among the
// service's backends.
func (m *Manager) Upsert(s Service) error {
	if err := s.Validate(); err != nil {
		return err
	}
	s = s.normalized()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.held.Check(ErrClosed); err != nil {
		return err
	}
	old := m.services[s.Frontend]
	if old != nil && old.svc.equal(s) && !old.damaged {
		return nil
	}
	if err := m.checkCapacity([]Service{s}, nil); err != nil {
		return err
	}
	var t kernel.Txn
	if err := m.apply(&t, old, s); err != nil {
		return m.fail(&t, err)
	}
	return nil
}

// Delete removes the service with frontend f. Its flows stop being
// translated at once.
func (m *Manager) Delete(f Frontend) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.held.Check(ErrClosed); err != nil {
		return err
	}
	e := m.services[f]
	if e == nil {
		return fmt.Errorf("service %s: %w", f, ErrNotFound)
	}
	var t kernel.Txn
	if err := m.remove(&t, e); err != nil {
		return m.fail(&t, err)
	}
	return nil
}

// Sync makes the installed services exactly the given ones: it adds the
// missing, rewrites the changed and removes the rest, and says which.
// The whole set is validated first; if the kernel refuses a write on the
// way, everything Sync wrote is rolled back and the previous set stays in
// force. Each service switches atomically; the set as a whole does not
// (a packet may meet one service already updated and another not yet).
func (m *Manager) Sync(desired []Service) (SyncResult, error) {
	want := make(map[Frontend]Service, len(desired))
	for i, s := range desired {
		if err := s.Validate(); err != nil {
			return SyncResult{}, err
		}
		if _, dup := want[s.Frontend]; dup {
			return SyncResult{}, invalid(s.Frontend, fmt.Sprintf("services[%d].frontend", i), s.Frontend, "duplicate frontend")
		}
		want[s.Frontend] = s.normalized()
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.held.Check(ErrClosed); err != nil {
		return SyncResult{}, err
	}
	var res SyncResult
	var changes []Service
	for f, s := range want {
		old := m.services[f]
		switch {
		case old == nil:
			res.Added = append(res.Added, f)
			changes = append(changes, s)
		case !old.svc.equal(s) || old.damaged:
			res.Changed = append(res.Changed, f)
			changes = append(changes, s)
		}
	}
	for f := range m.services {
		if _, ok := want[f]; !ok {
			res.Removed = append(res.Removed, f)
		}
	}
	for _, l := range [][]Frontend{res.Added, res.Changed, res.Removed} {
		slices.SortFunc(l, compareFrontends)
	}
	slices.SortFunc(changes, func(a, b Service) int { return compareFrontends(a.Frontend, b.Frontend) })
	if err := m.checkCapacity(changes, res.Removed); err != nil {
		return SyncResult{}, err
	}

	// Removals first: they free room for what comes after.
	var t kernel.Txn
	before := m.snapshot()
	m.drops = map[uint32]*entry{}
	defer func() { m.drops = nil }()
	for _, f := range res.Removed {
		if err := m.remove(&t, m.services[f]); err != nil {
			m.restore(before)
			return SyncResult{}, m.fail(&t, err)
		}
	}
	// Services already installed change one by one; those that are not
	// come last, together (applyNew). Last keeps checkCapacity's peak: it
	// replayed the changes in order, and the new services' backends are
	// only ever added.
	var fresh []Service
	for _, s := range changes {
		old := m.services[s.Frontend]
		if old == nil && batchable(s) {
			fresh = append(fresh, s)
			continue
		}
		if err := m.apply(&t, old, s); err != nil {
			m.restore(before)
			return SyncResult{}, m.fail(&t, err)
		}
	}
	if len(fresh) > 0 {
		if err := m.applyNew(&t, fresh); err != nil {
			m.restore(before)
			return SyncResult{}, m.fail(&t, err)
		}
	}
	if err := m.flushDrops(&t); err != nil {
		m.restore(before)
		return SyncResult{}, m.fail(&t, err)
	}
	return res, nil
}

// takers is the set of s's backends that take new flows.
func takers(s Service) map[netip.AddrPort]bool {
	eligible := s.eligible()
	out := make(map[netip.AddrPort]bool, len(eligible))
	for _, b := range eligible {
		out[b.Address] = true
	}
	return out
}

// layOutSlots fills e.slots from e.svc and e.backendIDs.
func (e *entry) layOutSlots() { e.slots = slotLayout(e.svc, e.backendIDs) }

// slotLayout is the backend ids of the slots of the normalized service
// s, whose backends have the ids in ids: only the backends that take new
// flows get slots, each as many as its weight, in order.
func slotLayout(s Service, ids map[netip.AddrPort]uint32) []uint32 {
	var out []uint32
	for _, b := range s.eligible() {
		for range b.Weight {
			out = append(out, ids[b.Address])
		}
	}
	return out
}

// batchable says whether applyNew can write s: source ranges (an LPM
// trie, which has no batch update) take apply's way.
func batchable(s Service) bool {
	return len(s.SourceRanges) == 0
}

// applyNew writes services that are not installed (and are batchable)
// in apply's order, with one batch update per map instead of a write per
// entry: every backend with its counters zeroed, every Maglev table
// (maglevBatch at a time, see putNewTables), every slot, every reverse
// NAT entry, then every service entry (each service switches on with its
// own entry, as in apply), then the virtual IPs. Every key is
// new: its ids were free and its frontend absent (the Manager's view is
// the kernel's, and orphans were removed when it was read), so undoing a
// batch deletes what it wrote.
func (m *Manager) applyNew(t *kernel.Txn, ss []Service) error {
	var (
		beKeys   []uint32
		beVals   []bpf.XdplaneBackend
		slotKeys []bpf.XdplaneSlotKey
		slotVals []uint32
		rnKeys   []uint32
		rnVals   []bpf.XdplaneRevnatValue
		svcKeys  = make([]bpf.XdplaneSvcKey, 0, len(ss))
		svcVals  = make([]bpf.XdplaneSvcValue, 0, len(ss))
		entries  = make([]*entry, 0, len(ss))
		tables   []*entry
		vips     = map[netip.Addr]uint32{}
	)
	for _, s := range ss {
		id, err := m.takeServiceID(s)
		if err != nil {
			return err
		}
		e := newEntry(id, s)
		takesNew := takers(s)
		for _, b := range s.Backends {
			bid, err := m.takeBackendID(s)
			if err != nil {
				return err
			}
			cookie := newCookie()
			e.backendIDs[b.Address], e.cookies[b.Address] = bid, cookie
			beKeys = append(beKeys, bid)
			beVals = append(beVals, backendValue(id, s.Frontend.Protocol, b, cookie, takesNew[b.Address]))
		}
		e.layOutSlots()
		for i, bid := range e.slots {
			slotKeys = append(slotKeys, slotKey(id, i))
			slotVals = append(slotVals, bid)
		}
		f := s.Frontend
		rnKeys = append(rnKeys, id)
		rnVals = append(rnVals, revnatValue(f))
		svcKeys = append(svcKeys, svcKey(f))
		svcVals = append(svcVals, svcValue(e))
		if s.VirtualIP {
			vips[f.Address.Addr()]++
		}
		if s.Algorithm == Maglev {
			tables = append(tables, e)
		}
		entries = append(entries, e)
	}

	if err := kernel.PutNew(t, m.maps.Backends, beKeys, beVals); err != nil {
		return err
	}
	if err := m.putNewTables(t, tables); err != nil {
		return err
	}
	if err := kernel.PutNew(t, m.maps.BackendSlots, slotKeys, slotVals); err != nil {
		return err
	}
	if err := kernel.PutNew(t, m.maps.Revnat, rnKeys, rnVals); err != nil {
		return err
	}
	if err := kernel.PutNew(t, m.maps.Services, svcKeys, svcVals); err != nil {
		return err
	}
	// Virtual IPs no service had are new keys too; the others count up
	// one by one.
	var (
		vipAddrs []netip.Addr
		vipKeys  []bpf.XdplaneVipKey
		vipVals  []uint32
	)
	for a, n := range vips {
		if m.vips[a] == 0 {
			vipAddrs = append(vipAddrs, a)
			vipKeys = append(vipKeys, bpf.XdplaneVipKey{Addr: a.As16()})
			vipVals = append(vipVals, n)
			continue
		}
		if err := m.addVIP(t, a, int(n)); err != nil {
			return err
		}
	}
	if err := kernel.PutNew(t, m.maps.Vips, vipKeys, vipVals); err != nil {
		return err
	}
	for i, a := range vipAddrs {
		m.vips[a] = vipVals[i]
	}
	// The new backends' counters start at zero. Zeroing them is the last
	// write, after every other can have failed: a failed Sync leaves the
	// counters of the ids it would have taken as they were, and reading
	// them all first to restore them would cost a system call each. (A
	// packet counted between the service's switch and this write is not
	// counted.)
	if len(beKeys) > 0 {
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return err
		}
		zeros := make([]bpf.XdplaneCounter, len(beKeys)*cpus)
		if _, err := m.maps.BackendStats.BatchUpdate(beKeys, zeros, nil); err != nil {
			return fmt.Errorf("reset the counters of %d backends: %w", len(beKeys), err)
		}
	}
	for _, e := range entries {
		m.services[e.svc.Frontend] = e
		m.slots += len(e.slots)
	}
	return nil
}

// checkCapacity refuses a change that would not fit. It replays the
// writes in the order Sync makes them (removals, then each change) and
// checks the peak at each step: while a service changes, its old and new
// backends, and max(old, new) slots, are in the maps together.
func (m *Manager) checkCapacity(changes []Service, removed []Frontend) error {
	services := len(m.services)
	backends := m.beIDs.InUse()
	slots := m.slots
	for _, f := range removed {
		e := m.services[f]
		services--
		backends -= len(e.backendIDs)
		slots -= len(e.slots)
	}
	for _, s := range changes {
		old := m.services[s.Frontend]
		n, added, dropped := 0, 0, 0
		kept := make(map[netip.AddrPort]bool, len(s.Backends))
		for _, b := range s.Backends {
			kept[b.Address] = true
			if old == nil || old.backendIDs[b.Address] == 0 {
				added++
			}
		}
		for _, b := range s.eligible() {
			n += int(b.Weight)
		}
		oldSlots := 0
		if old == nil {
			services++
		} else {
			oldSlots = len(old.slots)
			for a := range old.backendIDs {
				if !kept[a] {
					dropped++
				}
			}
		}
		switch {
		case services > int(m.limits.MaxServices):
			return overCapacity(s.Frontend, "frontend", s.Frontend,
				fmt.Sprintf("the datapath holds at most %d services", m.limits.MaxServices))
		case backends+added > int(m.limits.MaxBackends):
			return overCapacity(s.Frontend, "backends", len(s.Backends),
				fmt.Sprintf("the datapath holds at most %d backends in all", m.limits.MaxBackends))
		case slots+max(n-oldSlots, 0) > int(m.limits.MaxBackendSlots):
			return overCapacity(s.Frontend, "backends", len(s.Backends),
				fmt.Sprintf("the datapath holds at most %d backend slots (weights) in all", m.limits.MaxBackendSlots))
		}
		backends += added - dropped
		slots += n - oldSlots
	}
	return nil
}

type snapshot struct {
	services map[Frontend]*entry
	svcIDs   *idalloc.Alloc
	beIDs    *idalloc.Alloc
	slots    int
	vips     map[netip.Addr]uint32
}

func (m *Manager) snapshot() snapshot {
	return snapshot{services: maps.Clone(m.services), svcIDs: m.svcIDs.Clone(), beIDs: m.beIDs.Clone(), slots: m.slots, vips: maps.Clone(m.vips)}
}

func (m *Manager) restore(s snapshot) {
	m.services, m.slots, m.vips = s.services, s.slots, s.vips
	m.svcIDs, m.beIDs = s.svcIDs, s.beIDs
}

// apply writes service s over old (nil for a new service), in five
// phases whose order keeps packets from seeing a half-written service:
//
//  1. writeBackends: new backends, and kept ones whose entry changed;
//  2. writeSlots: slots 1..n of the new layout (beyond the old count they
//     are not yet visible; below it each slot names a live backend, old or
//     new);
//  3. publish: the Maglev table, reverse NAT and new source ranges, then
//     the service entry with count n, which is the switch; after it, what
//     the service no longer has (ranges, virtual IP, Maglev table);
//  4. trimSlots: slots beyond n, which no packet reads any more;
//  5. dropBackends: backends neither a slot nor the Maglev table names
//     any more.
//
// A Maglev service writes its slots (phase 2) after publish instead: the
// datapath does not read a Maglev service's slots, and a table rewritten
// in place (writeMaglev) is then followed by the slots, so that a writer
// that dies mid-table leaves slots that disagree with the backends, which
// recovery marks damaged (a later write of the service rewrites the
// table); the slots do not depend on the table, so the writes that move
// the table also move them.
//
// Only then, with the kernel written, does the Manager's view change
// (adopt). A failed phase frees the ids it took; what a phase changed of
// the view beside the maps (the virtual IPs' counts) the transaction's
// Rollback puts back with the maps.
func (m *Manager) apply(t *kernel.Txn, old *entry, s Service) (err error) {
	var e *entry
	if old != nil {
		e = newEntry(old.id, s)
	} else {
		id, err := m.takeServiceID(s)
		if err != nil {
			return err
		}
		e = newEntry(id, s)
	}
	var taken []uint32 // backend ids taken by this call
	defer func() {
		if err != nil {
			for _, id := range taken {
				m.beIDs.Release(id)
			}
			if old == nil {
				m.svcIDs.Release(e.id)
			}
		}
	}()
	if taken, err = m.writeBackends(t, old, e); err != nil {
		return err
	}
	e.layOutSlots()
	maglev := s.Algorithm == Maglev
	if !maglev {
		if err := m.writeSlots(t, old, e); err != nil {
			return err
		}
	}
	if err := m.publish(t, old, e); err != nil {
		return err
	}
	if maglev {
		if err := m.writeSlots(t, old, e); err != nil {
			return err
		}
	}
	if err := m.trimSlots(t, old, e); err != nil {
		return err
	}
	if err := m.dropBackends(t, old, e); err != nil {
		return err
	}
	m.adopt(old, e)
	return nil
}

// newEntry is an entry for service s, with id and no backends yet.
func newEntry(id uint32, s Service) *entry {
	return &entry{
		id:         id,
		svc:        s,
		backendIDs: make(map[netip.AddrPort]uint32, len(s.Backends)),
		cookies:    make(map[netip.AddrPort]uint32, len(s.Backends)),
	}
}

// takeServiceID takes a free service id for s. checkCapacity has made
// sure there is one; the error is a safety net.
func (m *Manager) takeServiceID(s Service) (uint32, error) {
	id, ok := m.svcIDs.Get()
	if !ok {
		return 0, overCapacity(s.Frontend, "frontend", s.Frontend, "no free service id")
	}
	return id, nil
}

// takeBackendID takes a free backend id for a backend of s.
func (m *Manager) takeBackendID(s Service) (uint32, error) {
	id, ok := m.beIDs.Get()
	if !ok {
		return 0, overCapacity(s.Frontend, "backends", len(s.Backends), "no free backend id")
	}
	return id, nil
}

// writeBackends is apply's phase 1. A backend old already has keeps its
// id and cookie, so its flows stay; its entry is rewritten in place only
// if its weight, state, locality or eligibility changed (or old was
// damaged). A new backend gets a free id, a new cookie and zeroed
// counters. It returns the ids it took, on error too, for apply to free.
func (m *Manager) writeBackends(t *kernel.Txn, old, e *entry) (taken []uint32, err error) {
	s := e.svc
	takesNew := takers(s)
	var (
		was     map[netip.AddrPort]Backend
		tookNew map[netip.AddrPort]bool
	)
	if old != nil {
		was = make(map[netip.AddrPort]Backend, len(old.svc.Backends))
		for _, b := range old.svc.Backends {
			was[b.Address] = b
		}
		tookNew = takers(old.svc)
	}
	for _, b := range s.Backends {
		a := b.Address
		id := old.backendID(a)
		if id != 0 {
			e.backendIDs[a], e.cookies[a] = id, old.cookies[a]
			if ob, ok := was[a]; ok && ob == b && !old.damaged && tookNew[a] == takesNew[a] {
				continue
			}
		} else {
			if id, err = m.takeBackendID(s); err != nil {
				return taken, err
			}
			taken = append(taken, id)
			e.backendIDs[a], e.cookies[a] = id, newCookie()
			if err := m.resetBackendStats(t, id); err != nil {
				return taken, err
			}
		}
		if err := t.Put(m.maps.Backends, id, backendValue(e.id, s.Frontend.Protocol, b, e.cookies[a], takesNew[a])); err != nil {
			return taken, err
		}
	}
	return taken, nil
}

// writeSlots is apply's phase 2: it writes e's slots (laid out already)
// that differ from old's.
func (m *Manager) writeSlots(t *kernel.Txn, old, e *entry) error {
	for i, id := range e.slots {
		if old != nil && !old.damaged && i < len(old.slots) && old.slots[i] == id {
			continue
		}
		if err := t.Put(m.maps.BackendSlots, slotKey(e.id, i), id); err != nil {
			return err
		}
	}
	return nil
}

// slotKey is the key of the i-th slot (counting from 0) of service svcID;
// the datapath counts slots from 1.
func slotKey(svcID uint32, i int) bpf.XdplaneSlotKey {
	return bpf.XdplaneSlotKey{SvcId: svcID, Slot: uint32(i + 1)}
}

// publish is apply's phase 3: the switch from old to e. What the new
// service entry refers to is written before it (a new Maglev table, the
// reverse NAT of a new service, new source ranges); what only the old one
// used goes after it (ranges, the virtual IP count, a Maglev table the
// algorithm no longer needs), so that no allowed client is refused on the
// way: the ranges flag goes up last and down first, with the entry.
func (m *Manager) publish(t *kernel.Txn, old, e *entry) error {
	s := e.svc
	f := s.Frontend
	if s.Algorithm == Maglev {
		if err := m.writeMaglev(t, old, e); err != nil {
			return err
		}
	}
	if old == nil {
		if err := t.Put(m.maps.Revnat, e.id, revnatValue(f)); err != nil {
			return err
		}
	}
	var oldRanges []netip.Prefix
	if old != nil {
		oldRanges = old.svc.SourceRanges
	}
	for _, p := range s.SourceRanges {
		if !slices.Contains(oldRanges, p) || old.damaged {
			if err := t.Put(m.maps.SourceRanges, rangeKey(e.id, p), uint8(1)); err != nil {
				return err
			}
		}
	}
	if err := t.Put(m.maps.Services, svcKey(f), svcValue(e)); err != nil {
		return err
	}
	for _, p := range oldRanges {
		if !slices.Contains(s.SourceRanges, p) {
			if err := t.Delete(m.maps.SourceRanges, rangeKey(e.id, p)); err != nil {
				return err
			}
		}
	}
	wasVIP := old != nil && old.svc.VirtualIP
	if s.VirtualIP != wasVIP {
		delta := 1
		if wasVIP {
			delta = -1
		}
		if err := m.addVIP(t, f.Address.Addr(), delta); err != nil {
			return err
		}
	}
	if old != nil && old.svc.Algorithm == Maglev && s.Algorithm != Maglev {
		if err := m.dropTable(t, old); err != nil {
			return err
		}
	}
	return nil
}

// trimSlots is apply's phase 4: it deletes old's slots beyond e's count,
// which the service entry no longer covers.
func (m *Manager) trimSlots(t *kernel.Txn, old, e *entry) error {
	if old == nil {
		return nil
	}
	for i := len(e.slots); i < len(old.slots); i++ {
		if err := t.Delete(m.maps.BackendSlots, slotKey(e.id, i)); err != nil {
			return err
		}
	}
	return nil
}

// dropBackends is apply's phase 5: it deletes old's backends that e does
// not keep, which no slot names any more.
func (m *Manager) dropBackends(t *kernel.Txn, old, e *entry) error {
	if old == nil {
		return nil
	}
	for a, id := range old.backendIDs {
		if _, kept := e.backendIDs[a]; kept {
			continue
		}
		if err := t.Delete(m.maps.Backends, id); err != nil {
			return err
		}
	}
	return nil
}

// adopt makes e the Manager's view of its service once apply has written
// it: the backend ids only old had are free again, and the slot count
// follows.
func (m *Manager) adopt(old, e *entry) {
	if old != nil {
		for a, id := range old.backendIDs {
			if _, kept := e.backendIDs[a]; !kept {
				m.beIDs.Release(id)
			}
		}
		m.slots -= len(old.slots)
	}
	m.slots += len(e.slots)
	m.services[e.svc.Frontend] = e
}

// remove deletes a service: its virtual IP count and its service entry
// first, so no new packet reaches the rest, then its slots, backends,
// reverse NAT entry, source ranges and Maglev table (which, in a Sync,
// goes at the end with the others: see dropTable).
func (m *Manager) remove(t *kernel.Txn, e *entry) error {
	if e.svc.VirtualIP {
		if err := m.addVIP(t, e.svc.Frontend.Address.Addr(), -1); err != nil {
			return err
		}
	}
	if err := t.Delete(m.maps.Services, svcKey(e.svc.Frontend)); err != nil {
		return err
	}
	for i := range e.slots {
		if err := t.Delete(m.maps.BackendSlots, slotKey(e.id, i)); err != nil {
			return err
		}
	}
	for _, id := range e.backendIDs {
		if err := t.Delete(m.maps.Backends, id); err != nil {
			return err
		}
	}
	if err := t.Delete(m.maps.Revnat, e.id); err != nil {
		return err
	}
	for _, p := range e.svc.SourceRanges {
		if err := t.Delete(m.maps.SourceRanges, rangeKey(e.id, p)); err != nil {
			return err
		}
	}
	if e.svc.Algorithm == Maglev {
		if err := m.dropTable(t, e); err != nil {
			return err
		}
	}
	for _, id := range e.backendIDs {
		m.beIDs.Release(id)
	}
	m.svcIDs.Release(e.id)
	m.slots -= len(e.slots)
	delete(m.services, e.svc.Frontend)
	return nil
}

// resetBackendStats zeroes the counters of a backend id about to be
// used, so a new backend does not inherit an old one's packets.
func (m *Manager) resetBackendStats(t *kernel.Txn, id uint32) error {
	stats := m.maps.BackendStats
	var prev []bpf.XdplaneCounter
	if err := stats.Lookup(id, &prev); err != nil {
		return fmt.Errorf("read counters of backend %d: %w", id, err)
	}
	if err := stats.Update(id, make([]bpf.XdplaneCounter, len(prev)), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset counters of backend %d: %w", id, err)
	}
	t.OnRollback(func() error { return stats.Update(id, prev, ebpf.UpdateAny) })
	return nil
}

// Service flags (enum svc_flags in bpf/include/xdplane.h).
const (
	// svcFlagLocalPolicy marks a service whose TrafficPolicy is Local.
	// Only user space reads it (to recover the policy); the kernel
	// follows the slots.
	svcFlagLocalPolicy = 1
	// svcFlagSourceRanges: new flows only from the service's ranges.
	svcFlagSourceRanges = 2
	// svcFlagDropNoBackend: drop, not reject, when no backend takes new
	// flows (see Service.dropsWithoutBackend).
	svcFlagDropNoBackend = 4
	// svcFlagVirtualIP: the frontend's address is in the vips map (only
	// user space reads the flag, to recover Service.VirtualIP).
	svcFlagVirtualIP = 8
)

// addVIP counts one more (delta 1) or one fewer (-1) service on a virtual
// IP, in the vips map and in m.vips. The in-memory count moves with the
// map write; a rolled-back call restores both (Sync's snapshot, or the
// undo of a single call below).
func (m *Manager) addVIP(t *kernel.Txn, a netip.Addr, delta int) error {
	n := int(m.vips[a]) + delta
	key := bpf.XdplaneVipKey{Addr: a.As16()}
	var err error
	if n <= 0 {
		err = t.Delete(m.maps.Vips, key)
	} else {
		err = t.Put(m.maps.Vips, key, uint32(n))
	}
	if err != nil {
		return err
	}
	prev, had := m.vips[a]
	if n <= 0 {
		delete(m.vips, a)
	} else {
		m.vips[a] = uint32(n)
	}
	t.OnRollback(func() error {
		if had {
			m.vips[a] = prev
		} else {
			delete(m.vips, a)
		}
		return nil
	})
	return nil
}

// loadVIPs counts the services on each virtual IP and makes the vips map
// say the same (a writer that died mid-update may have left it off).
func (m *Manager) loadVIPs() error {
	m.vips = make(map[netip.Addr]uint32)
	for _, e := range m.services {
		if e.svc.VirtualIP {
			m.vips[e.svc.Frontend.Address.Addr()]++
		}
	}
	stale, err := kernel.Keys(m.maps.Vips, func(k bpf.XdplaneVipKey, n uint32) bool {
		return m.vips[netip.AddrFrom16(k.Addr).Unmap()] != n
	})
	if err != nil {
		return err
	}
	errs := []error{kernel.DeleteAll(m.maps.Vips, stale)}
	for a, n := range m.vips {
		errs = append(errs, m.maps.Vips.Update(bpf.XdplaneVipKey{Addr: a.As16()}, n, ebpf.UpdateAny))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("repair virtual IPs: %w", err)
	}
	return nil
}

// rangeKey is the LPM key of a service's source prefix: the service id in
// network order, then the address, v4-mapped for IPv4.
func rangeKey(svcID uint32, p netip.Prefix) bpf.XdplaneSrcRangeKey {
	n := p.Bits()
	if p.Addr().Is4() {
		n += 96
	}
	return bpf.XdplaneSrcRangeKey{Prefixlen: uint32(32 + n), SvcId: kernel.Htonl(svcID), Addr: p.Addr().As16()}
}

// prefixOf reads a rangeKey back.
func prefixOf(k bpf.XdplaneSrcRangeKey) (uint32, netip.Prefix) {
	a, n := netip.AddrFrom16(k.Addr), int(k.Prefixlen)-32
	if a.Is4In6() && n >= 96 {
		a, n = a.Unmap(), n-96
	}
	return kernel.Ntohl(k.SvcId), netip.PrefixFrom(a, n)
}

// revnatValue is what replies of f's flows are rewritten to come from.
func revnatValue(f Frontend) bpf.XdplaneRevnatValue {
	return bpf.XdplaneRevnatValue{Addr: f.Address.Addr().As16(), Port: kernel.Htons(f.Address.Port())}
}

func svcValue(e *entry) bpf.XdplaneSvcValue {
	v := bpf.XdplaneSvcValue{
		Id:              e.id,
		Count:           uint16(len(e.slots)),
		Algorithm:       uint8(e.svc.Algorithm),
		AffinityTimeout: uint32(e.svc.SessionAffinity / time.Second),
	}
	if e.svc.TrafficPolicy == Local {
		v.Flags |= svcFlagLocalPolicy
	}
	if len(e.svc.SourceRanges) > 0 {
		v.Flags |= svcFlagSourceRanges
	}
	if e.svc.dropsWithoutBackend() {
		v.Flags |= svcFlagDropNoBackend
	}
	if e.svc.VirtualIP {
		v.Flags |= svcFlagVirtualIP
	}
	if e.svc.Algorithm == Maglev {
		v.MaglevSize = e.svc.MaglevTableSize
	}
	return v
}
