package lb

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// txn applies map writes in order and remembers how to undo each, so that
// a change that fails half-way is rolled back to the state before it.
type txn struct {
	undo    []func() error
	closers []*ebpf.Map // inner maps the undo steps hold; closed by close
}

// close releases what the transaction holds. Call it once the
// transaction is committed or rolled back.
func (t *txn) close() {
	for _, m := range t.closers {
		m.Close()
	}
	t.closers = nil
}

// putInner points key of the map-of-maps outer at inner, remembering the
// map it pointed at.
func (t *txn) putInner(outer *ebpf.Map, key any, inner *ebpf.Map) error {
	var prev *ebpf.Map
	err := outer.Lookup(key, &prev)
	switch {
	case err == nil:
		t.closers = append(t.closers, prev)
		t.undo = append(t.undo, func() error { return outer.Update(key, prev, ebpf.UpdateAny) })
	case errors.Is(err, ebpf.ErrKeyNotExist):
		t.undo = append(t.undo, func() error { return ignoreMissing(outer.Delete(key)) })
	default:
		return fmt.Errorf("read %s: %w", outer, err)
	}
	if err := outer.Update(key, inner, ebpf.UpdateAny); err != nil {
		t.undo = t.undo[:len(t.undo)-1]
		return fmt.Errorf("write %s: %w", outer, err)
	}
	return nil
}

// delInner deletes key from the map-of-maps outer, remembering the map it
// pointed at.
func (t *txn) delInner(outer *ebpf.Map, key any) error {
	var prev *ebpf.Map
	if err := outer.Lookup(key, &prev); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read %s: %w", outer, err)
	}
	t.closers = append(t.closers, prev)
	if err := ignoreMissing(outer.Delete(key)); err != nil {
		return fmt.Errorf("delete from %s: %w", outer, err)
	}
	t.undo = append(t.undo, func() error { return outer.Update(key, prev, ebpf.UpdateAny) })
	return nil
}

func (t *txn) put(m *ebpf.Map, key, value any) error {
	var prev []byte
	err := m.Lookup(key, &prev)
	switch {
	case err == nil:
		t.undo = append(t.undo, func() error { return m.Update(key, prev, ebpf.UpdateAny) })
	case errors.Is(err, ebpf.ErrKeyNotExist):
		t.undo = append(t.undo, func() error { return ignoreMissing(m.Delete(key)) })
	default:
		return fmt.Errorf("read %s: %w", m, err)
	}
	if err := m.Update(key, value, ebpf.UpdateAny); err != nil {
		t.undo = t.undo[:len(t.undo)-1]
		return fmt.Errorf("write %s: %w", m, err)
	}
	return nil
}

// putNew writes entries whose keys do not exist, with one batch update;
// undoing it deletes what it wrote. (A batch update takes no
// BPF_NOEXIST: the caller knows the keys are new.)
func putNew[K, V any](t *txn, m *ebpf.Map, keys []K, values []V) error {
	if len(keys) == 0 {
		return nil
	}
	n, err := m.BatchUpdate(keys, values, nil)
	if n > 0 {
		written := keys[:n]
		t.undo = append(t.undo, func() error { return deleteKeys(m, written) })
	}
	if err != nil {
		return fmt.Errorf("write %d entries to %s: %w", len(keys), m, err)
	}
	return nil
}

// deleteKeys deletes keys from m in batches. The kernel's batch delete
// stops at the first key that is missing; the keys after it are deleted
// all the same.
func deleteKeys[K any](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		n, err := m.BatchDelete(keys, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %d entries from %s: %w", len(keys), m, err)
		}
		keys = keys[n+1:] // skip the missing one
	}
	return nil
}

func (t *txn) del(m *ebpf.Map, key any) error {
	var prev []byte
	if err := m.Lookup(key, &prev); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	if err := ignoreMissing(m.Delete(key)); err != nil {
		return fmt.Errorf("delete from %s: %w", m, err)
	}
	t.undo = append(t.undo, func() error { return m.Update(key, prev, ebpf.UpdateAny) })
	return nil
}

// rollback undoes every write, newest first. Its error, if any, joins the
// one that caused the rollback, and clean is false.
func (t *txn) rollback(cause error) (err error, clean bool) {
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
