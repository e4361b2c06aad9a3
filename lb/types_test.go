package lb

import (
	"encoding"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// textCase is one enumeration's contract, as net/netip's types keep it:
// String is the lower-case name; Parse takes it back in any case, as
// UnmarshalText does; MarshalText is String; bad input is an error that
// wraps ErrInvalid and quotes it.
type textCase[T comparable] struct {
	names map[T]string // every valid value and its name
	bad   T            // a value without a name
	parse func(string) (T, error)
}

func (c textCase[T]) check(t *testing.T, unmarshal func(*T) encoding.TextUnmarshaler) {
	t.Helper()
	for v, name := range c.names {
		if got := any(v).(interface{ String() string }).String(); got != name {
			t.Errorf("%#v.String() = %q, want %q", v, got, name)
		}
		for _, in := range []string{name, strings.ToUpper(name), strings.ToUpper(name[:1]) + name[1:]} {
			if got, err := c.parse(in); err != nil || got != v {
				t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, v)
			}
			var u T
			if err := unmarshal(&u).UnmarshalText([]byte(in)); err != nil || u != v {
				t.Errorf("UnmarshalText(%q) = %v, %v; want %v", in, u, err, v)
			}
		}
		text, err := any(v).(encoding.TextMarshaler).MarshalText()
		if err != nil || string(text) != name {
			t.Errorf("%v.MarshalText() = %q, %v; want %q", v, text, err, name)
		}
		var u T
		if err := unmarshal(&u).UnmarshalText(text); err != nil || u != v {
			t.Errorf("UnmarshalText(MarshalText(%v)) = %v, %v", v, u, err)
		}
	}
	for _, in := range []string{"", "bogus", " tcp", "tcp ", "active\x00"} {
		if _, ok := c.nameOf(in); ok {
			continue
		}
		_, err := c.parse(in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), strconv.Quote(in)) {
			t.Errorf("Parse(%q) = %v, want an error wrapping ErrInvalid that quotes the input", in, err)
		}
		var u T
		if err := unmarshal(&u).UnmarshalText([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("UnmarshalText(%q) = %v, want ErrInvalid", in, err)
		}
	}
	if _, err := any(c.bad).(encoding.TextMarshaler).MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Errorf("%v.MarshalText() = %v, want ErrInvalid", c.bad, err)
	}
	if s := any(c.bad).(interface{ String() string }).String(); !strings.Contains(s, "(") {
		t.Errorf("String of a value without a name: %q, want its number", s)
	}
}

func (c textCase[T]) nameOf(s string) (T, bool) {
	for v, n := range c.names {
		if strings.EqualFold(n, s) {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func TestEnumText(t *testing.T) {
	t.Run("Protocol", func(t *testing.T) {
		textCase[Protocol]{names: map[Protocol]string{TCP: "tcp", UDP: "udp"}, bad: 1, parse: ParseProtocol}.
			check(t, func(p *Protocol) encoding.TextUnmarshaler { return p })
	})
	t.Run("BackendState", func(t *testing.T) {
		textCase[BackendState]{names: map[BackendState]string{Active: "active", Terminating: "terminating", Maintenance: "maintenance"},
			bad: Maintenance + 1, parse: ParseBackendState}.
			check(t, func(p *BackendState) encoding.TextUnmarshaler { return p })
	})
	t.Run("TrafficPolicy", func(t *testing.T) {
		textCase[TrafficPolicy]{names: map[TrafficPolicy]string{Cluster: "cluster", Local: "local"}, bad: Local + 1, parse: ParseTrafficPolicy}.
			check(t, func(p *TrafficPolicy) encoding.TextUnmarshaler { return p })
	})
	t.Run("Algorithm", func(t *testing.T) {
		textCase[Algorithm]{names: map[Algorithm]string{Random: "random", Maglev: "maglev"}, bad: Maglev + 1, parse: ParseAlgorithm}.
			check(t, func(p *Algorithm) encoding.TextUnmarshaler { return p })
	})
}
