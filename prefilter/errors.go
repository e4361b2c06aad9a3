package prefilter

import "github.com/xdplane/xdplane/datapath"

// Errors returned by this package, the values of package datapath's
// errors of the same names. A refused list is a *datapath.ValidationError
// naming the entry ("prefilter[3]"), which wraps one of them. Test for
// them with errors.Is.
var (
	// ErrInvalid: an entry is not a prefix, or an IPv4-mapped IPv6 one.
	ErrInvalid = datapath.ErrInvalid
	// ErrCapacity: the list, or the old and the new together while one
	// replaces the other, is longer than datapath.Limits'
	// MaxPrefilterPrefixes.
	ErrCapacity = datapath.ErrCapacity
)
