package lb

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/kernel"
)

// How Maglev tables get into the kernel.
//
// Each Maglev service has its table in an inner array map of its own,
// under the service's id in the maglev map (a hash of maps). The kernel
// waits for an RCU grace period (synchronize_rcu, about 10 ms here) after
// every update or delete of a map of maps that succeeds, once per system
// call: a batch update or delete waits once for the whole batch. Writes to
// an inner map's entries wait for nothing. So:
//
//   - new tables (a new service, a new size) are created and filled, then
//     put into the maglev map together, maglevBatch at a time: one grace
//     period per batch, and at most maglevBatch table descriptors open at
//     once. Each descriptor is closed as soon as its table is in (the maglev
//     map holds the table from then on);
//   - a table whose size stays is rewritten in place: the entries that
//     differ, and none if none does; no grace period;
//   - the tables of the services a Sync removes (or moves to Random) go in
//     one batch delete at its end, once nothing else can fail.
//
// A rollback that must bring back a deleted or replaced table (a failed
// Upsert or Delete, a table that changed size) builds it again from the
// service it belonged to (the Manager's entry, which a failed call
// restores), rather than holding the old table's descriptor until the
// call ends: a call that replaces 20,000 tables would otherwise hold
// 20,000 descriptors.
//
// An in-place rewrite lets a packet meet a table half old and half new.
// That is safe: a lookup reads one entry, which names either the backend
// the old table gave that entry or the one the new table gives it, and
// both are the service's backends while the rewrite runs (apply deletes a
// removed backend only after the service entry has switched, and the
// datapath checks that the backend it picked still belongs to the
// service, falling back to no backend, not a wrong one). A new flow so
// lands where either the old or the new table sends it, which is all an
// atomic swap promises too; only the instant of the switch differs from
// entry to entry.

// maglevBatch is how many new tables are put into the maglev map with one
// batch update.
const maglevBatch = 256

// maglevRun is the most tables of one layout a worker of buildTables
// builds in a row, so that many services with the same backends still
// spread over the workers.
const maglevRun = 16

// maglevIDs is e's table as the datapath holds it: entry i names the
// backend id that flows hashing to i go to, 0 for none.
func maglevIDs(e *entry) []uint32 {
	return maglevIDsOf(e, maglevTable(e.svc.eligible(), e.svc.MaglevTableSize))
}

// maglevIDsOf is e's table as the datapath holds it, given its layout
// (maglevTable of e's eligible backends).
func maglevIDsOf(e *entry, layout []int32) []uint32 {
	eligible := e.svc.eligible()
	byIndex := make([]uint32, len(eligible))
	for i, b := range eligible {
		byIndex[i] = e.backendIDs[b.Address]
	}
	ids := make([]uint32, len(layout))
	for i, b := range layout {
		if b >= 0 {
			ids[i] = byIndex[b]
		}
	}
	return ids
}

// layoutKey is what e's table layout depends on: its size and the
// addresses and weights of the backends that take new flows, in order.
// Services with the same key have the same layout; their tables still
// differ, each naming its own service's backend ids.
func layoutKey(e *entry) string {
	eligible := e.svc.eligible()
	b := make([]byte, 4, 4+20*len(eligible))
	binary.LittleEndian.PutUint32(b, e.svc.MaglevTableSize)
	for _, be := range eligible {
		b = be.Address.Addr().AppendTo(b) // AppendTo never fails
		b = binary.LittleEndian.AppendUint16(b, be.Address.Port())
		b = binary.LittleEndian.AppendUint16(b, be.weight())
	}
	return string(b)
}

// tableKeys is the keys of a table of m entries, 0 to m-1.
func tableKeys(m uint32) []uint32 {
	keys := make([]uint32, m)
	for i := range keys {
		keys[i] = uint32(i)
	}
	return keys
}

// newMaglevMap creates the inner map of a table of e, filled with ids
// (maglevIDs of e): through a mapping of its memory if mmapable (the
// template of the maglev map says which), else at keys (tableKeys of its
// size, which the kernel only reads) by a batch update.
func newMaglevMap(e *entry, ids, keys []uint32, mmapable bool) (*ebpf.Map, error) {
	s := e.svc
	spec := &ebpf.MapSpec{
		Name:       "maglev_table",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: s.MaglevTableSize,
		Flags:      unix.BPF_F_INNER_MAP,
	}
	if mmapable {
		spec.Flags |= unix.BPF_F_MMAPABLE
	}
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create the Maglev table of %s: %w", s.Frontend, openFilesError(err))
	}
	if mmapable {
		err = fillMapped(inner, ids)
	} else {
		_, err = inner.BatchUpdate(keys, ids, nil)
	}
	if err != nil {
		inner.Close()
		return nil, fmt.Errorf("fill the Maglev table of %s: %w", s.Frontend, err)
	}
	return inner, nil
}

