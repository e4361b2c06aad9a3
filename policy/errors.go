package policy

import (
	"errors"
	"fmt"

	"github.com/xdplane/xdplane/datapath"
)

// Errors returned by this package. All but ErrNetNS are the values of
// package datapath's errors of the same names. Test for them with
// errors.Is.
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
	ErrNetNS = errors.New("wrong network namespace")
)

// ValidationError tells which field of which endpoint's policy is wrong.
// It wraps ErrInvalid or ErrCapacity.
type ValidationError struct {
	Endpoint string // the endpoint's interface name; empty when the policy was checked on its own
	Field    string // for example "egress.rules[2].peers[0].except[1]"
	Value    any    // the offending value
	Reason   string
	err      error
}

func (e *ValidationError) Error() string {
	msg := fmt.Sprintf("%s %v: %s", e.Field, e.Value, e.Reason)
	if e.Endpoint != "" {
		return "endpoint " + e.Endpoint + ": " + msg
	}
	return msg
}

func (e *ValidationError) Unwrap() error { return e.err }

// invalid reports a malformed field; the caller fills in Endpoint when it
// knows it.
func invalid(field string, value any, reason string) *ValidationError {
	return &ValidationError{Field: field, Value: value, Reason: reason, err: ErrInvalid}
}

// overCapacity reports a field that needs more room than the datapath has;
// the caller fills in Endpoint when it knows it.
func overCapacity(field string, value any, reason string) *ValidationError {
	return &ValidationError{Field: field, Value: value, Reason: reason, err: ErrCapacity}
}
