// Command xdplane is a chained CNI plugin (spec 1.0.0 and 1.1.0): after
// the plugin that made the pod's interface (ptp, bridge, ...), it puts the
// pod under xdplane's datapath. ADD attaches xdplane's tc programs to the
// pod's host-side interface from the previous result, registers the pod
// as an endpoint, and applies the network policy from the configuration
// and the bandwidth runtime capability. DEL removes all of it and
// succeeds when there is nothing left to remove. CHECK verifies the
// programs, the endpoint, its policy and its limits. GC removes what ADD
// made for attachments the runtime no longer lists. STATUS says whether
// the datapath can be used.
//
// Configuration, as a plugin of a conflist:
//
//	{
//	  "type": "xdplane",
//	  "bpffs": "/sys/fs/bpf/xdplane",                (optional; this default)
//	  "policy": {"ingress": {"isolated": true, "rules": [{"action": "allow", "peers": [{"prefix": "10.244.0.0/16"}]}]}},
//	  "capabilities": {"bandwidth": true}
//	}
//
// The policy has the fields of xdplane's policy.Policy, in JSON.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/xdplane/xdplane/bandwidth"
	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/policy"
	"golang.org/x/sys/unix"
)

// netConf is the plugin's configuration.
type netConf struct {
	types.PluginConf
	BPFFS string `json:"bpffs,omitempty"`
	// DataDir holds what ADD applied to each pod, for CHECK and DEL.
	DataDir string        `json:"dataDir,omitempty"`
	Policy  policy.Policy `json:"policy"`
	// RuntimeConfig carries the capabilities the runtime fills in.
	RuntimeConfig struct {
		Bandwidth *bandwidth.CNI `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig"`
}

// parseConf reads the configuration. With strict, the policy and the
// limits must be valid; DEL and GC read it leniently, so that a pod whose
// ADD was refused for a bad limit can still be deleted.
func parseConf(stdin []byte, strict bool) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parse the network configuration", err.Error())
	}
	if conf.BPFFS == "" {
		conf.BPFFS = datapath.DefaultDir
	}
	if conf.DataDir == "" {
		conf.DataDir = defaultDataDir
	}
	if strict {
		if err := conf.Policy.Validate(); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "policy: "+err.Error(), "")
		}
		if err := conf.bandwidth().Validate(); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "runtimeConfig.bandwidth: "+err.Error(), "")
		}
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	return conf, nil
}

func (c *netConf) bandwidth() bandwidth.Limits {
	if c.RuntimeConfig.Bandwidth == nil {
		return bandwidth.Limits{}
	}
	return c.RuntimeConfig.Bandwidth.Limits()
}

// hostSide finds the pod's host-side interface and its addresses in the
// previous result: the interface with no sandbox (the host's end of the
// veth), and the addresses of the interfaces in the pod's sandbox.
func hostSide(prev types.Result) (string, []netip.Addr, error) {
	if prev == nil {
		return "", nil, errors.New("no prevResult: xdplane is a chained plugin and runs after the one that makes the pod's interface")
	}
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return "", nil, fmt.Errorf("prevResult: %w", err)
	}
	// The host side is the interface with no sandbox; bridge also lists
	// the bridge itself, which has a sandbox neither and a MAC but is no
	// pod's: prefer the one that is a veth where the links can be read.
	var candidates []string
	for _, itf := range res.Interfaces {
		if itf.Sandbox == "" && itf.Name != "" {
			candidates = append(candidates, itf.Name)
		}
	}
	host := ""
	switch len(candidates) {
	case 0:
	case 1:
		host = candidates[0]
	default:
		for _, name := range candidates {
			if l, err := netlink.LinkByName(name); err == nil && l.Type() == "veth" {
				if host != "" {
					return "", nil, fmt.Errorf("prevResult names two host-side veths, %s and %s", host, name)
				}
				host = name
			}
		}
		if host == "" {
			return "", nil, fmt.Errorf("prevResult names %d interfaces outside the pod (%v) and none is a veth here", len(candidates), candidates)
		}
	}
	if host == "" {
		return "", nil, errors.New("prevResult names no host-side interface (one with no sandbox): chain xdplane after a plugin that makes a veth, such as ptp or bridge")
	}
	var addrs []netip.Addr
	for _, ip := range res.IPs {
		if ip.Interface != nil && (*ip.Interface < 0 || *ip.Interface >= len(res.Interfaces) || res.Interfaces[*ip.Interface].Sandbox == "") {
			continue // not the pod's
		}
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	return host, addrs, nil
}

// session is the datapath and its policy and bandwidth Managers, held
// under a lock across processes: a runtime may ADD and DEL several pods
// at once.
type session struct {
	dp     *datapath.Datapath
	pm     *policy.Manager
	bm     *bandwidth.Manager
	unlock func()
}

