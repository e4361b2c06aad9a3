package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	_ "unsafe" // go:linkname

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
	"k8s.io/klog/v2"
	kubeproxyconfig "k8s.io/kubernetes/pkg/proxy/apis/config"
	"k8s.io/kubernetes/pkg/proxy/iptables"
	"k8s.io/kubernetes/pkg/proxy/nftables"
	proxyutil "k8s.io/kubernetes/pkg/proxy/util"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
)

// The implementations measured. "none" programs nothing: the client
// reaches the endpoints' addresses directly, the baseline of the same
// traffic with no service rules at all.
const (
	implNone           = "none"
	implIPTablesLegacy = "iptables-legacy"
	implIPTablesNFT    = "iptables-nft"
	implNFTables       = "nftables"
	implXDPlane        = "xdplane"
)

var allImpls = []string{implNone, implIPTablesLegacy, implIPTablesNFT, implNFTables, implXDPlane}

// workerResult is what a worker reports once it has programmed the
// services. Durations are in seconds.
type workerResult struct {
	// Backend is what the implementation runs on, as its tools say
	// (iptables --version, nft --version), or xdplane's attachments.
	Backend string `json:"backend"`
	// FullSync programs all services into an empty node.
	FullSync float64 `json:"full_sync"`
	// AddService programs one more service, with its endpoints.
	AddService float64 `json:"add_service"`
	// EndpointChange moves one endpoint of one service.
	EndpointChange float64 `json:"endpoint_change"`
	// SyncEndpointChange (xdplane only) makes the same change through
	// Sync of the whole desired set, as an agent reconciling state does.
	SyncEndpointChange float64 `json:"sync_endpoint_change,omitempty"`
	// Order lists service indices in the order packets meet their rules,
	// where that order exists (iptables' KUBE-SERVICES chain); empty
	// where lookup is by hash.
	Order []int `json:"order,omitempty"`
	// MapBytes is the kernel memory of xdplane's maps (memlock).
	MapBytes uint64 `json:"map_bytes,omitempty"`
}

// The proxiers' sync function, called directly so that one call is one
// timed sync. Their exported Sync only queues a run on the proxier's
// background loop, which coalesces changes and reports nothing back.
//
//go:linkname iptablesSyncProxyRules k8s.io/kubernetes/pkg/proxy/iptables.(*Proxier).syncProxyRules
func iptablesSyncProxyRules(p *iptables.Proxier) error

//go:linkname nftablesSyncProxyRules k8s.io/kubernetes/pkg/proxy/nftables.(*Proxier).syncProxyRules
func nftablesSyncProxyRules(p *nftables.Proxier) error

// proxier is what the benchmark needs of a kube-proxy Proxier.
type proxier interface {
	OnServiceAdd(*v1.Service)
	OnServiceSynced()
	OnEndpointSliceAdd(*discovery.EndpointSlice)
	OnEndpointSliceUpdate(old, slice *discovery.EndpointSlice)
	OnEndpointSlicesSynced()
}

