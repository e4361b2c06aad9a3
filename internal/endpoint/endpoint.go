// Package endpoint holds what packages policy and bandwidth share about
// an endpoint, a pod's host-side interface: its entry in the datapath's
// endpoints map, which both write, and the attachment of the tc programs
// that read it.
//
// The entry is the programs' one lookup per packet at an interface: it
// says whether network policy judges the packet (the endpoint's id,
// cookie, policy ids and isolation flags, which policy owns) and whether
// it is shaped (the bandwidth flags, which bandwidth owns). Each package
// changes its own fields with Update, a read-modify-write of the kernel's
// entry under the datapath's "endpoints" lock, so that a policy.Manager
// and a bandwidth.Manager, in one process or two, never undo each other's
// writes. An entry no package uses any more (id 0, no flags) is deleted.
package endpoint

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/verr"
)

// Flags of an entry (enum endpoint_flags in bpf/).
const (
	IngressIsolated = 1
	EgressIsolated  = 2
	IngressDeny     = 4
	EgressDeny      = 8
	IngressBw       = 16
	EgressBw        = 32

	// PolicyFlags are policy's, BandwidthFlags bandwidth's.
	PolicyFlags    = IngressIsolated | EgressIsolated | IngressDeny | EgressDeny
	BandwidthFlags = IngressBw | EgressBw
)

// Update changes the entry of the interface with index ifindex: f gets a
// copy of the kernel's entry (the zero entry if there is none) to change.
// Afterwards the entry is written, or deleted if it has neither an id nor
// flags. The datapath's "endpoints" lock is held throughout.
func Update(k *kernel.Handle, ifindex uint32, f func(e *bpf.XdplaneEndpoint)) error {
	unlock, err := kernel.Lock(k.Dir, kernel.LockEndpoints, true)
	if err != nil {
		return err
	}
	defer unlock()
	return update(k, ifindex, f)
}

// update is Update with the lock held.
func update(k *kernel.Handle, ifindex uint32, f func(e *bpf.XdplaneEndpoint)) error {
	m := k.Maps.Endpoints
	var e bpf.XdplaneEndpoint
	err := m.Lookup(ifindex, &e)
	exists := err == nil
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read endpoints: %w", err)
	}
	f(&e)
	if e.Id == 0 && e.Flags == 0 {
		if exists {
			if err := kernel.IgnoreMissing(m.Delete(ifindex)); err != nil {
				return fmt.Errorf("delete from endpoints: %w", err)
			}
		}
		return nil
	}
	err = m.Update(ifindex, e, ebpf.UpdateAny)
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("%w: the endpoints map is full: every one of datapath.Limits.MaxEndpoints (%d), which policy and bandwidth share, is in use",
			datapath.ErrCapacity, m.MaxEntries())
	}
	if err != nil {
		return fmt.Errorf("write endpoints: %w", err)
	}
	return nil
}

// Attach makes sure the datapath's tc programs run on the interface
// ifname, in the caller's network namespace: policy and bandwidth act
// there, and the load balancer shares the programs. It refuses, naming
// what, an interface where xdplane runs at XDP. undo detaches again what
// Attach attached, unless the interface has an entry by then (another
// Manager uses it); it does nothing if the programs were there before.
// Both hold the "endpoints" lock, as Join does: a Manager's undo never
// takes the programs from under another's endpoint.
func Attach(k *kernel.Handle, dp *datapath.Datapath, ifname string, ifindex uint32, what string) (undo func() error, err error) {
	unlock, err := kernel.Lock(k.Dir, kernel.LockEndpoints, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	attached, err := attach(dp, ifname, what)
	if err != nil || attached {
		return func() error { return nil }, err
	}
	return func() error {
		unlock, err := kernel.Lock(k.Dir, kernel.LockEndpoints, true)
		if err != nil {
			return err
		}
		defer unlock()
		var e bpf.XdplaneEndpoint
		switch err := k.Maps.Endpoints.Lookup(ifindex, &e); {
		case err == nil:
			return nil // another Manager's endpoint now
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return fmt.Errorf("read endpoints: %w", err)
		}
		return dp.Detach(ifname)
	}, nil
}

// Join attaches the tc programs to ifname as Attach does and changes its
// entry with f as Update does, in one step under the "endpoints" lock. If
// the entry cannot be written, what Join attached is detached again.
func Join(k *kernel.Handle, dp *datapath.Datapath, ifname string, ifindex uint32, what string, f func(e *bpf.XdplaneEndpoint)) error {
	unlock, err := kernel.Lock(k.Dir, kernel.LockEndpoints, true)
	if err != nil {
		return err
	}
	defer unlock()
	attached, err := attach(dp, ifname, what)
	if err != nil {
		return err
	}
	if err := update(k, ifindex, f); err != nil {
		if !attached {
			err = errors.Join(err, dp.Detach(ifname))
		}
		return fmt.Errorf("endpoint %s: %w", ifname, err)
	}
	return nil
}

// attach attaches the tc programs to ifname, and reports whether they
// were attached before.
func attach(dp *datapath.Datapath, ifname, what string) (attached bool, err error) {
	hook, attached, err := dp.AttachedHook(ifname)
	if err != nil {
		return false, fmt.Errorf("endpoint %s: %w", ifname, err)
	}
	if attached && hook != datapath.HookTC {
		return false, verr.Named(ifname, verr.Invalid("interface", ifname, "xdplane is attached there at "+hook.String()+"; "+what+" needs tc, which also load-balances: detach it first"))
	}
	// Attach again even where attached: it moves the interface to this
	// datapath's programs.
	if err := dp.Attach(ifname, datapath.AttachOptions{Hook: datapath.HookTC}); err != nil {
		return false, fmt.Errorf("endpoint %s: %w", ifname, err)
	}
	return attached, nil
}

// Ifindex returns the index of the interface ifname; an interface that is
// not there is a ValidationError wrapping datapath.ErrNotFound.
func Ifindex(ifname string) (uint32, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return 0, &datapath.ValidationError{Endpoint: ifname, Field: "interface", Value: ifname, Reason: err.Error(), Err: datapath.ErrNotFound}
	}
	return uint32(ifc.Index), nil
}

// RefuseOtherNetNS fails with datapath.ErrNetNS when an interface index
// that this network namespace cannot see is attached in another one: the
// Manager was made in the wrong namespace, and deleting the state of those
// interfaces as stale would strip live pods of it. An index that is gone
// from this namespace, and that nothing holds attached elsewhere, is
// stale.
func RefuseOtherNetNS(dp *datapath.Datapath, gone []uint32) error {
	if len(gone) == 0 {
		return nil
	}
	atts, err := dp.Attachments()
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return fmt.Errorf("identify network namespace: %w", err)
	}
	for _, a := range atts {
		if a.NetNS != st.Ino && slices.Contains(gone, uint32(a.Ifindex)) {
			return fmt.Errorf("%w: the endpoint on interface index %d is attached in network namespace %d, and this "+
				"thread runs in %d: make the Manager where the pods' host-side interfaces are", datapath.ErrNetNS, a.Ifindex, a.NetNS, st.Ino)
		}
	}
	return nil
}
