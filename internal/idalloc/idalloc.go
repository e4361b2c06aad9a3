package idalloc

import "maps"

// Alloc hands out ids 1..max, each at most once until released. It cycles
// through the range rather than reusing the lowest free id, so that a
// released id is not handed out again soon: datapath state keyed by it
// (conntrack, counters) has time to go. Not safe for concurrent use.
type Alloc struct {
	max  uint32
	next uint32
	used map[uint32]bool
}

// New returns an allocator of ids 1..max.
func New(max uint32) *Alloc {
	return &Alloc{max: max, next: 1, used: make(map[uint32]bool)}
}

// InUse is how many ids are taken.
func (a *Alloc) InUse() int { return len(a.used) }

// Take marks id as used: an id found in the kernel's maps.
func (a *Alloc) Take(id uint32) {
	a.used[id] = true
	if id >= a.next {
		a.next = id%a.max + 1
	}
}

// Get returns a free id, or false when all max are taken.
func (a *Alloc) Get() (uint32, bool) {
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

// Release frees id.
func (a *Alloc) Release(id uint32) { delete(a.used, id) }

// Clone returns an independent copy, for a caller that may have to go back
// to this state.
func (a *Alloc) Clone() *Alloc {
	c := *a
	c.used = maps.Clone(a.used)
	return &c
}