// fillMapped writes ids into the mmapable array in through a mapping of
// its memory, unmapped again at once (cilium/ebpf's Map.Memory keeps its
// mapping, and with it the map, until the garbage collector runs). An
// array lays its elements out 8 bytes apart (round_up(value_size, 8)):
// entry i is at offset 8i, in the host's byte order, as the datapath
// reads it.
func fillMapped(in *ebpf.Map, ids []uint32) error {
	size := (8*len(ids) + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	b, err := unix.Mmap(in.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the table's memory: %w", openFilesError(err))
	}
	for i, id := range ids {
		binary.NativeEndian.PutUint32(b[8*i:], id)
	}
	return unix.Munmap(b)
}

// mmapableTables reports whether the maglev map takes mmapable tables:
// those of a datapath pinned before its template had BPF_F_MMAPABLE take
// only tables without, as the kernel requires an inner map to match the
// template's flags. It puts a table of one entry at a key no service has,
// and takes it out again.
func mmapableTables(outer *ebpf.Map) bool {
	const probeKey = uint32(math.MaxUint32) // service ids are far below
	in, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1,
		Flags: unix.BPF_F_INNER_MAP | unix.BPF_F_MMAPABLE})
	if err != nil {
		return false
	}
	defer in.Close()
	err = outer.Update(probeKey, uint32(in.FD()), ebpf.UpdateAny)
	if errors.Is(err, unix.EINVAL) {
		return false
	}
	outer.Delete(probeKey)
	// Any other error (a full map, E2BIG) says nothing of the template:
	// this version's template, which made the map unless it is older.
	return true
}

// buildTables computes, creates and fills the tables of es on up to
// workers goroutines: ins[i] is es[i]'s, or nil and errs[i] says why.
// A goroutine takes a run of up to maglevRun tables of one layout (es
// sorted by layout brings them together: a Kubernetes service's cluster
// IP, node port and external addresses have the same backends) and
// computes the layout once for the run. keys holds tableKeys for every
// size in es.
func buildTables(es []*entry, layouts []string, keys map[uint32][]uint32, workers int, mmapable bool) (ins []*ebpf.Map, errs []error) {
	ins, errs = make([]*ebpf.Map, len(es)), make([]error, len(es))
	var runs []int // start of each run, then len(es)
	for i := range es {
		if i == 0 || layouts[i] != layouts[i-1] || i-runs[len(runs)-1] == maglevRun {
			runs = append(runs, i)
		}
	}
	runs = append(runs, len(es))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(workers, len(runs)-1) {
		wg.Go(func() {
			for r := int(next.Add(1)) - 1; r < len(runs)-1; r = int(next.Add(1)) - 1 {
				var layout []int32
				for i := runs[r]; i < runs[r+1]; i++ {
					e := es[i]
					if layout == nil {
						layout = maglevTable(e.svc.eligible(), e.svc.MaglevTableSize)
					}
					ins[i], errs[i] = newMaglevMap(e, maglevIDsOf(e, layout), keys[e.svc.MaglevTableSize], mmapable)
				}
			}
		})
	}
	wg.Wait()
	return ins, errs
}

// openFilesError makes an error of a call that opens a descriptor say so
// when the process has run out of them. cilium/ebpf answers a failed
// BPF_F_INNER_MAP creation with a feature probe, which fails the same way
// and then claims that inner maps are not supported (and remembers it, for
// the error of every later failure); the process being at its limit is
// the truth, which EMFILE and the limit tell instead.
func openFilesError(err error) error {
	emfile := errors.Is(err, unix.EMFILE)
	if !emfile && !(errors.Is(err, ebpf.ErrNotSupported) && outOfFiles()) {
		return err
	}
	limit := "unknown"
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		limit = fmt.Sprint(lim.Cur)
	}
	if !emfile {
		err = unix.EMFILE
	}
	return fmt.Errorf("%w: the process has as many files open as RLIMIT_NOFILE allows (%s); raise the limit (ulimit -n) or close files",
		err, limit)
}

// outOfFiles reports whether the process cannot open one more file.
func outOfFiles() bool {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return errors.Is(err, unix.EMFILE)
}

