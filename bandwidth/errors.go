package bandwidth

import "github.com/xdplane/xdplane/datapath"

// Errors returned by this package, the values of package datapath's
// errors of the same names. Invalid limits and endpoints are refused with
// a *datapath.ValidationError naming the field, which wraps ErrInvalid.
// Test for them with errors.Is.
var (
	// ErrInvalid: a limit or endpoint is malformed.
	ErrInvalid = datapath.ErrInvalid
	// ErrNotFound: no endpoint with limits has that interface, or the
	// interface does not exist.
	ErrNotFound = datapath.ErrNotFound
	// ErrBusy: another Manager, in this process or another, already
	// writes the datapath's limits. Close it first.
	ErrBusy = datapath.ErrBusy
	// ErrClosed: the Manager was closed.
	ErrClosed = datapath.ErrClosed
	// ErrNotSupported: the kernel lacks what the mode needs (the fq
	// qdisc, for ModeEDT).
	ErrNotSupported = datapath.ErrNotSupported
	// ErrNetNS: NewManager runs in another network namespace than the
	// endpoints' host-side interfaces, where it cannot see them.
	ErrNetNS = datapath.ErrNetNS
)
