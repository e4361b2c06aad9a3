package kernel

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// WaitForPrograms returns once every run of a datapath program that began
// before the call has ended. A writer calls it between unpublishing
// entries (the last reference to them gone from the maps) and deleting or
// reusing them, so that no packet judged under the old entries finds them
// half gone.
//
// User space has no synchronize_rcu of its own; the kernel calls it after
// every successful update or delete of a map of maps (only a successful
// one since Linux 6.8: a delete of a missing key returns at once), so that
// user space knows no program still reads the old inner map. The quiesce
// map, which no program reads, has one slot that can always be updated.
func (h *Handle) WaitForPrograms() error {
	inner, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	defer inner.Close()
	if err := h.Maps.Quiesce.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}
