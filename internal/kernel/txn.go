package kernel

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Txn applies map writes in order and remembers how to undo each, so that
// a change the kernel refuses half-way is rolled back to the state before
// it. The zero Txn is ready to use: write, and Rollback if a write fails.
type Txn struct {
	undo []func() error
}

// OnRollback adds an undo step of the caller's: for a write the other
// methods do not make (a per-CPU reset), or for state kept beside the
// maps.
func (t *Txn) OnRollback(undo func() error) { t.undo = append(t.undo, undo) }

// Rollback undoes every write, newest first. Its error, if any, joins
// cause, and clean is false: the maps may then hold part of the change.
func (t *Txn) Rollback(cause error) (err error, clean bool) {
	var errs []error
	for i := len(t.undo) - 1; i >= 0; i-- {
		if err := t.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	t.undo = nil
	if len(errs) > 0 {
		return fmt.Errorf("%w (rollback also failed: %w)", cause, errors.Join(errs...)), false
	}
	return cause, true
}

// Put writes key, remembering what was there.
func (t *Txn) Put(m *ebpf.Map, key, value any) error {
	var prev []byte
	err := m.Lookup(key, &prev)
	switch {
	case err == nil:
		t.undo = append(t.undo, func() error { return m.Update(key, prev, ebpf.UpdateAny) })
	case errors.Is(err, ebpf.ErrKeyNotExist):
		t.undo = append(t.undo, func() error { return IgnoreMissing(m.Delete(key)) })
	default:
		return fmt.Errorf("read %s: %w", m, err)
	}
	if err := m.Update(key, value, ebpf.UpdateAny); err != nil {
		t.undo = t.undo[:len(t.undo)-1]
		return fmt.Errorf("write %s: %w", m, err)
	}
	return nil
}

// Delete deletes key, remembering what was there; a missing key is no
// error.
func (t *Txn) Delete(m *ebpf.Map, key any) error {
	var prev []byte
	if err := m.Lookup(key, &prev); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	if err := IgnoreMissing(m.Delete(key)); err != nil {
		return fmt.Errorf("delete from %s: %w", m, err)
	}
	t.undo = append(t.undo, func() error { return m.Update(key, prev, ebpf.UpdateAny) })
	return nil
}

// PutNew writes entries whose keys the caller knows to be absent, with
// one batch update where the kernel has batches (one update each where it
// has not); undoing it deletes what it wrote. A batch update takes no
// BPF_NOEXIST, hence the caller's promise.
func PutNew[K, V any](t *Txn, m *ebpf.Map, keys []K, values []V) error {
	if len(keys) == 0 {
		return nil
	}
	n, err := m.BatchUpdate(keys, values, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		for n = 0; n < len(keys); n++ {
			if err = m.Update(keys[n], values[n], ebpf.UpdateAny); err != nil {
				break
			}
		}
	}
	if n > 0 {
		written := keys[:n]
		t.undo = append(t.undo, func() error { return DeleteAll(m, written) })
	}
	if err != nil {
		return fmt.Errorf("write %d entries to %s: %w", len(keys), m, err)
	}
	return nil
}

// PutAll writes entries whose keys are absent, all or none: on failure
// it deletes what it wrote. A million entries take about a second.
func PutAll[K, V any](m *ebpf.Map, keys []K, values []V) error {
	var t Txn
	if err := PutNew(&t, m, keys, values); err != nil {
		err, _ = t.Rollback(err)
		return err
	}
	return nil
}

// DeleteAll deletes keys from m, in batches where the kernel has them;
// keys already gone are no error. (The kernel's batch delete stops at the
// first missing key; the keys after it are deleted all the same.)
func DeleteAll[K any](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		n, err := m.BatchDelete(keys, nil)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ebpf.ErrKeyNotExist):
			keys = keys[n+1:] // the n-th was gone; on with the rest
		case errors.Is(err, ebpf.ErrNotSupported):
			var errs []error
			for i := range keys {
				errs = append(errs, IgnoreMissing(m.Delete(keys[i])))
			}
			if err := errors.Join(errs...); err != nil {
				return fmt.Errorf("delete from %s: %w", m, err)
			}
			return nil
		default:
			return fmt.Errorf("delete %d entries from %s: %w", len(keys), m, err)
		}
	}
	return nil
}

// IgnoreMissing returns err, or nil if it says the key was not there.
func IgnoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Scan calls fn with every entry of m, for recovery: fn sees copies. It
// stops at the first error fn or the iteration returns.
func Scan[K, V any](m *ebpf.Map, fn func(K, V) error) error {
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	return nil
}

// Keys lists the keys of m for which keep returns true: the entries
// recovery finds unreferenced, to delete with DeleteAll.
func Keys[K, V any](m *ebpf.Map, keep func(K, V) bool) ([]K, error) {
	var out []K
	err := Scan(m, func(k K, v V) error {
		if keep(k, v) {
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// ReadAll reads a hash map whole, in batches: one syscall per batch
// rather than two per entry, and no restart when entries come and go
// meanwhile, as they do in conntrack.
func ReadAll[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	out := map[K]V{}
	keys, vals := make([]K, 4096), make([]V, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", m, err)
		}
	}
}
