package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/cilium/ebpf"
)

// Verify checks that the maps pinned in Dir are still the ones this
// Datapath holds. They stop being so when the datapath is removed under
// the process (RemoveOptions.Force), when the bpffs is unmounted, or when
// the pins are replaced by another datapath's: the handle then writes maps
// that no pin leads to, and that nothing attached may read. A process
// that holds a Datapath for long, as a daemon does, calls Verify from
// time to time and before it applies a change, and stops (or starts
// afresh with Open) when it fails. The error wraps ErrNotPinned and
// names the first map found gone or replaced.
func (d *Datapath) Verify() error {
	names, err := mapNames()
	if err != nil {
		return err
	}
	held := heldMaps(&d.maps)
	for _, name := range names {
		m := held[name]
		if m == nil {
			continue
		}
		path := filepath.Join(d.k.Dir, name)
		pinned, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: map %s is no longer pinned in %s: the datapath was removed or its bpffs unmounted", ErrNotPinned, name, d.k.Dir)
		}
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", name, err)
		}
		same, err := sameMap(m, pinned)
		pinned.Close()
		if err != nil {
			return fmt.Errorf("compare map %s with its pin: %w", name, err)
		}
		if !same {
			return fmt.Errorf("%w: the map pinned as %s is another datapath's: this one was removed, and another opened in its place", ErrNotPinned, path)
		}
	}
	return nil
}

// heldMaps indexes the maps of m by the names they are pinned under (the
// struct tags bpf2go writes).
func heldMaps(m any) map[string]*ebpf.Map {
	out := make(map[string]*ebpf.Map)
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if mp, ok := v.Field(i).Interface().(*ebpf.Map); ok && name != "" && mp != nil {
			out[name] = mp
		}
	}
	return out
}

func sameMap(a, b *ebpf.Map) (bool, error) {
	ia, err := a.Info()
	if err != nil {
		return false, err
	}
	ib, err := b.Info()
	if err != nil {
		return false, err
	}
	ida, ok1 := ia.ID()
	idb, ok2 := ib.ID()
	if !ok1 || !ok2 {
		return false, fmt.Errorf("%w: map IDs (Linux 4.13)", ErrNotSupported)
	}
	return ida == idb, nil
}
