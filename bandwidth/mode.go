package bandwidth

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/enum"
)

// Mode says how the datapath holds endpoints to their ingress limits.
type Mode uint8

const (
	// ModeAuto picks ModeEDT where the kernel has the fq qdisc, ModeHTB
	// where it does not.
	ModeAuto Mode = iota
	// ModeEDT paces ingress limits with departure times the datapath
	// stamps on each packet, which an fq qdisc the library installs on
	// the endpoint's host-side interface honours.
	ModeEDT
	// ModeHTB paces ingress limits with an HTB class the library installs
	// on the endpoint's host-side interface, into which the datapath
	// classifies the endpoint's packets.
	//
	// In either mode, egress limits are an HTB class on the pod's side of
	// its link, which takes all the pod sends (and needs Endpoint.NetNS).
	ModeHTB
)

var modeNames = enum.New[Mode]("bandwidth mode", "auto", "edt", "htb")

// ParseMode parses "auto", "edt" or "htb", in any case.
func ParseMode(s string) (Mode, error) { return modeNames.Parse(s, ErrInvalid) }

// String returns "auto", "edt" or "htb".
func (m Mode) String() string { return modeNames.String(m) }

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return modeNames.Marshal(m, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseMode.
func (m *Mode) UnmarshalText(b []byte) error { return modeNames.Unmarshal(m, b, ErrInvalid) }

var (
	fqMu    sync.Mutex
	fqKnown bool // the probe has answered
	fqHave  bool
)

// haveFQ reports whether the kernel has the fq qdisc: it tries one on a
// veth in a network namespace of its own. The answer is kept; a probe
// that fails for another reason (no privilege) is tried again next time.
func haveFQ() (bool, error) {
	fqMu.Lock()
	defer fqMu.Unlock()
	if !fqKnown {
		have, err := probeFQ()
		if err != nil {
			return false, fmt.Errorf("probe for the fq qdisc: %w", err)
		}
		fqKnown, fqHave = true, have
	}
	return fqHave, nil
}

// probeFQ answers haveFQ. A kernel without fq refuses the qdisc's kind
// with ENOENT.
func probeFQ() (bool, error) {
	return inNewNetNS(func() (bool, error) {
		h, err := netlink.NewHandle()
		if err != nil {
			return false, err
		}
		defer h.Close()
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fqprobe0"}, PeerName: "fqprobe1"}); err != nil {
			return false, err
		}
		l, err := h.LinkByName("fqprobe0")
		if err != nil {
			return false, err
		}
		err = h.QdiscAdd(&netlink.Fq{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: netlink.MakeHandle(1, 0)}})
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.ENOENT):
			return false, nil
		}
		return false, err
	})
}

// Variables, so that a test can make the way back fail and count the
// unlocks.
var (
	setNS        = netns.Set
	unlockThread = runtime.UnlockOSThread
)

// inNewNetNS runs f on this goroutine's thread in a new network namespace,
// which goes when f returns. If the thread cannot be switched back to its
// namespace, it stays locked to the goroutine, so that Go ends it with
// the goroutine instead of running other goroutines in the wrong
// namespace.
func inNewNetNS(f func() (bool, error)) (bool, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		unlockThread()
		return false, err
	}
	defer orig.Close()
	ns, err := netns.New() // enters it
	if err != nil {
		// netns.New unshares first: the thread may have moved.
		if err := setNS(orig); err == nil {
			unlockThread()
		}
		return false, err
	}
	defer ns.Close()
	have, ferr := f()
	if err := setNS(orig); err != nil {
		return false, errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
	}
	unlockThread()
	return have, ferr
}

// resolveMode turns ModeAuto into what this kernel supports: EDT where fq
// is, else HTB, also when the probe cannot tell.
func resolveMode(m Mode) Mode {
	if m != ModeAuto {
		return m
	}
	if have, err := haveFQ(); err == nil && have {
		return ModeEDT
	}
	return ModeHTB
}
