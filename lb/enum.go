package lb

import (
	"fmt"
	"strconv"
	"strings"
)

// enum is the text form of one of the package's enumerations (Protocol,
// BackendState, TrafficPolicy, Algorithm), so that the four share one
// String, Parse, MarshalText and UnmarshalText and say the same things
// the same way.
type enum[T ~uint8] struct {
	what   string   // its name in errors: "protocol"
	other  string   // String's prefix for a value without a name: "proto"
	values []T      // the named values
	names  []string // their names, lower case, in the order of values
}

// name returns v's name, and whether v has one (is valid).
func (e enum[T]) name(v T) (string, bool) {
	for i, x := range e.values {
		if x == v {
			return e.names[i], true
		}
	}
	return "", false
}

func (e enum[T]) valid(v T) bool {
	_, ok := e.name(v)
	return ok
}

// format is v's name, or for a value without one the number, as
// "proto(1)".
func (e enum[T]) format(v T) string {
	if n, ok := e.name(v); ok {
		return n
	}
	return e.other + "(" + strconv.Itoa(int(v)) + ")"
}

// want lists the names for an error: "a, b or c".
func (e enum[T]) want() string {
	n := len(e.names)
	if n == 1 {
		return e.names[0]
	}
	return strings.Join(e.names[:n-1], ", ") + " or " + e.names[n-1]
}

// parse reads a name, in any case.
func (e enum[T]) parse(s string) (T, error) {
	for i, n := range e.names {
		if strings.EqualFold(s, n) {
			return e.values[i], nil
		}
	}
	return 0, fmt.Errorf("%w: %s %q: want %s", ErrInvalid, e.what, s, e.want())
}

func (e enum[T]) marshal(v T) ([]byte, error) {
	n, ok := e.name(v)
	if !ok {
		return nil, fmt.Errorf("%w: %s %d: want %s", ErrInvalid, e.what, uint8(v), e.want())
	}
	return []byte(n), nil
}

func (e enum[T]) unmarshal(b []byte, v *T) error {
	x, err := e.parse(string(b))
	if err != nil {
		return err
	}
	*v = x
	return nil
}
