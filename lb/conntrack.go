package lb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// ConntrackStats describe the load balancer's conntrack map. The counts
// are since the map was made; they survive restarts of the process.
type ConntrackStats struct {
	// Entries are the entries in use, two for most flows (one per
	// direction); Limit is the map's size, datapath.Limits.ConntrackSize.
	Entries, Limit int
	// Created counts the entries the datapath made.
	Created uint64
	// Reopened counts new flows that took over an entry of the same
	// 5-tuple: a connection over one that had closed or expired, or a
	// flow whose backend had left.
	Reopened uint64
	// Expired and Stale count the entries CollectConntrack removed:
	// idle past their timeout, or (Stale) of a backend or service that has
	// gone, or replies of a client port that has moved to another backend.
	Expired, Stale uint64
	// Evicted estimates the entries the kernel evicted, least recently
	// used first, to make room: Created less Entries, Expired and Stale.
	// The kernel does not count them; a count above zero means the map is
	// too small for the flows the node carries.
	Evicted uint64
}

// CollectResult is what one CollectConntrack pass did.
type CollectResult struct {
	// Expired and Stale are the entries this pass removed, by reason
	// (see ConntrackStats).
	Expired, Stale int
	// Stats are the map's statistics after the pass.
	Stats ConntrackStats
}

// gcLock is the named lock CollectConntrack holds for a pass: one
// collector at a time counts its removals.
const gcLock = kernel.LockConntrack

// orphanGrace is how long a reply entry whose flow has no forward entry
// naming its backend is kept: long enough for the datapath to put back a
// forward entry the LRU evicted from a live flow.
func orphanGrace(t kernel.CTTimeouts, proto uint8) time.Duration {
	if proto == unix.IPPROTO_UDP {
		return t.UDP
	}
	return t.TCPOpening
}

// CollectConntrack makes one pass of the conntrack garbage collector: it
// removes the entries of flows idle past their timeout
// (datapath.ConntrackTimeouts), of flows whose backend or service has
// gone (which the datapath would balance afresh anyway: kube-proxy clears
// such UDP entries so that clients' next datagrams reach a live backend),
// and reply entries no flow uses any more. The datapath already ignores
// an expired entry when a new flow comes; the collector makes the room
// such entries take free for live flows.
//
// An entry the datapath refreshed since the pass read it is kept. Run it
// every few seconds to minutes (RunConntrackCollector). It needs a datapath opened with programs (for their
// timeouts), and returns an error wrapping ErrBusy while another process
// runs a pass.
func CollectConntrack(dp *datapath.Datapath) (CollectResult, error) {
	k := kernel.Of(dp)
	if k.Programs == nil {
		return CollectResult{}, fmt.Errorf("collect conntrack: %w", datapath.ErrNoPrograms)
	}
	release, err := kernel.Lock(k.Dir, gcLock, false)
	if err != nil {
		return CollectResult{}, fmt.Errorf("collect conntrack: %w", err)
	}
	defer release()

	c := collector{maps: k.Maps, timeouts: k.Timeouts}
	if err := c.read(); err != nil {
		return CollectResult{}, err
	}
	c.judge(monotonicNow())
	res, err := c.remove()
	if err != nil {
		return res, err
	}
	if err := addCTStats(k.Maps.CtStats, map[bpf.XdplaneCtStat]uint64{
		bpf.XdplaneCtStatCT_STAT_EXPIRED: uint64(res.Expired),
		bpf.XdplaneCtStatCT_STAT_STALE:   uint64(res.Stale),
	}); err != nil {
		return res, err
	}
	// The entries the pass read, less those it removed: the datapath
	// adds and the LRU evicts meanwhile, as they do during any count.
	res.Stats, err = conntrackStats(k.Maps, len(c.entries)-res.Expired-res.Stale)
	return res, err
}