// workerMain runs in the node namespace (under `ip netns exec`): it
// programs n services with impl, prints a workerResult as one JSON line,
// keeps the rules in place until its standard input closes, then removes
// what it made.
func workerMain(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	impl := fs.String("impl", "", "implementation: "+strings.Join(allImpls[1:], ", "))
	n := fs.Int("n", 10, "services")
	seed := fs.Int("change", 0, "which endpoint move this is, to pick a fresh address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > maxServices {
		return fmt.Errorf("-n %d: want 1 to %d", *n, maxServices)
	}
	services := make([]benchService, *n+1) // the last is the one added
	for i := range services {
		services[i] = newBenchService(i)
	}
	// The service whose endpoint moves: the middle one, and a TCP one at
	// every N (moving a UDP endpoint makes kube-proxy also clear its
	// conntrack entries, a different cost).
	changed := *n / 2 &^ 1

	var (
		res     workerResult
		cleanup func()
		err     error
	)
	switch *impl {
	case implIPTablesLegacy, implIPTablesNFT, implNFTables:
		res, err = runKubeProxy(*impl, services, changed, *seed)
	case implXDPlane:
		res, cleanup, err = runXDPlane(services, changed, *seed)
	default:
		return fmt.Errorf("-impl %q: want one of %s", *impl, strings.Join(allImpls[1:], ", "))
	}
	if err != nil {
		if cleanup != nil {
			cleanup()
		}
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // hold the rules until told
	if cleanup != nil {
		cleanup()
	}
	return nil
}

// useIPTablesBackend points "iptables" and its -save and -restore at one
// backend for this process, as update-alternatives would for the node.
func useIPTablesBackend(backend string) (string, error) {
	dir, err := os.MkdirTemp("", "kpbench-iptables-")
	if err != nil {
		return "", err
	}
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		base, suffix, _ := strings.Cut(tool, "-")
		target := "/usr/sbin/" + base + "-" + backend
		if suffix != "" {
			target += "-" + suffix
		}
		if err := os.Symlink(target, filepath.Join(dir, tool)); err != nil {
			return dir, err
		}
	}
	return dir, os.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return name + ": " + err.Error()
	}
	return strings.TrimSpace(string(out))
}

func runKubeProxy(impl string, services []benchService, changed, move int) (workerResult, error) {
	var res workerResult
	klog.SetOutput(os.Stderr)
	ctx := context.Background()
	cfg := &kubeproxyconfig.KubeProxyConfiguration{
		// Nothing syncs on its own: each sync below is called and timed.
		SyncPeriod:    metav1.Duration{Duration: time.Hour},
		MinSyncPeriod: metav1.Duration{Duration: 0},
		IPTables: kubeproxyconfig.KubeProxyIPTablesConfiguration{
			MasqueradeBit:      ptr(int32(14)),
			LocalhostNodePorts: ptr(false),
		},
		NFTables: kubeproxyconfig.KubeProxyNFTablesConfiguration{MasqueradeBit: ptr(int32(14))},
	}
	nodeIP := net.IP(nodeCliAddr.AsSlice())
	recorder := &events.FakeRecorder{}
	detector := proxyutil.NewNoOpLocalDetector()

	var (
		p    proxier
		sync func() error
	)
	switch impl {
	case implIPTablesLegacy, implIPTablesNFT:
		dir, err := useIPTablesBackend(strings.TrimPrefix(impl, "iptables-"))
		if dir != "" {
			defer os.RemoveAll(dir)
		}
		if err != nil {
			return res, err
		}
		res.Backend = toolVersion("iptables", "--version")
		ipt := utiliptables.New(utiliptables.ProtocolIPv4)
		ip, err := iptables.NewProxier(ctx, cfg, v1.IPv4Protocol, ipt, utilsysctl.New(), detector,
			"bench-node", nodeIP, recorder, nil, false)
		if err != nil {
			return res, fmt.Errorf("kube-proxy %s: %w", impl, err)
		}
		p, sync = ip, func() error { return iptablesSyncProxyRules(ip) }
	case implNFTables:
		res.Backend = toolVersion("nft", "--version")
		np, err := nftables.NewProxier(ctx, cfg, v1.IPv4Protocol, detector, "bench-node", nodeIP, recorder, nil, false)
		if err != nil {
			return res, fmt.Errorf("kube-proxy nftables: %w", err)
		}
		p, sync = np, func() error { return nftablesSyncProxyRules(np) }
	}
	n := len(services) - 1

	// Full sync: everything is known before the first sync, as when
	// kube-proxy starts on a node of an existing cluster.
	for _, s := range services[:n] {
		p.OnServiceAdd(s.kubeService())
		p.OnEndpointSliceAdd(s.kubeSlice())
	}
	// The second of these calls runs the full sync itself, as it does in
	// kube-proxy once its informers have synced; it reports no error, so
	// the rules are counted after it.
	p.OnServiceSynced()
	d, _ := timed(func() error { p.OnEndpointSlicesSynced(); return nil })
	res.FullSync = d
	if got, err := programmedServices(impl); err != nil {
		return res, fmt.Errorf("after the full sync: %w", err)
	} else if got != n {
		return res, fmt.Errorf("the full sync programmed %d services, want %d", got, n)
	}

	// One more service with its endpoints.
	added := services[n]
	d, err := timed(func() error {
		p.OnServiceAdd(added.kubeService())
		p.OnEndpointSliceAdd(added.kubeSlice())
		return sync()
	})
	if err != nil {
		return res, fmt.Errorf("add a service: %w", err)
	}
	res.AddService = d

	// One endpoint moves.
	old := services[changed]
	d, err = timed(func() error {
		p.OnEndpointSliceUpdate(old.kubeSlice(), old.withChangedEndpoint(move).kubeSlice())
		return sync()
	})
	if err != nil {
		return res, fmt.Errorf("endpoint change: %w", err)
	}
	res.EndpointChange = d

	if impl != implNFTables {
		order, err := kubeServicesOrder()
		if err != nil {
			return res, err
		}
		if len(order) != n+1 {
			return res, fmt.Errorf("KUBE-SERVICES holds %d cluster IPs, want %d", len(order), n+1)
		}
		res.Order = order
	} else if got, err := programmedServices(impl); err != nil {
		return res, err
	} else if got != n+1 {
		return res, fmt.Errorf("kube-proxy's service-ips map holds %d services, want %d", got, n+1)
	}
	return res, nil
}

