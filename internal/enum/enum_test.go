package enum_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/internal/enum"
)

type color uint8

var (
	errInvalid = errors.New("invalid")
	colors     = enum.New[color]("color", "red", "", "green")
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		in   string
		want color
		ok   bool
	}{{"red", 0, true}, {"GREEN", 2, true}, {"Red", 0, true}, {"", 0, false}, {"blue", 0, false}, {"color(1)", 0, false}} {
		got, err := colors.Parse(c.in, errInvalid)
		if c.ok != (err == nil) || (c.ok && got != c.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && (!errors.Is(err, errInvalid) || !strings.Contains(err.Error(), `"`+c.in+`"`) || !strings.Contains(err.Error(), "red or green")) {
			t.Errorf("Parse(%q) error %q: want it to wrap the sentinel, quote the input and list the names", c.in, err)
		}
	}
	if s := colors.String(1); s != "color(1)" {
		t.Errorf("String(1) = %q", s)
	}
	if _, err := colors.Marshal(1, errInvalid); !errors.Is(err, errInvalid) {
		t.Errorf("Marshal(1) = %v, want an error", err)
	}
	b, err := colors.Marshal(2, errInvalid)
	if err != nil || string(b) != "green" {
		t.Errorf("Marshal(2) = %q, %v", b, err)
	}
	c := color(2)
	if err := colors.Unmarshal(&c, []byte("nope"), errInvalid); err == nil || c != 2 {
		t.Errorf("Unmarshal(nope) = %v, left %v; want an error, 2 kept", err, c)
	}
	if err := colors.Unmarshal(&c, []byte("RED"), errInvalid); err != nil || c != 0 {
		t.Errorf("Unmarshal(RED) = %v, %v", err, c)
	}
}
