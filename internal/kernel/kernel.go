package kernel

import "github.com/xdplane/xdplane/internal/bpf"

// Handle is what a datapath holds in the kernel: its pin directory, maps
// and programs. It belongs to the datapath: do not close what it holds.
type Handle struct {
	// Dir is the bpffs directory of the pins and the locks.
	Dir  string
	Maps *bpf.XdplaneMaps
	// Programs is nil for a datapath opened without programs.
	Programs *bpf.XdplanePrograms
	// Timeouts are the conntrack timeouts Programs were loaded with; zero
	// without programs.
	Timeouts CTTimeouts
}

// Set by package datapath, which owns the Handle and the errors, and
// cannot be imported from here without a cycle.
var (
	handleOf func(dp any) *Handle
	errBusy  error
)

// Register is called once, by package datapath, with the function that
// returns a *datapath.Datapath's Handle, and datapath.ErrBusy, which Lock
// wraps.
func Register(of func(dp any) *Handle, busy error) { handleOf, errBusy = of, busy }

// Of returns the Handle of dp, a *datapath.Datapath.
func Of(dp any) *Handle { return handleOf(dp) }
