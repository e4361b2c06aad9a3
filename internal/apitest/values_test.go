package apitest

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/bandwidth"
	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
	"github.com/xdplane/xdplane/policy"
)

// value is one exported value type: its named values, its Parse, and a
// value with no name.
type value struct {
	named   []any
	parse   func(string) (any, error)
	unnamed any
	// newPtr returns a pointer to a zero value, for UnmarshalText.
	newPtr func() encoding.TextUnmarshaler
}

func of[T interface {
	~uint8
	fmt.Stringer
	encoding.TextMarshaler
}, P interface {
	*T
	encoding.TextUnmarshaler
}](parse func(string) (T, error), unnamed T, named ...T) value {
	v := value{
		parse:   func(s string) (any, error) { return parse(s) },
		unnamed: unnamed,
		newPtr:  func() encoding.TextUnmarshaler { return P(new(T)) },
	}
	for _, n := range named {
		v.named = append(v.named, n)
	}
	return v
}

// values lists every enumeration the packages export. A new one belongs
// here.
var values = map[string]value{
	"datapath.Hook":       of(datapath.ParseHook, 9, datapath.HookTC, datapath.HookXDP),
	"datapath.Mode":       of(datapath.ParseMode, 9, datapath.ModeAuto, datapath.ModeTCX, datapath.ModeTCLegacy, datapath.ModeXDPNative, datapath.ModeXDPGeneric),
	"datapath.Point":      of(datapath.ParsePoint, 9, datapath.PointTCIngress, datapath.PointTCEgress, datapath.PointXDP),
	"datapath.Direction":  of(datapath.ParseDirection, 9, datapath.Ingress, datapath.Egress),
	"datapath.DropReason": of(datapath.ParseDropReason, 0, datapath.DropDenyRule, datapath.DropNoRule, datapath.DropFragment, datapath.DropMalformed, datapath.DropPrefilter),
	"lb.Protocol":         of(lb.ParseProtocol, 1, lb.TCP, lb.UDP),
	"lb.BackendState":     of(lb.ParseBackendState, 9, lb.Active, lb.Terminating, lb.Maintenance),
	"lb.TrafficPolicy":    of(lb.ParseTrafficPolicy, 9, lb.Cluster, lb.Local),
	"lb.Algorithm":        of(lb.ParseAlgorithm, 9, lb.Random, lb.Maglev),
	"policy.Protocol":     of(policy.ParseProtocol, 47, policy.ICMP, policy.TCP, policy.UDP, policy.SCTP),
	"policy.Action":       of(policy.ParseAction, 9, policy.Allow, policy.Deny),
	"bandwidth.Mode":      of(bandwidth.ParseMode, 9, bandwidth.ModeAuto, bandwidth.ModeEDT, bandwidth.ModeHTB),
}

// Every value type behaves as net/netip's do: String is its one
// lower-case name, Parse takes it back in any case, MarshalText and
// UnmarshalText round-trip it, and bad input is an error that wraps
// datapath.ErrInvalid and quotes the input; a value without a name prints
// as kind(n) and does not marshal.
func TestValueTypes(t *testing.T) {
	for name, v := range values {
		t.Run(name, func(t *testing.T) {
			for _, x := range v.named {
				s := x.(fmt.Stringer).String()
				if s != strings.ToLower(s) || s == "" || strings.ContainsAny(s, " ()") {
					t.Errorf("%v: String %q, want one lower-case word", x, s)
				}
				for _, in := range []string{s, strings.ToUpper(s), strings.ToUpper(s[:1]) + s[1:]} {
					got, err := v.parse(in)
					if err != nil || got != x {
						t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, x)
					}
				}
				text, err := x.(encoding.TextMarshaler).MarshalText()
				if err != nil || string(text) != s {
					t.Errorf("%v.MarshalText() = %q, %v; want %q", x, text, err, s)
				}
				p := v.newPtr()
				if err := p.UnmarshalText([]byte(strings.ToUpper(s))); err != nil || reflect.ValueOf(p).Elem().Interface() != x {
					t.Errorf("UnmarshalText(%q) = %v, %v; want %v", strings.ToUpper(s), p, err, x)
				}
			}
			for _, bad := range []string{"", "no-such-name", " " + v.named[0].(fmt.Stringer).String()} {
				_, err := v.parse(bad)
				if !errors.Is(err, datapath.ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
					t.Errorf("Parse(%q) = %v, want an error wrapping datapath.ErrInvalid that quotes the input", bad, err)
				}
				p := v.newPtr()
				before := reflect.ValueOf(p).Elem().Interface()
				if err := p.UnmarshalText([]byte(bad)); err == nil || reflect.ValueOf(p).Elem().Interface() != before {
					t.Errorf("UnmarshalText(%q) = %v, changed to %v; want an error, the value left", bad, err, p)
				}
			}
			if _, err := v.unnamed.(encoding.TextMarshaler).MarshalText(); !errors.Is(err, datapath.ErrInvalid) {
				t.Errorf("MarshalText of %d, which has no name: %v, want an error wrapping datapath.ErrInvalid", v.unnamed, err)
			}
			if s := v.unnamed.(fmt.Stringer).String(); !strings.HasSuffix(s, fmt.Sprintf("(%d)", v.unnamed)) {
				t.Errorf("String of %d, which has no name: %q, want kind(%d)", v.unnamed, s, v.unnamed)
			}
		})
	}
}
