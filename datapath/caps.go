package datapath

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// capability is one Linux capability, by number and by name.
type capability struct {
	bit  uint
	name string
}

var (
	capBPF      = capability{unix.CAP_BPF, "CAP_BPF"}
	capPerfmon  = capability{unix.CAP_PERFMON, "CAP_PERFMON"}
	capNetAdmin = capability{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}
	capSysAdmin = capability{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}
)

// openCaps are what Open needs, measured on Linux 6.18: CAP_BPF for the
// bpf() syscall at all (unprivileged BPF is disabled on every
// distribution's default), CAP_PERFMON for the verifier to accept the
// programs' pointer arithmetic on packets, CAP_NET_ADMIN to load XDP and
// tc programs. The kernel takes CAP_SYS_ADMIN in place of each
// (bpf_capable, perfmon_capable, bpf_net_capable), so this does too.
var openCaps = []capability{capBPF, capPerfmon, capNetAdmin}

// capSet is a process's effective capability set.
type capSet [2]uint32

// effectiveCaps returns the calling thread's effective capabilities. Go
// gives every thread of a process the same set unless the program
// changes one thread's on purpose.
func effectiveCaps() (capSet, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return capSet{}, fmt.Errorf("read capabilities: %w", err)
	}
	return capSet{data[0].Effective, data[1].Effective}, nil
}

func (s capSet) has(c capability) bool { return s[c.bit/32]&(1<<(c.bit%32)) != 0 }

// missing lists the capabilities of want that s lacks, CAP_SYS_ADMIN
// standing in for any of them.
func (s capSet) missing(want []capability) []string {
	if s.has(capSysAdmin) {
		return nil
	}
	var out []string
	for _, c := range want {
		if !s.has(c) {
			out = append(out, c.name)
		}
	}
	return out
}

// checkCaps returns an error wrapping ErrPermission that names every
// capability of want the process lacks.
func checkCaps(op string, want []capability) error {
	set, err := effectiveCaps()
	if err != nil {
		return err
	}
	missing := set.missing(want)
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s needs %s (or CAP_SYS_ADMIN in place of any); this process lacks %s",
		ErrPermission, op, capNames(want), strings.Join(missing, ", "))
}

func capNames(cs []capability) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// refusedForPrivilege tells whether err, from loading programs or maps,
// is the kernel refusing this process rather than the object: EPERM, or
// the verifier turning down what it allows only to a privileged loader
// ("... prohibited for !root"). Other EACCES from the verifier mean the
// program itself is wrong.
func refusedForPrivilege(err error) bool {
	if errors.Is(err, unix.EPERM) {
		return true
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		for _, line := range ve.Log {
			if strings.Contains(line, "!root") {
				return true
			}
		}
	}
	return false
}

// privilegeError wraps err, which the kernel returned for op, in
// ErrPermission if it is a refusal for want of privilege, naming what the
// process lacks of want; any other error is returned as it is.
func privilegeError(op string, want []capability, err error) error {
	if err == nil || !refusedForPrivilege(err) {
		return err
	}
	lacks := "it has them all, so a security module or lockdown may have refused"
	if set, cerr := effectiveCaps(); cerr == nil {
		if m := set.missing(want); len(m) > 0 {
			lacks = "it lacks " + strings.Join(m, ", ")
		}
	}
	return fmt.Errorf("%w: the kernel refused to %s; that needs %s (or CAP_SYS_ADMIN in place of any), and %s: %w",
		ErrPermission, op, capNames(want), lacks, err)
}
