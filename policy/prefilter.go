package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/bpf"
	"github.com/xdplane/xdplane/datapath"
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
	it := dp.Maps().Prefilter.Iterate()
	for it.Next(&k, &v) {
		out = append(out, prefilterPrefix(k))
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
	want := make(map[bpf.XdplanePrefilterKey]bool, len(prefixes))
	for i, p := range prefixes {
		if err := validPrefix(fmt.Sprintf("prefilter[%d]", i), p); err != nil {
			return PrefilterChange{}, err
		}
		want[prefilterKey(p.Masked())] = true
	}
	limit := dp.Limits().MaxPrefilterPrefixes
	if len(want) > int(limit) {
		return PrefilterChange{}, overCapacity("prefilter", len(want), fmt.Sprintf("above datapath.Limits.MaxPrefilterPrefixes, %d", limit))
	}

	// One writer at a time, across processes: the diff below must not
	// interleave with another's.
	unlock, err := dp.Lock("prefilter", true)
	if err != nil {
		return PrefilterChange{}, err
	}
	defer unlock()

	mp := dp.Maps().Prefilter
	have := make(map[bpf.XdplanePrefilterKey]bool)
	var (
		k bpf.XdplanePrefilterKey
		v uint8
	)
	it := mp.Iterate()
	for it.Next(&k, &v) {
		have[k] = true
	}
	if err := it.Err(); err != nil {
		return PrefilterChange{}, fmt.Errorf("read prefilter: %w", err)
	}
	var add, del []bpf.XdplanePrefilterKey
	for k := range want {
		if !have[k] {
			add = append(add, k)
		}
	}
	for k := range have {
		if !want[k] {
			del = append(del, k)
		}
	}
	// Both lists live in the map at once for a moment.
	if len(have)+len(add) > int(limit) {
		return PrefilterChange{}, overCapacity("prefilter", len(want), fmt.Sprintf("the old list (%d) and the new prefixes (%d) must fit together in datapath.Limits.MaxPrefilterPrefixes, %d", len(have), len(add), limit))
	}
	ones := make([]uint8, len(add))
	for i := range ones {
		ones[i] = 1
	}
	if err := putAll(mp, add, ones); err != nil {
		return PrefilterChange{}, err
	}
	for i, k := range del {
		if err := mp.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			// Put back what was deleted, take out what was added.
			back := make([]uint8, i)
			for j := range back {
				back[j] = 1
			}
			return PrefilterChange{}, errors.Join(fmt.Errorf("delete from prefilter: %w", err),
				putAll(mp, del[:i], back), deleteAll(mp, add))
		}
	}
	return PrefilterChange{Added: len(add), Removed: len(del)}, nil
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
