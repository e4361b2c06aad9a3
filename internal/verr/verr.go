// Package verr builds the datapath.ValidationError values that packages
// policy, bandwidth and prefilter return.
package verr

import (
	"errors"
	"net/netip"

	"github.com/xdplane/xdplane/datapath"
)

// Invalid reports a malformed field; Named fills in the endpoint.
func Invalid(field string, value any, reason string) *datapath.ValidationError {
	return &datapath.ValidationError{Field: field, Value: value, Reason: reason, Err: datapath.ErrInvalid}
}

// OverCapacity reports a field that needs more room than the datapath's
// maps have.
func OverCapacity(field string, value any, reason string) *datapath.ValidationError {
	return &datapath.ValidationError{Field: field, Value: value, Reason: reason, Err: datapath.ErrCapacity}
}

// Named returns err, with ifname as its endpoint if it is a
// ValidationError that names none yet.
func Named(ifname string, err error) error {
	var ve *datapath.ValidationError
	if errors.As(err, &ve) && ve.Endpoint == "" {
		ve.Endpoint = ifname
	}
	return err
}

// Prefix refuses what is not a prefix, and IPv4-mapped IPv6 prefixes: the
// maps keep IPv4 v4-mapped, so such a prefix would match IPv4 addresses.
func Prefix(field string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return Invalid(field, p, "not a prefix")
	case p.Masked().Addr().Is4In6():
		return Invalid(field, p, "IPv4-mapped IPv6 prefix: write it in its IPv4 form")
	}
	return nil
}