// programmedServices counts the cluster IPs kube-proxy has rules for: the
// KUBE-SERVICES rules in iptables, the service-ips map's elements in
// nftables.
func programmedServices(impl string) (int, error) {
	if impl != implNFTables {
		order, err := kubeServicesOrder()
		return len(order), err
	}
	out, err := exec.Command("nft", "-j", "list", "map", "ip", "kube-proxy", "service-ips").Output()
	if err != nil {
		return 0, fmt.Errorf("nft list map ip kube-proxy service-ips: %w", err)
	}
	return countMapElements(out)
}

// countMapElements counts the elements of the one map in `nft -j list map`
// output.
func countMapElements(js []byte) (int, error) {
	var doc struct {
		Nftables []struct {
			Map *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return 0, fmt.Errorf("nft -j output: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Map != nil {
			return len(o.Map.Elem), nil
		}
	}
	return 0, errors.New("nft -j output holds no map")
}

// kubeServicesOrder reads the nat table and lists the services in the
// order of their rules in KUBE-SERVICES, which a packet walks top down.
func kubeServicesOrder() ([]int, error) {
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save: %w", err)
	}
	return parseKubeServices(string(out))
}

// parseKubeServices picks the "-A KUBE-SERVICES -d <cluster IP>/32" rules
// out of iptables-save output and maps each cluster IP to its service.
func parseKubeServices(save string) ([]int, error) {
	var order []int
	for line := range strings.Lines(save) {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "-A" || f[1] != "KUBE-SERVICES" || f[2] != "-d" {
			continue
		}
		pfx, err := netip.ParsePrefix(f[3])
		if err != nil || pfx.Bits() != 32 {
			return nil, fmt.Errorf("KUBE-SERVICES rule %q: destination %q is no /32", strings.TrimSpace(line), f[3])
		}
		i, ok := serviceIndex(pfx.Addr())
		if !ok {
			return nil, fmt.Errorf("KUBE-SERVICES rule %q: %s is no benchmark cluster IP", strings.TrimSpace(line), pfx.Addr())
		}
		order = append(order, i)
	}
	return order, nil
}

// serviceIndex inverts newBenchService's cluster IP.
func serviceIndex(a netip.Addr) (int, bool) {
	if !serviceCIDR.Contains(a) {
		return 0, false
	}
	b, base := a.As4(), serviceCIDR.Addr().As4()
	off := int(b[2]-base[2])<<8 | int(b[3]-base[3])
	return off - 1, off >= 1
}

