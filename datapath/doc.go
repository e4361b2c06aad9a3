// Package datapath loads xdplane's eBPF programs, pins their maps and
// attaches them to interfaces. It is the only package that loads or
// attaches programs; the feature packages program the maps it owns: lb
// (services), policy (network policy), bandwidth (per-pod limits) and
// prefilter (the node-wide deny list). Each takes a *Datapath; none sees
// the maps' layouts, which are xdplane's own and change between versions.
//
// # Lifetimes
//
// The kernel objects outlive the Go handle. Open loads the programs and
// pins the maps by name under a bpffs directory (DefaultDir unless
// Options.Dir says otherwise), reusing maps already pinned there, so
// services and conntrack survive a restart of the process. Attach pins its
// links beside the maps, so attachments survive too. Close releases the
// handle's file descriptors and leaves everything running. Remove detaches
// every program and deletes the pins: the one call that stops the
// datapath. It refuses (ErrBusy, naming the process) while a writer holds
// the datapath, such as an open lb, policy or bandwidth Manager in any
// process; RemoveWithOptions with Force set overrides, and Verify tells
// the writer its pins are gone.
//
// A pin is believed only while the kernel agrees: a link severed by the
// deletion of its interface, or a cls_bpf record whose filter is gone, is
// not an attachment (whatever interface took the index since), and is
// removed by Attachments (every such pin), Attach (the interface's) and
// Upgrade. xdplane programs on an interface that this datapath's pins do
// not hold (another datapath's, or one whose bpffs was unmounted under
// it) are listed by ForeignAttachments and detached by Attach.
//
//	Open ──► Attach ──► Close       (datapath keeps forwarding)
//	Open ──► Attach/Upgrade         (new programs, same maps, no gap)
//	Remove                          (detached, pins gone)
//
// # Hooks
//
// HookTC runs the load balancer at tc ingress and reverse NAT at tc egress,
// through TCX where the kernel has it and a clsact qdisc with a cls_bpf
// filter where it does not; on an interface package policy or bandwidth
// has made an endpoint, the same programs also judge and shape the
// endpoint's traffic. HookXDP
// runs the node-wide prefilter, then the load balancer and reverse NAT at
// XDP: native where the driver has it, generic XDP where it has none
// (ModeXDPNative and ModeXDPGeneric force one). Use tc on veths and
// wherever traffic may originate on the host; XDP on a physical NIC's
// receive path. Generic XDP sees locally sent packets with partial
// checksums and cannot rewrite them correctly: on an interface without
// native XDP that carries traffic generated on this host, use HookTC.
//
// Attach and Detach act on interfaces in the network namespace of the
// calling OS thread; pins record the namespace, so one Datapath may attach
// in several. Remove detaches links in any namespace, cls_bpf filters only
// in the caller's.
//
// Replies are translated at tc egress, after routing, so strict
// reverse-path filtering works with HookTC. XDP has no egress hook: with
// HookXDP, replies are translated as they arrive, and their interface needs
// rp_filter 0 or 2.
//
// # Observing
//
// Counters reads the load balancer's packet counters, DropCounters the
// drops by DropReason (network policy's and the prefilter's), and Events
// the dropped packets themselves, sampled (Options.EventSample), with
// their addresses, ports, endpoint, Direction and reason. Attachments
// lists what is attached where, with each Point's Mode and program.
//
// # Privileges and the pin directory
//
// Open and Attach need CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and no
// other capability (root has them all): CAP_PERFMON because the verifier
// allows the programs' pointer arithmetic on packets only to a loader
// that has it. CAP_SYS_ADMIN stands in for any of the three, as the
// kernel allows, except for a cls_bpf filter (ModeTCLegacy), which needs
// CAP_NET_ADMIN itself; Open needs CAP_SYS_ADMIN to mount a bpffs.
// OpenPinned needs CAP_BPF. Open checks first and returns ErrPermission
// naming what is missing; a failed Open unpins the maps it pinned.
//
// Whoever can write in the pin directory can take its locks, delete its
// pins or keep xdplane from starting, so Open, OpenPinned and Remove
// refuse (ErrUnsafeDir) a pin directory, or one xdplane keeps in it,
// that is a symbolic link, another user's, or writable by group or
// others, and a directory above it that another user than root owns or
// that group or others may write without the sticky bit. Mount the bpffs
// with -o mode=0700: one mounted without a mode is 1777, where any user
// can make the pin directory first. A bpffs Open mounts has mode 0700.
//
// # Errors
//
// The errors below are shared by every package that programs the
// datapath, which export the ones they return under the same names.
// Invalid input is refused with an error naming the field and the value:
// a *ValidationError from packages policy, bandwidth and prefilter, an
// *lb.ValidationError from lb.
//
// # Upgrades
//
// A newer process calls Open (which adopts the pinned maps if their layout
// is compatible, and fails with ErrIncompatible otherwise) and then Attach
// or Upgrade, which replace the program inside each existing link with one
// atomic update.
package datapath
