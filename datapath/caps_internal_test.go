package datapath

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Should the kernel refuse the programs for want of privilege anyway
// (Open checks the capabilities first), the error says so; a verifier
// rejection of the program itself stays what it is.
func TestPrivilegeError(t *testing.T) {
	notRoot := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{
		"323: (0f) r2 += r5",
		"R2 has pointer with unsupported alu operation, pointer arithmetic with it prohibited for !root",
	}}
	badProgram := &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"invalid access to packet, off=14 size=1"}}
	for _, tc := range []struct {
		name string
		err  error
		perm bool
	}{
		{"verifier !root", fmt.Errorf("load program: %w", notRoot), true},
		{"EPERM", fmt.Errorf("load program: %w", unix.EPERM), true},
		{"verifier", fmt.Errorf("load program: %w", badProgram), false},
		{"ENOMEM", fmt.Errorf("create map: %w", unix.ENOMEM), false},
	} {
		got := privilegeError("load the programs", openCaps, tc.err)
		if errors.Is(got, ErrPermission) != tc.perm {
			t.Errorf("%s: %v; wraps ErrPermission: %v, want %v", tc.name, got, !tc.perm, tc.perm)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("%s: %v does not wrap the kernel's error", tc.name, got)
		}
		if tc.perm && !strings.Contains(got.Error(), "CAP_PERFMON") {
			t.Errorf("%s: %v does not name the capabilities", tc.name, got)
		}
	}
}

func TestCapSetMissing(t *testing.T) {
	var s capSet
	set := func(c capability) { s[c.bit/32] |= 1 << (c.bit % 32) }
	if got := strings.Join(s.missing(openCaps), " "); got != "CAP_BPF CAP_PERFMON CAP_NET_ADMIN" {
		t.Fatalf("none: missing %q", got)
	}
	set(capBPF) // bit 39: the second word
	set(capNetAdmin)
	if got := strings.Join(s.missing(openCaps), " "); got != "CAP_PERFMON" {
		t.Fatalf("CAP_BPF and CAP_NET_ADMIN: missing %q", got)
	}
	s = capSet{}
	set(capSysAdmin)
	if got := s.missing(openCaps); len(got) != 0 {
		t.Fatalf("CAP_SYS_ADMIN: missing %q", got)
	}
}
