package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

func init() {
	kernel.Register(func(dp any) *kernel.Handle { return &dp.(*Datapath).k }, ErrBusy)
}

// DefaultDir is where Open pins state when Options.Dir is empty.
const DefaultDir = "/sys/fs/bpf/xdplane"

// Default limits, used for every zero field of Limits when nothing is
// pinned yet.
const (
	DefaultMaxServices     = 65536
	DefaultMaxBackends     = 262144
	DefaultMaxBackendSlots = 262144
	DefaultConntrackSize   = 131072
	DefaultAffinitySize    = 65536
	DefaultMaxSourceRanges = 65536

	DefaultMaxEndpoints         = 4096
	DefaultMaxPolicyPrefixes    = 1 << 20
	DefaultMaxPolicyPorts       = 65536
	DefaultPolicyConntrackSize  = 131072
	DefaultMaxPrefilterPrefixes = 1 << 21
)

// Limits size the datapath's maps. They are fixed when the maps are first
// created; a later Open adopts what is pinned.
type Limits struct {
	// MaxServices is how many frontends the datapath holds. Optional.
	// Default: what is pinned, else DefaultMaxServices.
	MaxServices uint32
	// MaxBackends is how many backends all services hold together.
	// Optional. Default: what is pinned, else DefaultMaxBackends.
	MaxBackends uint32
	// MaxBackendSlots is the sum over all services of their backends'
	// weights. Optional. Default: what is pinned, else
	// DefaultMaxBackendSlots.
	MaxBackendSlots uint32
	// ConntrackSize is the number of conntrack entries; each load-balanced
	// flow takes two. The least recently used are evicted when it is full.
	// Optional. Default: what is pinned, else DefaultConntrackSize.
	ConntrackSize uint32
	// AffinitySize is the number of (client, service) pairs session
	// affinity remembers; the least recently used are forgotten first.
	// Optional. Default: what is pinned, else DefaultAffinitySize.
	AffinitySize uint32
	// MaxSourceRanges is how many source prefixes all services hold
	// together. Optional. Default: what is pinned, else
	// DefaultMaxSourceRanges.
	MaxSourceRanges uint32

	// MaxEndpoints is how many endpoints (pod interfaces) network policy
	// and bandwidth limits hold together. Optional. Default: what is
	// pinned, else DefaultMaxEndpoints.
	MaxEndpoints uint32
	// MaxPolicyPrefixes is how many peer prefixes all endpoints' policies
	// hold together, counting both rule sets while one replaces the
	// other. Optional. Default: what is pinned, else
	// DefaultMaxPolicyPrefixes.
	MaxPolicyPrefixes uint32
	// MaxPolicyPorts is how many protocol and port-block entries the
	// policies' distinct rulesets hold together. Optional. Default: what
	// is pinned, else DefaultMaxPolicyPorts.
	MaxPolicyPorts uint32
	// PolicyConntrackSize is the number of flows network policy
	// remembers (two entries each) so that their later packets and
	// replies pass. Optional. Default: what is pinned, else
	// DefaultPolicyConntrackSize.
	PolicyConntrackSize uint32
	// MaxPrefilterPrefixes is the size of the node-wide XDP deny list.
	// Optional. Default: what is pinned, else DefaultMaxPrefilterPrefixes.
	MaxPrefilterPrefixes uint32
}

// Options configure Open. The zero value is ready to use.
type Options struct {
	// Dir is the bpffs directory that holds the pinned maps and links.
	// A bpffs is mounted if the directory is not on one. Optional.
	// Default: DefaultDir.
	Dir string
	// Limits size the maps. Optional; see Limits for the defaults.
	Limits Limits
	// EventSample makes every EventSample-th dropped packet, per CPU, a
	// drop event (see Datapath.Events). Optional. Default: 1, every drop.
	// It is fixed when the programs load.
	EventSample uint32
	// Conntrack are the load balancer's conntrack idle timeouts, fixed
	// when the programs load. Optional; see ConntrackTimeouts for the
	// defaults.
	Conntrack ConntrackTimeouts
}

