package policy

import (
	"github.com/xdplane/xdplane/datapath"
)

// Errors returned by this package, the values of package datapath's errors
// of the same names. Invalid input is refused with a
// *datapath.ValidationError naming the field, which wraps ErrInvalid or
// ErrCapacity. Test for them with errors.Is.
var (
	// ErrInvalid: a policy is malformed. The returned error is a
	// *ValidationError naming the field.
	ErrInvalid = datapath.ErrInvalid
	// ErrCapacity: the change needs more room than the datapath's maps
	// have (see datapath.Limits).
	ErrCapacity = datapath.ErrCapacity
	// ErrNotFound: no endpoint has that interface.
	ErrNotFound = datapath.ErrNotFound
	// ErrBusy: another Manager, in this process or another, already
	// writes the datapath's policies. Close it first.
	ErrBusy = datapath.ErrBusy
	// ErrClosed: the Manager was closed.
	ErrClosed = datapath.ErrClosed
	// ErrNetNS: NewManager runs in another network namespace than the
	// endpoints' host-side interfaces, where it cannot see them.
	ErrNetNS = datapath.ErrNetNS
)