func open(bpffs string) (*session, error) {
	unlock, err := lockFile(bpffs)
	if err != nil {
		return nil, err
	}
	dp, err := datapath.Open(datapath.Options{Dir: bpffs})
	if err != nil {
		unlock()
		return nil, err
	}
	// Another writer of the policy or the limits (a node agent) may hold
	// its lock for a moment: wait a little for it.
	pm, err := waitFor(policy.NewManager, dp)
	if err != nil {
		dp.Close()
		unlock()
		return nil, err
	}
	bm, err := waitFor(bandwidth.NewManager, dp)
	if err != nil {
		pm.Close()
		dp.Close()
		unlock()
		return nil, err
	}
	return &session{dp: dp, pm: pm, bm: bm, unlock: unlock}, nil
}

// waitFor makes a Manager with newManager, trying again for up to 10 s
// while another holds the datapath's lock (ErrBusy).
func waitFor[M any](newManager func(*datapath.Datapath) (M, error), dp *datapath.Datapath) (M, error) {
	for deadline := time.Now().Add(10 * time.Second); ; {
		m, err := newManager(dp)
		if !errors.Is(err, datapath.ErrBusy) || time.Now().After(deadline) {
			return m, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *session) close() {
	s.bm.Close()
	s.pm.Close()
	s.dp.Close()
	s.unlock()
}

// lockFile serialises this plugin's invocations for one pin directory
// (opening the datapath the first time creates and pins its maps).
func lockFile(bpffs string) (func(), error) {
	path := filepath.Join("/run", "xdplane-cni-"+sanitize(bpffs)+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

func sanitize(p string) string {
	b := []byte(filepath.Clean(p))
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

const defaultDataDir = "/var/lib/cni/xdplane"

// record is what ADD applied to a pod, kept in the data directory: the
// configuration it applied and the endpoint's fingerprint as ADD left it.
// CHECK compares the datapath's state with it, which catches any change of
// the endpoint, its policy or its limits since.
type record struct {
	ContainerID   string           `json:"containerID"`
	IfName        string           `json:"ifname"`
	HostInterface string           `json:"hostInterface"`
	NetNS         string           `json:"netns"`
	Fingerprint   string           `json:"fingerprint"`
	Policy        policy.Policy    `json:"policy"`
	Bandwidth     bandwidth.Limits `json:"bandwidth"`
}

func recordPath(conf *netConf, args *skel.CmdArgs) string {
	return filepath.Join(conf.DataDir, conf.Name, args.ContainerID+"-"+args.IfName+".json")
}

func writeRecord(path string, r record) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readRecord(path string) (record, error) {
	var r record
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

// state reads what the datapath holds of the pod: its endpoint's
// fingerprint and its limits.
func state(s *session, host string) (string, bandwidth.Limits, error) {
	st, err := s.pm.Endpoint(host)
	if err != nil {
		return "", bandwidth.Limits{}, fmt.Errorf("%s is no endpoint of the datapath: %w", host, err)
	}
	bw, err := s.bm.Status(host)
	if errors.Is(err, bandwidth.ErrNotFound) {
		return st.Fingerprint, bandwidth.Limits{}, nil
	}
	return st.Fingerprint, bw.Limits, err
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	host, addrs, err := hostSide(conf.PrevResult)
	if err != nil {
		return err
	}
	s, err := open(conf.BPFFS)
	if err != nil {
		return err
	}
	defer s.close()
	err = add(s, host, addrs, args.Netns, conf)
	if err == nil {
		r := record{ContainerID: args.ContainerID, IfName: args.IfName, HostInterface: host, NetNS: args.Netns,
			Policy: conf.Policy.Normalize(), Bandwidth: conf.bandwidth()}
		if r.Fingerprint, _, err = state(s, host); err == nil {
			err = writeRecord(recordPath(conf, args), r)
		}
	}
	if err != nil {
		// Leave nothing half-done: the runtime will DEL, but may not.
		_ = remove(s, host, args.Netns)
		return err
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

func add(s *session, host string, addrs []netip.Addr, netns string, conf *netConf) error {
	if err := s.dp.Attach(host, datapath.AttachOptions{Hook: datapath.HookTC}); err != nil {
		return err
	}
	if err := s.pm.AddEndpoint(policy.Endpoint{Interface: host, Addresses: addrs}); err != nil {
		return err
	}
	if err := s.pm.SetPolicy(host, conf.Policy); err != nil {
		return err
	}
	return s.bm.Set(bandwidth.Endpoint{Interface: host, NetNS: netns}, conf.bandwidth())
}

// remove undoes add, whatever of it is there. netns is the pod's
// namespace, if known: an egress limit's queue is there.
func remove(s *session, host, netns string) error {
	var errs []error
	if err := s.bm.Remove(bandwidth.Endpoint{Interface: host, NetNS: existing(netns)}); err != nil && !errors.Is(err, bandwidth.ErrNotFound) {
		errs = append(errs, err)
	}
	if err := s.pm.RemoveEndpoint(host); err != nil && !errors.Is(err, policy.ErrNotFound) {
		errs = append(errs, err)
	}
	if err := s.dp.Detach(host); err != nil && !linkGone(host) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// linkGone reports whether the interface no longer exists (the pod and
// its veth are gone, and the programs with them).
func linkGone(name string) bool {
	_, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	path := recordPath(conf, args)
	if !pinned(conf.BPFFS) {
		// No datapath was ever made here: nothing to remove.
		_ = os.Remove(path)
		return nil
	}
	host, _, err := hostSide(conf.PrevResult)
	if err != nil {
		// No usable prevResult (a runtime that lost it): the record says.
		r, rerr := readRecord(path)
		if rerr != nil {
			return nil // nothing of this pod is left
		}
		host = r.HostInterface
	}
	s, err := open(conf.BPFFS)
	if err != nil {
		return err
	}
	defer s.close()
	if err := remove(s, host, args.Netns); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	host, _, err := hostSide(conf.PrevResult)
	if err != nil {
		return err
	}
	r, err := readRecord(recordPath(conf, args))
	if err != nil {
		return fmt.Errorf("no record of ADD for %s: %w", args.ContainerID, err)
	}
	switch {
	case r.HostInterface != host:
		return fmt.Errorf("ADD put %s under xdplane, the previous result names %s", r.HostInterface, host)
	case !reflect.DeepEqual(r.Policy, conf.Policy.Normalize()):
		return fmt.Errorf("%s: the policy ADD applied differs from the configuration's", host)
	case r.Bandwidth != conf.bandwidth():
		return fmt.Errorf("%s: ADD applied bandwidth limits %+v, the runtime asks for %+v", host, r.Bandwidth, conf.bandwidth())
	}
	s, err := open(conf.BPFFS)
	if err != nil {
		return err
	}
	defer s.close()
	hook, attached, err := s.dp.AttachedHook(host)
	if err != nil {
		return err
	}
	if !attached || hook != datapath.HookTC {
		return fmt.Errorf("%s: xdplane's tc programs are not attached", host)
	}
	fp, limits, err := state(s, host)
	if err != nil {
		return err
	}
	if fp != r.Fingerprint {
		return fmt.Errorf("%s: the datapath's endpoint %s is not the one ADD made, %s: it was added again, or its policy or limits changed since", host, fp, r.Fingerprint)
	}
	if limits != r.Bandwidth {
		return fmt.Errorf("%s: the datapath's limits %+v are not the ones ADD set, %+v: its policy or limits changed since", host, limits, r.Bandwidth)
	}
	return nil
}

// cmdGC removes what ADD made for every attachment of this network that
// the runtime no longer lists as valid (a pod whose DEL never came).
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	// Records a crash left half-written.
	tmps, _ := filepath.Glob(filepath.Join(conf.DataDir, conf.Name, "*.json.tmp"))
	for _, t := range tmps {
		_ = os.Remove(t)
	}
	if !pinned(conf.BPFFS) {
		return nil
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a] = true
	}
	paths, err := filepath.Glob(filepath.Join(conf.DataDir, conf.Name, "*.json"))
	if err != nil || len(paths) == 0 {
		return err
	}
	s, err := open(conf.BPFFS)
	if err != nil {
		return err
	}
	defer s.close()
	var errs []error
	for _, path := range paths {
		r, err := readRecord(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		if valid[types.GCAttachment{ContainerID: r.ContainerID, IfName: r.IfName}] {
			continue
		}
		if err := remove(s, r.HostInterface, r.NetNS); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cmdStatus reports whether ADD can work, without changing anything: the
// pinned datapath opens, or, before the first pod, the pin directory can
// hold one.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	if !pinned(conf.BPFFS) {
		return nil // the first ADD creates it
	}
	dp, err := datapath.OpenPinned(conf.BPFFS)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the xdplane datapath cannot be opened", err.Error())
	}
	dp.Close()
	return nil
}

// pinned reports whether a datapath is pinned in dir.
func pinned(dir string) bool {
	dp, err := datapath.OpenPinned(dir)
	if err != nil {
		return !errors.Is(err, datapath.ErrNotPinned)
	}
	dp.Close()
	return true
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.PluginSupports("1.0.0", "1.1.0"), "xdplane: network policy and bandwidth limits on xdplane's datapath")
}

// existing returns path if something is there, else "": DEL may come
// after the runtime removed the pod's namespace.
func existing(path string) string {
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}
