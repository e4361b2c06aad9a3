package prefilter

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/verr"
)

// Change says what Set changed.
type Change struct {
	Added, Removed int
}

// List returns the node-wide deny list: source prefixes that XDP drops on
// every interface it is attached to, before load balancing, sorted.
func List(dp *datapath.Datapath) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := kernel.Scan(kernel.Of(dp).Maps.Prefilter, func(k bpf.XdplanePrefilterKey, v uint8) error {
		if v != 0 { // 0: an exception for IPv4, not a listed prefix
			out = append(out, prefilterPrefix(k))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, comparePrefixes)
	return out, nil
}

// Set makes prefixes, IPv4 and IPv6, the node-wide deny list,
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
func Set(dp *datapath.Datapath, prefixes []netip.Prefix) (Change, error) {
	want := make(map[bpf.XdplanePrefilterKey]uint8, len(prefixes)+1)
	for i, p := range prefixes {
		if err := verr.Prefix(fmt.Sprintf("prefilter[%d]", i), p); err != nil {
			return Change{}, err
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
		return Change{}, verr.OverCapacity("prefilter", len(prefixes), fmt.Sprintf("above datapath.Limits.MaxPrefilterPrefixes, %d", limit))
	}

	// One writer at a time, across processes: the diff below must not
	// interleave with another's.
	unlock, err := kernel.Lock(dp.Dir(), kernel.LockPrefilter, true)
	if err != nil {
		return Change{}, err
	}
	defer unlock()

	mp := kernel.Of(dp).Maps.Prefilter
	have := make(map[bpf.XdplanePrefilterKey]uint8)
	err = kernel.Scan(mp, func(k bpf.XdplanePrefilterKey, v uint8) error { have[k] = v; return nil })
	if err != nil {
		return Change{}, err
	}
	var (
		fresh     []bpf.XdplanePrefilterKey // not in the map yet
		freshVals []uint8
		changed   []bpf.XdplanePrefilterKey // in the map with the other value
		ch        Change
	)
	for k, v := range want {
		old, ok := have[k]
		switch {
		case !ok:
			fresh, freshVals = append(fresh, k), append(freshVals, v)
		case old != v:
			changed = append(changed, k)
		default:
			continue
		}
		if v == 1 {
			ch.Added++
		}
	}
	var stale []bpf.XdplanePrefilterKey
	for k, v := range have {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
			if v == 1 {
				ch.Removed++
			}
		}
	}
	// Both lists live in the map at once for a moment.
	if len(have)+len(fresh) > int(limit) {
		return Change{}, verr.OverCapacity("prefilter", len(prefixes), fmt.Sprintf("the old list (%d) and the new prefixes (%d) must fit together in datapath.Limits.MaxPrefilterPrefixes, %d", len(have), len(fresh), limit))
	}
	// New and changed entries first, so that a prefix on both lists is
	// never let through; then the old ones go.
	var t kernel.Txn
	err = kernel.PutNew(&t, mp, fresh, freshVals)
	for _, k := range changed {
		if err == nil {
			err = t.Put(mp, k, want[k])
		}
	}
	for _, k := range stale {
		if err == nil {
			err = t.Delete(mp, k)
		}
	}
	if err != nil {
		err, _ = t.Rollback(err)
		return Change{}, err
	}
	return ch, nil
}

func prefilterKey(p netip.Prefix) bpf.XdplanePrefilterKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.XdplanePrefilterKey{Prefixlen: uint32(bits), Addr: p.Addr().As16()}
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

// v4MappedZero is ::ffff:0.0.0.0, where the map keeps IPv4.
var v4MappedZero = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff})