// Datapath is a handle on xdplane's programs and maps in the kernel. The
// kernel objects outlive it: Close releases the handle and leaves every
// attached program running with its maps; Remove tears them down.
//
// A Datapath is safe for concurrent use.
type Datapath struct {
	limits Limits
	maps   bpf.XdplaneMaps
	// k holds the pin directory, the maps and the programs (nil when
	// opened with OpenPinned): what the feature packages reach through
	// package kernel.
	k kernel.Handle

	mu sync.Mutex // serialises attach, detach and upgrade
}

// maxLimit bounds every limit: far above any real need, and low enough
// that no map size overflows.
const maxLimit = 1 << 26

func (l Limits) validate() error {
	for name, v := range map[string]uint32{
		"MaxServices": l.MaxServices, "MaxBackends": l.MaxBackends,
		"MaxBackendSlots": l.MaxBackendSlots, "ConntrackSize": l.ConntrackSize, "AffinitySize": l.AffinitySize,
		"MaxSourceRanges": l.MaxSourceRanges, "MaxEndpoints": l.MaxEndpoints,
		"MaxPolicyPrefixes": l.MaxPolicyPrefixes, "MaxPolicyPorts": l.MaxPolicyPorts,
		"PolicyConntrackSize": l.PolicyConntrackSize, "MaxPrefilterPrefixes": l.MaxPrefilterPrefixes,
	} {
		if v > maxLimit {
			return fmt.Errorf("%w: Limits.%s %d is above the most xdplane supports, %d", ErrInvalid, name, v, maxLimit)
		}
	}
	return nil
}

// limitFields lists the maps whose size a Limits field sets.
func limitFields(l *Limits) map[string]*uint32 {
	return map[string]*uint32{
		bpf.XdplaneMapServices:       &l.MaxServices,
		bpf.XdplaneMapBackends:       &l.MaxBackends,
		bpf.XdplaneMapBackendSlots:   &l.MaxBackendSlots,
		bpf.XdplaneMapRevnat:         &l.MaxServices,
		bpf.XdplaneMapMaglev:         &l.MaxServices,
		bpf.XdplaneMapConntrack:      &l.ConntrackSize,
		bpf.XdplaneMapAffinity:       &l.AffinitySize,
		bpf.XdplaneMapSourceRanges:   &l.MaxSourceRanges,
		bpf.XdplaneMapVips:           &l.MaxServices,
		bpf.XdplaneMapEndpoints:      &l.MaxEndpoints,
		bpf.XdplaneMapPolicyPeers:    &l.MaxPolicyPrefixes,
		bpf.XdplaneMapPolicyPeerHash: &l.MaxPolicyPrefixes,
		bpf.XdplaneMapPolicyPorts:    &l.MaxPolicyPorts,
		bpf.XdplaneMapPolicyPortHash: &l.MaxPolicyPorts,
		bpf.XdplaneMapPolicyCt:       &l.PolicyConntrackSize,
		bpf.XdplaneMapPrefilter:      &l.MaxPrefilterPrefixes,
	}
}

