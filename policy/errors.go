package policy

import (
	"errors"
	"fmt"
)

// Errors returned by this package; test for them with errors.Is.
var (
	// ErrInvalid: a policy is malformed. The returned error is a
	// *ValidationError naming the field.
	ErrInvalid = errors.New("invalid")
	// ErrCapacity: the change needs more room than the datapath's maps
	// have (see datapath.Limits).
	ErrCapacity = errors.New("datapath capacity exceeded")
	// ErrNotFound: no endpoint has that interface.
	ErrNotFound = errors.New("endpoint not found")
	// ErrBusy: another Manager, in this process or another, already
	// writes the datapath. Close it first.
	ErrBusy = errors.New("datapath has another writer")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("manager closed")
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