// ReadConntrackStats reads the conntrack map's statistics; it counts the
// entries in use, which takes a pass over the map.
func ReadConntrackStats(dp *datapath.Datapath) (ConntrackStats, error) {
	maps := kernel.Of(dp).Maps
	entries := 0
	keys := make([]bpf.XdplaneCtKey, 4096)
	vals := make([]bpf.XdplaneCtValue, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := maps.Conntrack.BatchLookup(&cursor, keys, vals, nil)
		entries += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return ConntrackStats{}, fmt.Errorf("count conntrack entries: %w", err)
		}
	}
	return conntrackStats(maps, entries)
}

// conntrackStats completes the statistics of a map holding entries.
func conntrackStats(maps *bpf.XdplaneMaps, entries int) (ConntrackStats, error) {
	st := ConntrackStats{Entries: entries, Limit: int(maps.Conntrack.MaxEntries())}
	counts, err := readCTStats(maps.CtStats)
	if err != nil {
		return st, err
	}
	st.Created, st.Reopened = counts[bpf.XdplaneCtStatCT_STAT_CREATED], counts[bpf.XdplaneCtStatCT_STAT_REOPENED]
	st.Expired, st.Stale = counts[bpf.XdplaneCtStatCT_STAT_EXPIRED], counts[bpf.XdplaneCtStatCT_STAT_STALE]
	if gone := st.Expired + st.Stale + uint64(st.Entries); st.Created > gone {
		st.Evicted = st.Created - gone
	}
	return st, nil
}

// RunConntrackCollector calls CollectConntrack every interval until ctx
// ends, and report with each pass's result; a pass another process runs
// meanwhile (ErrBusy) is skipped without a report. Both example binaries
// run it, every 30 seconds.
func RunConntrackCollector(ctx context.Context, dp *datapath.Datapath, every time.Duration, report func(CollectResult, error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := CollectConntrack(dp)
		if !errors.Is(err, ErrBusy) {
			report(res, err)
		}
	}
}

// collector is one pass: what it read, and what it judged removable.
type collector struct {
	maps     *bpf.XdplaneMaps
	timeouts kernel.CTTimeouts

	entries  map[bpf.XdplaneCtKey]bpf.XdplaneCtValue
	backends map[uint32]bpf.XdplaneBackend
	revnat   map[uint32]bpf.XdplaneRevnatValue

	// doomed holds the entries to remove, with their reason and, for a
	// reply entry removed with its flow, the forward key it follows.
	doomed map[bpf.XdplaneCtKey]verdict
}

type verdict struct {
	stale  bool
	follow *bpf.XdplaneCtKey
}

func (c *collector) read() (err error) {
	if c.entries, err = kernel.ReadAll[bpf.XdplaneCtKey, bpf.XdplaneCtValue](c.maps.Conntrack); err != nil {
		return err
	}
	if c.backends, err = kernel.ReadAll[uint32, bpf.XdplaneBackend](c.maps.Backends); err != nil {
		return err
	}
	c.revnat, err = kernel.ReadAll[uint32, bpf.XdplaneRevnatValue](c.maps.Revnat)
	return err
}

// idle is how long an entry last seen at lastSeen has been idle at now.
func idle(now, lastSeen uint64) time.Duration {
	if lastSeen >= now {
		return 0
	}
	return time.Duration(now - lastSeen)
}

// forwardVerdict judges a forward entry: expired, stale, or kept.
func (c *collector) forwardVerdict(k bpf.XdplaneCtKey, v bpf.XdplaneCtValue, now uint64) (remove, stale bool) {
	if idle(now, v.LastSeen) > c.timeouts.Timeout(&v, k.Proto) {
		return true, false
	}
	be, ok := c.backends[v.BackendId]
	if !ok || be.SvcId != v.SvcId || be.Cookie != v.BackendCookie {
		return true, true
	}
	return false, false
}

// forwardOf is the key of the forward entry a reply entry answers for, if
// its service still has a reverse NAT entry.
func (c *collector) forwardOf(k bpf.XdplaneCtKey, v bpf.XdplaneCtValue) (bpf.XdplaneCtKey, bool) {
	rn, ok := c.revnat[v.SvcId]
	if !ok {
		return bpf.XdplaneCtKey{}, false
	}
	return bpf.XdplaneCtKey{Saddr: k.Daddr, Daddr: rn.Addr, Sport: k.Dport, Dport: rn.Port, Proto: k.Proto, Dir: 0}, true
}