// putNewTables writes the tables of es, whose keys in the maglev map hold
// nothing. It builds them (buildTables, on GOMAXPROCS goroutines)
// maglevBatch at a time, and puts each round into the maglev map with one
// batch update while the next round is built: the update's wait for a
// grace period overlaps the work. Each round's descriptors are closed
// once its tables are in, so at most two rounds' are open.
//
// A table that fails for want of a descriptor is built again in the next
// round, once the open tables are in and closed; only a table that cannot
// be opened with no other open is an error. Whether a failure was for
// want of a descriptor is only sure with nothing else opening or closing
// files (see openFilesError), so a round that opens nothing while no
// other is open is followed by one table built alone, whose error is the
// answer. Undoing it deletes the tables.
func (m *Manager) putNewTables(t *kernel.Txn, es []*entry) error {
	if len(es) == 0 {
		return nil
	}
	type job struct {
		e      *entry
		layout string
	}
	pending := make([]job, len(es))
	keys := map[uint32][]uint32{}
	for i, e := range es {
		pending[i] = job{e, layoutKey(e)}
		if keys[e.svc.MaglevTableSize] == nil {
			keys[e.svc.MaglevTableSize] = tableKeys(e.svc.MaglevTableSize)
		}
	}
	slices.SortStableFunc(pending, func(a, b job) int { return strings.Compare(a.layout, b.layout) })

	var flushing chan error // the previous round's batch update, if under way
	wait := func() error {
		if flushing == nil {
			return nil
		}
		err := <-flushing
		flushing = nil
		return err
	}
	alone := false // build one table, with nothing else open
	for len(pending) > 0 {
		n, workers := maglevBatch, runtime.GOMAXPROCS(0)
		if alone {
			n, workers = 1, 1
		}
		round := pending[:min(n, len(pending))]
		others := flushing != nil
		roundEs, roundLayouts := make([]*entry, len(round)), make([]string, len(round))
		for i, j := range round {
			roundEs[i], roundLayouts[i] = j.e, j.layout
		}
		ins, errs := buildTables(roundEs, roundLayouts, keys, workers, m.mmapable)
		flushErr := wait()
		var (
			built    []*ebpf.Map
			ids, fds []uint32
			retry    []job
			retryErr error
			failed   error
		)
		for i, j := range round {
			switch err := errs[i]; {
			case err == nil:
				built, ids, fds = append(built, ins[i]), append(ids, j.e.id), append(fds, uint32(ins[i].FD()))
			case errors.Is(err, unix.EMFILE) || errors.Is(err, ebpf.ErrNotSupported):
				retry = append(retry, j)
				if retryErr == nil {
					retryErr = err
				}
			case failed == nil:
				failed = err
			}
		}
		if err := cmp.Or(flushErr, failed); err != nil || (alone && retryErr != nil) {
			for _, in := range built {
				in.Close()
			}
			return cmp.Or(err, retryErr)
		}
		alone = len(built) == 0 && !others && retryErr != nil
		pending = append(retry, pending[len(round):]...)
		if len(built) == 0 {
			continue
		}
		done := make(chan error, 1)
		flushing = done
		go func() {
			defer func() {
				for _, in := range built {
					in.Close()
				}
			}()
			m.reuse(t, ids...)
			// A map of maps takes an inner map's descriptor as the value.
			done <- kernel.PutNew(t, m.maps.Maglev, ids, fds)
		}()
	}
	return wait()
}

// restoreTables puts back the tables of es, after a rollback has put es
// back as the services they were: built again, maglevBatch at a time.
func (m *Manager) restoreTables(es []*entry) error {
	var t kernel.Txn
	return m.putNewTables(&t, es)
}

// dropTable deletes e's table, e having left the Maglev algorithm or the
// datapath. During a Sync the table stays until the Sync's end
// (flushDrops): no packet reads a table whose service entry no longer
// names it, and a Sync that fails later then has nothing to rebuild,
// which would take descriptors that may be what it ran out of.
func (m *Manager) dropTable(t *kernel.Txn, e *entry) error {
	if m.drops != nil {
		m.drops[e.id] = e
		return nil
	}
	return m.dropTables(t, []*entry{e})
}

// flushDrops deletes the tables dropTable kept for the end of a Sync,
// with one batch delete.
func (m *Manager) flushDrops(t *kernel.Txn) error {
	es := slices.Collect(maps.Values(m.drops))
	clear(m.drops)
	return m.dropTables(t, es)
}

// reuse is called before a new table is written under id: if a table this
// Sync drops is there (a removed service's id went to a new service), the
// new one replaces it, and undoing the write must bring it back.
func (m *Manager) reuse(t *kernel.Txn, ids ...uint32) {
	var back []*entry
	for _, id := range ids {
		if e := m.drops[id]; e != nil {
			back = append(back, e)
			delete(m.drops, id)
		}
	}
	if len(back) > 0 {
		t.OnRollback(func() error { return m.restoreTables(back) })
	}
}

