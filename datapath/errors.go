package datapath

import (
	"errors"
	"fmt"
)

// Errors returned by this package and by the packages that program the
// datapath (lb, policy, bandwidth, prefilter), which export the ones they
// return under the same names: lb.ErrInvalid is ErrInvalid. Test for them
// with errors.Is; the returned errors add the detail (which field, map,
// interface or feature).
var (
	// ErrNotSupported: the running kernel lacks a feature xdplane needs.
	// The error names the feature and, where known, the Linux version
	// that brought it. Open probes what every datapath needs; Attach
	// reports what only some hooks and modes need (XDP links, TCX when
	// ModeTCX forces it).
	ErrNotSupported = errors.New("kernel feature not supported")

	// ErrNotPinned: OpenPinned found no datapath in the directory, or
	// Verify found this Datapath's pins gone or replaced.
	ErrNotPinned = errors.New("no datapath pinned")

	// ErrIncompatible: state pinned by another xdplane version has a
	// layout the loaded programs cannot use. Remove it first.
	ErrIncompatible = errors.New("pinned state is incompatible")

	// ErrBPFFS: the pin directory is not on a bpffs and none can be
	// mounted that would outlive the process.
	ErrBPFFS = errors.New("no usable bpffs")

	// ErrPermission: the process lacks a capability the call needs. The
	// error names each one missing. Open needs CAP_BPF, CAP_PERFMON and
	// CAP_NET_ADMIN (CAP_SYS_ADMIN stands in for any of them), and
	// CAP_SYS_ADMIN to mount a bpffs.
	ErrPermission = errors.New("insufficient privilege")

	// ErrUnsafeDir: the pin directory, one of the directories xdplane
	// keeps in it, or a directory above it could be changed by another
	// user: it is owned by another user, writable by group or others, or
	// (the pin directory itself) a symbolic link. The error names the
	// path, its owner and its mode. Open, OpenPinned and Remove refuse
	// such a directory and change nothing.
	ErrUnsafeDir = errors.New("unsafe pin directory")

	// ErrNoPrograms: the call needs programs, and this Datapath was opened
	// with OpenPinned, which opens maps only.
	ErrNoPrograms = errors.New("datapath opened without programs")

	// ErrInvalid: an argument is malformed or out of range; the error
	// names the field and the value.
	ErrInvalid = errors.New("invalid")

	// ErrCapacity: a change needs more room than the datapath's maps have
	// (see Limits).
	ErrCapacity = errors.New("datapath capacity exceeded")

	// ErrNotFound: no service, endpoint or attachment has that name.
	ErrNotFound = errors.New("not found")

	// ErrBusy: another writer, in this process or another, holds what
	// the call needs: a second Manager of the same kind on one datapath
	// (close the first), or Remove while a writer is at work (stop it, or
	// force the removal with RemoveOptions.Force). The error names the
	// lock and, where the kernel tells, the process that holds it.
	ErrBusy = errors.New("datapath has another writer")

	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("manager closed")

	// ErrNetNS: a policy or bandwidth Manager was made in another network
	// namespace than the endpoints' host-side interfaces, where it cannot
	// see them.
	ErrNetNS = errors.New("wrong network namespace")
)

// ValidationError tells which field of an endpoint's policy or limits, or
// of the prefilter, is wrong. It wraps ErrInvalid or ErrCapacity. (Package
// lb has its own, which names the service's frontend.)
type ValidationError struct {
	Endpoint string // the endpoint's interface name; empty when the value was checked on its own
	Field    string // for example "egress.rules[2].peers[0].except[1]"
	Value    any    // the offending value
	Reason   string
	Err      error // ErrInvalid or ErrCapacity
}

func (e *ValidationError) Error() string {
	msg := fmt.Sprintf("%s %v: %s", e.Field, e.Value, e.Reason)
	if e.Endpoint != "" {
		return "endpoint " + e.Endpoint + ": " + msg
	}
	return msg
}

func (e *ValidationError) Unwrap() error { return e.Err }
