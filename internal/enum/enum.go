// Package enum gives xdplane's small value types (protocols, directions,
// hooks, modes, reasons) one behaviour, as net/netip's types have theirs:
// String prints the value's lower-case name, Parse takes a name in any
// case and names the bad input in its error, MarshalText refuses a value
// that has no name, UnmarshalText accepts what Parse accepts.
package enum

import (
	"fmt"
	"strconv"
	"strings"
)

// Names names the values of an enumeration of type T by index.
type Names[T ~uint8] struct {
	kind  string   // what a value is, in errors: "direction"
	names []string // by value; "" for a value with no name
	want  string   // the names, for errors: "ingress or egress"
}

// New names the values 0, 1, ... of an enumeration of kind; an empty name
// leaves its value unnamed.
func New[T ~uint8](kind string, names ...string) Names[T] {
	var valid []string
	for _, n := range names {
		if n != "" {
			valid = append(valid, n)
		}
	}
	want := strings.Join(valid, ", ")
	if i := strings.LastIndex(want, ", "); i >= 0 {
		want = want[:i] + " or " + want[i+2:]
	}
	return Names[T]{kind: kind, names: names, want: want}
}

// Want lists the names, for an error: "ingress or egress".
func (n Names[T]) Want() string { return n.want }

// Valid reports whether v has a name.
func (n Names[T]) Valid(v T) bool { return int(v) < len(n.names) && n.names[v] != "" }

// String returns v's name, or kind(v) if it has none.
func (n Names[T]) String(v T) string {
	if n.Valid(v) {
		return n.names[v]
	}
	return strings.ReplaceAll(n.kind, " ", "-") + "(" + strconv.Itoa(int(v)) + ")"
}

// Parse returns the value named s, in any case; its error wraps invalid
// and quotes s.
func (n Names[T]) Parse(s string, invalid error) (T, error) {
	for i, name := range n.names {
		if name != "" && strings.EqualFold(s, name) {
			return T(i), nil
		}
	}
	return 0, fmt.Errorf("%w: %s %q: want %s", invalid, n.kind, s, n.want)
}

// Marshal returns v's name; a value with none is an error wrapping
// invalid.
func (n Names[T]) Marshal(v T, invalid error) ([]byte, error) {
	if !n.Valid(v) {
		return nil, fmt.Errorf("%w: %s %d", invalid, n.kind, uint8(v))
	}
	return []byte(n.names[v]), nil
}

// Unmarshal sets *dst to the value b names, as Parse; on error *dst is
// left as it was.
func (n Names[T]) Unmarshal(dst *T, b []byte, invalid error) error {
	v, err := n.Parse(string(b), invalid)
	if err == nil {
		*dst = v
	}
	return err
}