// dropTables deletes the tables of es with one batch delete. Undoing it
// builds them again.
func (m *Manager) dropTables(t *kernel.Txn, es []*entry) error {
	if len(es) == 0 {
		return nil
	}
	keys := make([]uint32, len(es))
	for i, e := range es {
		keys[i] = e.id
	}
	t.OnRollback(func() error { return m.restoreTables(es) })
	return kernel.DeleteAll(m.maps.Maglev, keys)
}

// writeMaglev gives e its table, old being what the service was (nil if
// new): rewritten in place when old had a table of the same size, else a
// new one.
func (m *Manager) writeMaglev(t *kernel.Txn, old, e *entry) error {
	if old != nil && old.svc.Algorithm == Maglev && old.svc.MaglevTableSize == e.svc.MaglevTableSize {
		done, err := m.rewriteTable(t, e)
		if err != nil || done {
			return err
		}
	}
	return m.replaceTable(t, old, e)
}

// replaceTable puts a new table for e into the maglev map, over the one
// old had if any.
func (m *Manager) replaceTable(t *kernel.Txn, old, e *entry) error {
	in, err := newMaglevMap(e, maglevIDs(e), tableKeys(e.svc.MaglevTableSize), m.mmapable)
	if err != nil {
		return err
	}
	defer in.Close()
	if old == nil || old.svc.Algorithm != Maglev {
		m.reuse(t, e.id)
	}
	if err := m.maps.Maglev.Update(e.id, uint32(in.FD()), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("put the Maglev table of %s: %w", e.svc.Frontend, err)
	}
	if old != nil && old.svc.Algorithm == Maglev {
		t.OnRollback(func() error { return m.restoreTables([]*entry{old}) })
	} else {
		id := e.id
		t.OnRollback(func() error { return kernel.IgnoreMissing(m.maps.Maglev.Delete(id)) })
	}
	return nil
}

// rewriteTable writes e's table over the one the datapath holds for e's
// id, entry by entry, changing only the entries that differ. It reports
// false, having written nothing, when there is no table of e's size to
// rewrite.
func (m *Manager) rewriteTable(t *kernel.Txn, e *entry) (bool, error) {
	f := e.svc.Frontend
	in, err := m.openTable(e.id, e.svc.MaglevTableSize)
	if in == nil || err != nil {
		return false, err
	}
	defer in.Close()
	cur, err := readTable(in)
	if err != nil {
		return false, fmt.Errorf("read the Maglev table of %s: %w", f, err)
	}
	var keys, vals, prev []uint32
	for i, id := range maglevIDs(e) {
		if cur[i] != id {
			keys = append(keys, uint32(i))
			vals = append(vals, id)
			prev = append(prev, cur[i])
		}
	}
	if len(keys) == 0 {
		return true, nil
	}
	id, size := e.id, e.svc.MaglevTableSize
	t.OnRollback(func() error {
		in, err := m.openTable(id, size)
		if in == nil || err != nil {
			return err
		}
		defer in.Close()
		_, err = in.BatchUpdate(keys, prev, nil)
		return err
	})
	if _, err := in.BatchUpdate(keys, vals, nil); err != nil {
		return false, fmt.Errorf("rewrite %d entries of the Maglev table of %s: %w", len(keys), f, err)
	}
	return true, nil
}

// openTable opens the table of service id, if there is one of size
// entries; nil otherwise. The lookup gives the inner map's ID, and
// opening a map by ID needs CAP_SYS_ADMIN: without it, also nil, and the
// caller replaces the table instead of rewriting it (one grace period
// more, the same result).
func (m *Manager) openTable(id, size uint32) (*ebpf.Map, error) {
	var in *ebpf.Map
	err := m.maps.Maglev.Lookup(id, &in)
	if errors.Is(err, ebpf.ErrKeyNotExist) || errors.Is(err, unix.EPERM) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the Maglev table of service %d: %w", id, openFilesError(err))
	}
	if in.MaxEntries() != size {
		in.Close()
		return nil, nil
	}
	return in, nil
}

// readTable reads every entry of a table.
func readTable(in *ebpf.Map) ([]uint32, error) {
	n := in.MaxEntries()
	out := make([]uint32, n)
	keys := make([]uint32, n)
	vals := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	for read := uint32(0); read < n; {
		c, err := in.BatchLookup(&cursor, keys, vals, nil)
		for i := range c {
			if keys[i] < n {
				out[keys[i]] = vals[i]
			}
		}
		read += uint32(c)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, err
		}
		if c == 0 {
			break
		}
	}
	return out, nil
}
