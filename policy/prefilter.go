package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// PrefilterChange says what SetPrefilter changed.
type PrefilterChange struct {
	Added, Removed int
}

// Prefilter lists the node-wide deny list: source prefixes that XDP drops
// on every interface it is attached to, before load balancing, sorted.
func Prefilter(dp *datapath.Datapath) ([]netip.Prefix, error) {
	var (
		k   bpf.XdplanePrefilterKey
		v   uint8
		out []netip.Prefix
	)
	it := kernel.Of(dp).Maps.Prefilter.Iterate()
	for it.Next(&k, &v) {
		if v != 0 { // 0: an exception for IPv4, not a listed prefix
			out = append(out, prefilterPrefix(k))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read prefilter: %w", err)
	}
	slices.SortFunc(out, comparePrefixes)
	return out, nil
}

// SetPrefilter makes prefixes, IPv4 and IPv6, the node-wide deny list,
// replacing the one before: new prefixes are written before old ones are
// deleted, so a prefix in both lists is never let through. A prefix is
// masked to its length (10.1.2.3/16 means 10.1.0.0/16); duplicates count
// once. On error the list is as it was.
//
// The list lives in the datapath, not in a Manager: it takes effect on
// every interface where xdplane is attached at XDP. Concurrent calls, in
// this process or others, take turns; the last one's list stands.
// IPv6 neighbour discovery from a listed source still passes: it stays on
// the link, and a listed neighbour may solicit for its link-mates.
func SetPrefilter(dp *datapath.Datapath, prefixes []netip.Prefix) (PrefilterChange, error) {
	want := make(map[bpf.XdplanePrefilterKey]uint8, len(prefixes)+1)
	for i, p := range prefixes {
		if err := validPrefix(fmt.Sprintf("prefilter[%d]", i), p); err != nil {
			return PrefilterChange{}, err
		}
		want[prefilterKey(p.Masked())] = 1
	}
	// The map keeps IPv4 as ::ffff:0:0/96, inside IPv6 prefixes up to
	// ::/80: unless 0.0.0.0/0 is listed, an entry of value 0 there keeps
	// IPv4 out of them.
	all4 := prefilterKey(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	if _, listed := want[all4]; !listed {
		for k := range want {
			if p := prefilterPrefix(k); p.Addr().Is6() && p.Contains(v4MappedZero) {
				want[all4] = 0
				break
			}
		}
	}
	limit := dp.Limits().MaxPrefilterPrefixes
	if len(want) > int(limit) {
		return PrefilterChange{}, overCapacity("prefilter", len(prefixes), fmt.Sprintf("above datapath.Limits.MaxPrefilterPrefixes, %d", limit))
	}

	// One writer at a time, across processes: the diff below must not
	// interleave with another's.
	unlock, err := kernel.Lock(dp.Dir(), "prefilter", true)
	if err != nil {
		return PrefilterChange{}, err
	}
	defer unlock()

	mp := kernel.Of(dp).Maps.Prefilter
	have := make(map[bpf.XdplanePrefilterKey]uint8)
	var (
		k bpf.XdplanePrefilterKey
		v uint8
	)
	it := mp.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return PrefilterChange{}, fmt.Errorf("read prefilter: %w", err)
	}
	var (
		put, del     []bpf.XdplanePrefilterKey
		vals         []uint8
		ch           PrefilterChange
		undoKeys     []bpf.XdplanePrefilterKey // entries put that were there before
		undoVals     []uint8
		fresh        []bpf.XdplanePrefilterKey // entries put that were not
		delVals      []uint8
		added, taken int
	)
	for k, v := range want {
		old, ok := have[k]
		switch {
		case !ok:
			fresh = append(fresh, k)
		case old != v:
			undoKeys, undoVals = append(undoKeys, k), append(undoVals, old)
		default:
			continue
		}
		put, vals = append(put, k), append(vals, v)
		if v == 1 {
			added++
		}
	}
	for k, v := range have {
		if _, ok := want[k]; !ok {
			del, delVals = append(del, k), append(delVals, v)
			if v == 1 {
				taken++
			}
		}
	}
	// Both lists live in the map at once for a moment.
	if len(have)+len(fresh) > int(limit) {
		return PrefilterChange{}, overCapacity("prefilter", len(prefixes), fmt.Sprintf("the old list (%d) and the new prefixes (%d) must fit together in datapath.Limits.MaxPrefilterPrefixes, %d", len(have), len(fresh), limit))
	}
	// New and changed entries first, so that a prefix on both lists is
	// never let through; then the old ones go.
	if err := kernel.PutAll(mp, put, vals); err != nil {
		// putAll took out what it wrote: put back the changed entries.
		return PrefilterChange{}, errors.Join(err, kernel.PutAll(mp, undoKeys, undoVals))
	}
	for i, k := range del {
		if err := mp.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			// Put back what was deleted and changed, take out what was
			// added.
			return PrefilterChange{}, errors.Join(fmt.Errorf("delete from prefilter: %w", err),
				kernel.PutAll(mp, del[:i], delVals[:i]), kernel.PutAll(mp, undoKeys, undoVals), kernel.DeleteAll(mp, fresh))
		}
	}
	ch.Added, ch.Removed = added, taken
	return ch, nil
}

func prefilterKey(p netip.Prefix) bpf.XdplanePrefilterKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.XdplanePrefilterKey{Prefixlen: uint32(bits), Addr: as16(p.Addr())}
}

func prefilterPrefix(k bpf.XdplanePrefilterKey) netip.Prefix {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return netip.PrefixFrom(a, bits)
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