func runXDPlane(services []benchService, changed, move int) (workerResult, func(), error) {
	var res workerResult
	// Under `ip netns exec` this process has a mount namespace of its own:
	// a bpffs mounted here vanishes with it, so nothing can outlive the run.
	mnt, err := os.MkdirTemp("", "kpbench-bpffs-")
	if err != nil {
		return res, nil, err
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(mnt)
		return res, nil, fmt.Errorf("mount bpffs: %w", err)
	}
	dir := filepath.Join(mnt, "xdplane")
	var (
		dp  *datapath.Datapath
		mgr *lb.Manager
	)
	cleanup := func() {
		if mgr != nil {
			mgr.Close()
		}
		if dp != nil {
			dp.Close()
		}
		if err := datapath.Remove(dir); err != nil {
			fmt.Fprintln(os.Stderr, "remove xdplane:", err)
		}
		_ = unix.Unmount(mnt, 0)
		os.Remove(mnt)
	}
	fail := func(err error) (workerResult, func(), error) { return res, cleanup, err }

	dp, err = datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		return fail(err)
	}
	for _, ifname := range []string{nodeClientIf, nodeBackendIf} {
		if err := dp.Attach(ifname, datapath.AttachOptions{Hook: datapath.HookTC}); err != nil {
			return fail(err)
		}
	}
	atts, err := dp.Attachments()
	if err != nil {
		return fail(err)
	}
	var modes []string
	for _, a := range atts {
		modes = append(modes, a.Interface+" "+a.Point.String()+" "+a.Mode.String())
	}
	res.Backend = "xdplane tc hook: " + strings.Join(modes, ", ")
	mgr, err = lb.NewManager(dp)
	if err != nil {
		return fail(err)
	}
	n := len(services) - 1
	desired := make([]lb.Service, 0, n+1)
	for _, s := range services[:n] {
		desired = append(desired, s.lbService())
	}
	d, err := timed(func() error { _, err := mgr.Sync(desired); return err })
	if err != nil {
		return fail(fmt.Errorf("full sync: %w", err))
	}
	res.FullSync = d

	added := services[n].lbService()
	d, err = timed(func() error { return mgr.Upsert(added) })
	if err != nil {
		return fail(fmt.Errorf("add a service: %w", err))
	}
	res.AddService = d
	desired = append(desired, added)

	// The endpoint change, once by Upsert and once, moved back and forth,
	// by Sync of the whole set.
	moved := services[changed].withChangedEndpoint(move).lbService()
	d, err = timed(func() error { return mgr.Upsert(moved) })
	if err != nil {
		return fail(fmt.Errorf("endpoint change: %w", err))
	}
	res.EndpointChange = d
	desired[changed] = services[changed].lbService()
	if _, err := mgr.Sync(desired); err != nil {
		return fail(err)
	}
	desired[changed] = moved
	d, err = timed(func() error {
		r, err := mgr.Sync(desired)
		if err == nil && len(r.Changed) != 1 {
			err = fmt.Errorf("changed %d services, want 1", len(r.Changed))
		}
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("endpoint change by Sync: %w", err))
	}
	res.SyncEndpointChange = d
	if res.MapBytes, err = mapMemory(); err != nil {
		return fail(err)
	}
	return res, cleanup, nil
}

// mapMemory sums what the kernel charges for every BPF map this process
// holds open ("memlock" in the fd's fdinfo): the worker holds xdplane's
// maps and nothing else.
func mapMemory() (uint64, error) {
	fds, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	var total uint64
	for _, fd := range fds {
		raw, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		id, memlock, isMap := "", uint64(0), false
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			v = strings.TrimSpace(v)
			switch k {
			case "map_type":
				isMap = true
			case "map_id":
				id = v
			case "memlock":
				memlock, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		if isMap && id != "" && !seen[id] {
			seen[id] = true
			total += memlock
		}
	}
	if len(seen) == 0 {
		return 0, errors.New("no BPF map open in this process")
	}
	return total, nil
}

func timed(f func() error) (float64, error) {
	start := time.Now()
	err := f()
	return time.Since(start).Seconds(), err
}

func ptr[T any](v T) *T { return &v }
