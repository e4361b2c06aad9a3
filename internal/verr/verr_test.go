package verr_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/verr"
)

func TestValidationError(t *testing.T) {
	err := verr.Invalid("egress.rules[2].ports[0].endPort", uint16(70), "below port 80")
	if got, want := err.Error(), "egress.rules[2].ports[0].endPort 70: below port 80"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := verr.Named("veth1", fmt.Errorf("wrapped: %w", err)); !errors.Is(got, datapath.ErrInvalid) {
		t.Errorf("Named lost the sentinel: %v", got)
	}
	if got, want := err.Error(), "endpoint veth1: egress.rules[2].ports[0].endPort 70: below port 80"; got != want {
		t.Errorf("after Named: Error() = %q, want %q", got, want)
	}
	// An endpoint already named stays.
	verr.Named("veth2", err)
	if err.Endpoint != "veth1" {
		t.Errorf("Named renamed the endpoint to %q", err.Endpoint)
	}
	if !errors.Is(err, datapath.ErrInvalid) || errors.Is(err, datapath.ErrCapacity) {
		t.Errorf("Invalid wraps the wrong sentinel: %v", err.Unwrap())
	}
	capErr := verr.OverCapacity("ingress.rules", 100001, "too many")
	if !errors.Is(capErr, datapath.ErrCapacity) || errors.Is(capErr, datapath.ErrInvalid) {
		t.Errorf("OverCapacity wraps the wrong sentinel: %v", capErr.Unwrap())
	}
}

func TestPrefix(t *testing.T) {
	for _, c := range []struct {
		p    netip.Prefix
		want string
	}{
		{netip.MustParsePrefix("10.0.0.0/8"), ""},
		{netip.MustParsePrefix("fd00::/8"), ""},
		{netip.Prefix{}, "not a prefix"},
		{netip.MustParsePrefix("::ffff:10.0.0.0/104"), "IPv4-mapped"},
	} {
		err := verr.Prefix("peers[0]", c.p)
		var ve *datapath.ValidationError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Prefix(%v) = %v, want nil", c.p, err)
		case c.want != "" && (!errors.As(err, &ve) || ve.Field != "peers[0]" || !errors.Is(err, datapath.ErrInvalid)):
			t.Errorf("Prefix(%v) = %v, want a ValidationError of peers[0] saying %q", c.p, err, c.want)
		}
	}
}