func (c *collector) judge(now uint64) {
	c.doomed = map[bpf.XdplaneCtKey]verdict{}
	for k, v := range c.entries {
		if k.Dir != 0 {
			continue
		}
		if rm, stale := c.forwardVerdict(k, v, now); rm {
			c.doomed[k] = verdict{stale: stale}
		}
	}
	for k, v := range c.entries {
		if k.Dir == 0 {
			continue
		}
		fk, ok := c.forwardOf(k, v)
		if !ok {
			c.doomed[k] = verdict{stale: true} // the service has gone
			continue
		}
		fv, ok := c.entries[fk]
		if ok && fv.BackendId == v.BackendId && fv.BackendCookie == v.BackendCookie {
			if fvd, gone := c.doomed[fk]; gone {
				c.doomed[k] = verdict{stale: fvd.stale, follow: &fk}
			}
			continue
		}
		// No flow names this backend for the client's port: it moved to
		// another backend, or its forward entry was evicted.
		if idle(now, v.LastSeen) > orphanGrace(c.timeouts, k.Proto) {
			c.doomed[k] = verdict{stale: true}
		}
	}
}

// remove deletes what judge chose, forward entries first, each read again
// just before: one the datapath refreshed in the meantime is kept, and so
// is the reply entry that follows it.
func (c *collector) remove() (CollectResult, error) {
	var res CollectResult
	removed := map[bpf.XdplaneCtKey]bool{}
	count := func(vd verdict) {
		if vd.stale {
			res.Stale++
		} else {
			res.Expired++
		}
	}
	for _, dir := range []uint8{0, 1} {
		for k, vd := range c.doomed {
			if k.Dir != dir {
				continue
			}
			if vd.follow != nil && !removed[*vd.follow] {
				continue
			}
			var v bpf.XdplaneCtValue
			if err := c.maps.Conntrack.Lookup(k, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			} else if err != nil {
				return res, fmt.Errorf("collect conntrack: %w", err)
			}
			if v.LastSeen != c.entries[k].LastSeen || v.BackendId != c.entries[k].BackendId {
				continue // refreshed, or a new flow, since the pass read it
			}
			err := c.maps.Conntrack.Delete(k)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			if err != nil {
				return res, fmt.Errorf("collect conntrack: %w", err)
			}
			removed[k] = true
			count(vd)
		}
	}
	return res, nil
}

// monotonicNow is bpf_ktime_get_ns's clock, CLOCK_MONOTONIC, in
// nanoseconds.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("CLOCK_MONOTONIC: %v", err)) // cannot fail on Linux
	}
	return uint64(ts.Nano())
}

// readCTStats sums ct_stats over the CPUs.
func readCTStats(m *ebpf.Map) (map[bpf.XdplaneCtStat]uint64, error) {
	out := map[bpf.XdplaneCtStat]uint64{}
	for k := range bpf.XdplaneCtStatCT_STAT_MAX {
		var per []uint64
		if err := m.Lookup(k, &per); err != nil {
			return nil, fmt.Errorf("read conntrack counters: %w", err)
		}
		for _, n := range per {
			out[k] += n
		}
	}
	return out, nil
}

// addCTStats adds to user space's counters in ct_stats, on CPU 0's copy,
// which no program writes. The caller holds gcLock.
func addCTStats(m *ebpf.Map, add map[bpf.XdplaneCtStat]uint64) error {
	for k, n := range add {
		if n == 0 {
			continue
		}
		var per []uint64
		if err := m.Lookup(k, &per); err != nil {
			return fmt.Errorf("read conntrack counters: %w", err)
		}
		per[0] += n
		if err := m.Update(k, per, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("write conntrack counters: %w", err)
		}
	}
	return nil
}
