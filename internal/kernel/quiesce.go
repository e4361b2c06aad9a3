package kernel

import (
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf"
)

// quiesceKey is a key of the maglev map that no service ever has: service
// ids are far below it.
const quiesceKey = uint32(math.MaxUint32)

// WaitForPrograms returns once every run of a datapath program that began
// before the call has ended. A writer calls it between unpublishing
// entries (the last reference to them gone from the maps) and deleting or
// reusing them, so that no packet judged under the old entries finds them
// half gone.
//
// User space has no synchronize_rcu of its own; the kernel calls it after
// every update or delete of a map of maps, found or not, so that user space
// knows no program still reads the old inner map. Deleting a key that is
// never there is a grace period and nothing else.
func (h *Handle) WaitForPrograms() error {
	err := h.Maps.Maglev.Delete(quiesceKey)
	if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return fmt.Errorf("wait for running programs: %w", err)
}