// Open loads xdplane's programs and pins their maps under opts.Dir,
// reusing maps already pinned there, so services and conntrack survive a
// restart of the process. Attachments made by an earlier process stay in
// place and keep running the programs they had; Attach or Upgrade moves
// them to the programs this call loaded.
//
// Open and Attach need CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and
// nothing else (measured on Linux 6.18; root has them all): CAP_BPF for
// the bpf() syscall, CAP_PERFMON for the verifier to accept the programs'
// pointer arithmetic on packets, CAP_NET_ADMIN to load and attach XDP and
// tc programs. CAP_SYS_ADMIN stands in for any of the three, as the kernel
// allows, except that a cls_bpf filter (ModeTCLegacy) needs CAP_NET_ADMIN
// itself. Open also needs CAP_SYS_ADMIN when it has to mount a bpffs.
// Open checks the capabilities first and fails with an error wrapping
// ErrPermission that names each one missing.
//
// The pin directory must be safe from other users; see ErrUnsafeDir. A
// bpffs Open mounts has mode 0700.
//
// An Open that fails leaves nothing it made: maps it pinned in this call
// are unpinned again, directories it made are removed and a bpffs it
// mounted is unmounted. Pins that were there before it stay untouched.
func Open(opts Options) (_ *Datapath, err error) {
	if err := opts.Limits.validate(); err != nil {
		return nil, err
	}
	timeouts, err := opts.Conntrack.resolve()
	if err != nil {
		return nil, err
	}
	if err := checkCaps("Open", openCaps); err != nil {
		return nil, err
	}
	if err := probe(); err != nil {
		return nil, err
	}
	dir, err := cleanDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	undo, err := ensureBPFFS(dir)
	if err != nil {
		return nil, err
	}
	var pinned, fresh map[string]*ebpf.Map // all maps, and those this call pinned
	defer func() {
		if err != nil {
			unpin(dir, fresh)
			undo()
		}
		for _, m := range pinned {
			m.Close() // the Datapath holds clones
		}
	}()
	// Again: the directory exists now, made by this call or not.
	if err := checkPinDir(dir); err != nil {
		return nil, err
	}

	spec, err := bpf.LoadXdplane()
	if err != nil {
		return nil, fmt.Errorf("load object: %w", err)
	}
	limits, err := resolveLimits(dir, opts.Limits)
	if err != nil {
		return nil, err
	}
	sizes := limitFields(&limits)
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = *n
	}
	// Backend ids index backend_stats directly; id 0 is never used.
	spec.Maps[bpf.XdplaneMapBackendStats].MaxEntries = limits.MaxBackends + 1
	// Endpoint ids too, twice: one counter per direction.
	spec.Maps[bpf.XdplaneMapPolicyStats].MaxEntries = 2 * (limits.MaxEndpoints + 1)
	// Policy ids: two an endpoint, twice while one replaces the other.
	spec.Maps[bpf.XdplaneMapPolicyLens].MaxEntries = 4*limits.MaxEndpoints + 16
	// A bandwidth limit an endpoint and direction.
	spec.Maps[bpf.XdplaneMapBandwidth].MaxEntries = 2 * limits.MaxEndpoints
	spec.Maps[bpf.XdplaneMapBwStats].MaxEntries = 2 * limits.MaxEndpoints
	sample := opts.EventSample
	if sample == 0 {
		sample = 1
	}
	if err := spec.Variables[bpf.XdplaneVarEventSample].Set(sample); err != nil {
		return nil, fmt.Errorf("set event sampling: %w", err)
	}
	if err := timeouts.kernel().Set(spec); err != nil {
		return nil, err
	}

	pinned, fresh, err = pinMaps(spec, dir)
	if err != nil {
		return nil, err
	}
	var objs bpf.XdplaneObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: pinned})
	if err != nil {
		return nil, fmt.Errorf("load programs: %w", privilegeError("load the programs", openCaps, err))
	}
	d := newDatapath(dir, limits, objs.XdplaneMaps, &objs.XdplanePrograms)
	d.k.Timeouts = timeouts.kernel()
	return d, nil
}

// pinMaps opens every map the object pins by name in dir, creating and
// pinning those that are not there, and tells which it pinned. Loading
// the maps before the programs, one by one, lets a failed Open unpin
// exactly what it made. The caller closes all, fresh included, also on
// error.
func pinMaps(spec *ebpf.CollectionSpec, dir string) (all, fresh map[string]*ebpf.Map, err error) {
	names := make([]string, 0, len(spec.Maps))
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	all = make(map[string]*ebpf.Map, len(names))
	fresh = make(map[string]*ebpf.Map)
	for _, name := range names {
		_, statErr := os.Lstat(filepath.Join(dir, name))
		m, err := ebpf.NewMapWithOptions(spec.Maps[name], ebpf.MapOptions{PinPath: dir})
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return all, fresh, fmt.Errorf("%w: map %s: %w (remove %s to start afresh)", ErrIncompatible, name, err, dir)
		}
		if err != nil {
			return all, fresh, fmt.Errorf("map %s: %w", name, privilegeError("create map "+name, openCaps, err))
		}
		all[name] = m
		if errors.Is(statErr, os.ErrNotExist) {
			fresh[name] = m
		}
	}
	return all, fresh, nil
}

