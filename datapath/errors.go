package datapath

import "errors"

// Errors returned by this package. Test for them with errors.Is; the
// returned errors add the detail (which map, which interface, which
// feature).
var (
	// ErrNotSupported: the running kernel lacks a feature xdplane needs.
	// The error names the feature and, where known, the Linux version
	// that brought it. Open probes what every datapath needs; Attach
	// reports what only some hooks and modes need (XDP links, TCX when
	// ModeTCX forces it).
	ErrNotSupported = errors.New("kernel feature not supported")

	// ErrNotPinned: OpenPinned found no datapath in the directory.
	ErrNotPinned = errors.New("no datapath pinned")

	// ErrIncompatible: state pinned by another xdplane version has a
	// layout the loaded programs cannot use. Remove it first.
	ErrIncompatible = errors.New("pinned state is incompatible")

	// ErrBPFFS: the pin directory is not on a bpffs and none can be
	// mounted that would outlive the process.
	ErrBPFFS = errors.New("no usable bpffs")

	// ErrInvalid: an argument is out of range; the error names it.
	ErrInvalid = errors.New("invalid argument")

	// ErrNoPrograms: the call needs programs, and this Datapath was opened
	// with OpenPinned, which opens maps only.
	ErrNoPrograms = errors.New("datapath opened without programs")

	// ErrLocked: Lock without waiting found the lock held, by this
	// process or another.
	ErrLocked = errors.New("lock held")
)
