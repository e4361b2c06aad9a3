package lb

import (
	"fmt"

	"github.com/xdplane/xdplane/datapath"
)

// Errors returned by this package, the same values as package datapath's
// of the same names; test for them with errors.Is.
var (
	// ErrInvalid: a service, frontend, backend or flow is malformed, or
	// a text does not parse. From Validate, Upsert, Sync and
	// KubeService.Expand the error is a *ValidationError naming the
	// field; from the Parse functions and Simulate, it quotes the input.
	ErrInvalid = datapath.ErrInvalid
	// ErrCapacity: the change needs more room than the datapath's maps
	// have (see datapath.Limits).
	ErrCapacity = datapath.ErrCapacity
	// ErrNotFound: no service has that frontend.
	ErrNotFound = datapath.ErrNotFound
	// ErrBusy: another Manager, in this process or another, already
	// writes the datapath's services. Close it first.
	ErrBusy = datapath.ErrBusy
	// ErrClosed: the Manager was closed.
	ErrClosed = datapath.ErrClosed
)

// ValidationError tells which field of which service is wrong. It wraps
// ErrInvalid or ErrCapacity.
type ValidationError struct {
	Frontend Frontend // the service's frontend, as given
	Field    string   // for example "backends[2].address"
	Value    any      // the offending value
	Reason   string
	err      error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("service %s: %s %v: %s", e.Frontend, e.Field, e.Value, e.Reason)
}

func (e *ValidationError) Unwrap() error { return e.err }

func invalid(f Frontend, field string, value any, reason string) *ValidationError {
	return &ValidationError{Frontend: f, Field: field, Value: value, Reason: reason, err: ErrInvalid}
}

func overCapacity(f Frontend, field string, value any, reason string) *ValidationError {
	return &ValidationError{Frontend: f, Field: field, Value: value, Reason: reason, err: ErrCapacity}
}