// unpin removes the pins of fresh, the maps a failing Open pinned, where
// the pin still holds that very map.
func unpin(dir string, fresh map[string]*ebpf.Map) {
	for name, m := range fresh {
		path := filepath.Join(dir, name)
		if samePinnedMap(path, m) {
			_ = os.Remove(path)
		}
	}
}

func samePinnedMap(path string, m *ebpf.Map) bool {
	p, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return false
	}
	defer p.Close()
	a, errA := m.Info()
	b, errB := p.Info()
	if errA != nil || errB != nil {
		return false
	}
	idA, okA := a.ID()
	idB, okB := b.ID()
	return okA && okB && idA == idB
}

// OpenPinned opens the maps an earlier Open pinned in dir, without loading
// programs or creating anything: for tools that only read state. Attach and
// Upgrade return ErrNoPrograms on such a Datapath. An empty dir means
// DefaultDir. OpenPinned needs CAP_BPF (or CAP_SYS_ADMIN), and refuses a
// directory other users could change (ErrUnsafeDir).
func OpenPinned(dir string) (*Datapath, error) {
	dir, err := cleanDir(dir)
	if err != nil {
		return nil, err
	}
	spec, err := bpf.LoadXdplane()
	if err != nil {
		return nil, fmt.Errorf("load object: %w", err)
	}
	pinned := make(map[string]*ebpf.Map, len(spec.Maps))
	defer func() {
		for _, m := range pinned {
			m.Close()
		}
	}()
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue // .rodata: the loader's settings, no state
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s: map %s is missing", ErrNotPinned, dir, name)
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name,
				privilegeError("open pinned map "+name, []capability{capBPF}, err))
		}
		pinned[name] = m
		ms.MaxEntries = m.MaxEntries() // the sizes are the pinned datapath's
	}

	// Assigning only maps loads no program; the replacements are cloned.
	var maps bpf.XdplaneMaps
	err = spec.LoadAndAssign(&maps, &ebpf.CollectionOptions{MapReplacements: pinned})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("%w: %w", ErrIncompatible, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned maps: %w", err)
	}
	limits := Limits{
		MaxServices:     maps.Services.MaxEntries(),
		MaxBackends:     maps.Backends.MaxEntries(),
		MaxBackendSlots: maps.BackendSlots.MaxEntries(),
		ConntrackSize:   maps.Conntrack.MaxEntries(),
		AffinitySize:    maps.Affinity.MaxEntries(),
		MaxSourceRanges: maps.SourceRanges.MaxEntries(),

		MaxEndpoints:         maps.Endpoints.MaxEntries(),
		MaxPolicyPrefixes:    maps.PolicyPeers.MaxEntries(),
		MaxPolicyPorts:       maps.PolicyPorts.MaxEntries(),
		PolicyConntrackSize:  maps.PolicyCt.MaxEntries(),
		MaxPrefilterPrefixes: maps.Prefilter.MaxEntries(),
	}
	return newDatapath(dir, limits, maps, nil), nil
}

func newDatapath(dir string, limits Limits, maps bpf.XdplaneMaps, progs *bpf.XdplanePrograms) *Datapath {
	d := &Datapath{limits: limits, maps: maps}
	d.k = kernel.Handle{Dir: dir, Maps: &d.maps, Programs: progs}
	return d
}

// cleanDir makes dir absolute (DefaultDir if empty) and checks that it is
// safe from other users (checkPinDir): Open, OpenPinned and Remove all
// start here, so each refuses an unsafe directory before changing
// anything.
func cleanDir(dir string) (string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w: dir %q: %w", ErrInvalid, dir, err)
	}
	if err := checkPinDir(abs); err != nil {
		return "", err
	}
	return abs, nil
}

// resolveLimits fills every zero limit from the pinned map, else from the
// default.
func resolveLimits(dir string, want Limits) (Limits, error) {
	defaults := Limits{
		MaxServices:     DefaultMaxServices,
		MaxBackends:     DefaultMaxBackends,
		MaxBackendSlots: DefaultMaxBackendSlots,
		ConntrackSize:   DefaultConntrackSize,
		AffinitySize:    DefaultAffinitySize,
		MaxSourceRanges: DefaultMaxSourceRanges,

		MaxEndpoints:         DefaultMaxEndpoints,
		MaxPolicyPrefixes:    DefaultMaxPolicyPrefixes,
		MaxPolicyPorts:       DefaultMaxPolicyPorts,
		PolicyConntrackSize:  DefaultPolicyConntrackSize,
		MaxPrefilterPrefixes: DefaultMaxPrefilterPrefixes,
	}
	got := want
	fields := limitFields(&got)
	defs := limitFields(&defaults)
	for name, p := range fields {
		if *p != 0 {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err == nil {
			*p = m.MaxEntries()
			m.Close()
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return Limits{}, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		if *p == 0 {
			*p = *defs[name]
		}
	}
	return got, nil
}

// feature is a kernel capability the datapath cannot work without.
type feature struct {
	name  string
	probe func() error
}

var required = []feature{
	{"XDP programs", func() error { return features.HaveProgramType(ebpf.XDP) }},
	{"tc (sched_cls) programs", func() error { return features.HaveProgramType(ebpf.SchedCLS) }},
	{"hash maps", func() error { return features.HaveMapType(ebpf.Hash) }},
	{"LRU hash maps", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	{"per-CPU array maps", func() error { return features.HaveMapType(ebpf.PerCPUArray) }},
	{"LPM trie maps", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
	{"ring buffer maps", func() error { return features.HaveMapType(ebpf.RingBuf) }},
}

// Features that only some attach modes need, named as errors name them.
// They are not probed up front: Open must work on a kernel that lacks
// one, for the modes that do not need it. Attach reports them instead,
// through missingFeature, when cilium/ebpf finds them missing.
const (
	featureXDPLink = "XDP links (Linux 5.9)"
	featureTCX     = "TCX (Linux 6.6)"
)

// missingFeature wraps err in ErrNotSupported, naming feature, if err says
// the kernel lacks something (it wraps ebpf.ErrNotSupported); any other
// error, nil included, is returned as it is.
func missingFeature(err error, feature string) error {
	if errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ErrNotSupported) {
		return fmt.Errorf("%w: %s: %w", ErrNotSupported, feature, err)
	}
	return err
}

// checkFeatures returns an error wrapping ErrNotSupported that names the
// first missing feature. A probe that fails for another reason (no
// privilege, no memory) is reported as it is, not as a missing feature.
func checkFeatures(fs []feature) error {
	for _, f := range fs {
		err := f.probe()
		if errors.Is(err, ebpf.ErrNotSupported) {
			return missingFeature(err, f.name)
		}
		if err != nil {
			return fmt.Errorf("probe for %s: %w", f.name, err)
		}
	}
	return nil
}

var (
	probeMu  sync.Mutex
	probeErr error
	probed   bool
)

// probe checks the kernel features every datapath needs. The answer is
// kept once it is final: the features are there, or one is missing.
// Other failures are tried again on the next call.
func probe() error {
	probeMu.Lock()
	defer probeMu.Unlock()
	if probed {
		return probeErr
	}
	err := checkFeatures(required)
	if err == nil || errors.Is(err, ErrNotSupported) {
		probed, probeErr = true, err
	}
	return err
}

// Dir returns the bpffs directory holding this datapath's pins.
func (d *Datapath) Dir() string { return d.k.Dir }

// Limits returns the sizes of the maps as they are in the kernel.
func (d *Datapath) Limits() Limits { return d.limits }

// Close releases the file descriptors this handle holds. Programs stay
// attached and maps stay pinned: the datapath keeps forwarding. Close on a
// nil Datapath does nothing.
func (d *Datapath) Close() error {
	if d == nil {
		return nil
	}
	var errs []error
	if d.k.Programs != nil {
		errs = append(errs, d.k.Programs.Close())
	}
	errs = append(errs, d.maps.Close())
	return errors.Join(errs...)
}

// mapNames lists every map the object pins.
func mapNames() ([]string, error) {
	spec, err := bpf.LoadXdplane()
	if err != nil {
		return nil, err
	}
	var names []string
	for name, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	return names, nil
}
