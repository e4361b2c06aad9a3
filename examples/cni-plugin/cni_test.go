package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/xdplane/xdplane/bandwidth"
	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/policy"
)

// nodeExec runs every plugin inside the node's namespace, as a container
// runtime on that node would: the plugins make the host side of each pod
// there, never in the test's own namespace.
type nodeExec struct{ ns *testutil.NS }

func (e nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns.Name, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// A plugin reports its error as JSON on stdout.
		var perr types.Error
		if json.Unmarshal(stdout.Bytes(), &perr) == nil && perr.Msg != "" {
			return nil, &perr
		}
		return nil, fmt.Errorf("%s: %w: %s", filepath.Base(pluginPath), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (nodeExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// plugins builds ours and the reference ptp and host-local plugins from
// the Go module proxy (they are tools of this module) into one directory.
func plugins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range map[string]string{
		"xdplane":    ".",
		"ptp":        "github.com/containernetworking/plugins/plugins/main/ptp",
		"bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
		"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

const podSubnet = "10.244.1.0/24"

// conflist chains ours after first, "ptp" or "bridge".
func conflist(t *testing.T, first, bpffs, ipamDir, dataDir string) *libcni.NetworkConfigList {
	t.Helper()
	extra := ""
	if first == "bridge" {
		extra = `"bridge": "xdpt0", "isGateway": true,`
	}
	raw := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "xdplane-test",
  "plugins": [
    {"type": %q, %s "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "xdplane", "bpffs": %q, "dataDir": %q,
     "policy": {"ingress": {"rules": [{"action": "deny", "ports": [{"protocol": "tcp", "port": 9999}]}]}},
     "capabilities": {"bandwidth": true}}
  ]
}`, first, extra, ipamDir, podSubnet, bpffs, dataDir)
	list, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestChainedPlugin runs the plugin the way a container runtime does:
// libcni executes the real ptp (or bridge) and host-local plugins, then
// ours, for two pods in namespaces the test made. The policy from the
// configuration and the bandwidth limit from the runtime's capability
// arguments are in force for real traffic; CHECK and STATUS pass; GC
// removes a pod the runtime no longer lists; DEL removes everything, and
// a second DEL succeeds, as does DEL with a configuration ADD would refuse.
func TestChainedPlugin(t *testing.T) {
	testutil.RequireRoot(t)
	bin := plugins(t)
	for _, first := range []string{"ptp", "bridge"} {
		t.Run(first, func(t *testing.T) { testChain(t, bin, first) })
	}
}

func testChain(t *testing.T, bin, first string) {
	g := testutil.NewGroup(t)
	node := g.NS("node")
	pods := []*testutil.NS{g.NS("pod1"), g.NS("pod2")}
	bpffs := testutil.BPFFS(t)
	t.Cleanup(func() { _ = datapath.Remove(bpffs) })
	cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, t.TempDir(), nodeExec{node})
	dataDir := t.TempDir()
	list := conflist(t, first, bpffs, t.TempDir(), dataDir)
	ctx := context.Background()

	const limit = 20_000_000 // bit/s into pod1
	rts := []*libcni.RuntimeConf{
		{ContainerID: "pod1", NetNS: pods[0].Path(), IfName: "eth0",
			CapabilityArgs: map[string]any{"bandwidth": map[string]any{"ingressRate": limit, "ingressBurst": 4294967295}}},
		{ContainerID: "pod2", NetNS: pods[1].Path(), IfName: "eth0"},
	}
	var addrs []netip.Addr
	var hosts []string
	for i, rt := range rts {
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			t.Fatalf("ADD %s: %v", rt.ContainerID, err)
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		var host string
		var podAddrs []netip.Addr
		node.MustDo(func() (err error) { // the links are the node's
			host, podAddrs, err = hostSide(r)
			return err
		})
		if len(podAddrs) != 1 {
			t.Fatalf("ADD %s: result %v: %v", rt.ContainerID, r, err)
		}
		hosts, addrs = append(hosts, host), append(addrs, podAddrs[0])
		t.Logf("pod%d: %s on host interface %s", i+1, podAddrs[0], host)
		testutil.ServeTCP(t, pods[i], netip.AddrPortFrom(podAddrs[0], 8080), fmt.Sprintf("pod%d", i+1))
		testutil.ServeTCP(t, pods[i], netip.AddrPortFrom(podAddrs[0], 9999), fmt.Sprintf("pod%d-blocked", i+1))
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			t.Errorf("CHECK %s: %v", rt.ContainerID, err)
		}
	}
	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS: %v", err)
	}

	// The policy: port 9999 into a pod is denied, 8080 is not; from the
	// node and from the other pod.
	for i := range pods {
		for _, from := range []*testutil.NS{node, pods[1-i]} {
			if name, err := testutil.AskTCP(from, netip.AddrPortFrom(addrs[i], 8080), 2*time.Second); err != nil || name != fmt.Sprintf("pod%d", i+1) {
				t.Errorf("%s to pod%d:8080: %q, %v", from.Name, i+1, name, err)
			}
			if _, err := testutil.AskTCP(from, netip.AddrPortFrom(addrs[i], 9999), 300*time.Millisecond); !testutil.ErrTimeout(err) {
				t.Errorf("%s to pod%d:9999: %v, want a timeout (dropped by the policy)", from.Name, i+1, err)
			}
		}
	}

	// The bandwidth limit into pod1, and none into pod2. Pod2's path,
	// measured the same way just before and just after pod1's, is the
	// capacity of a path of this node now: pod1's floor is judged only
	// where it carried twice the limit (testutil.FloorJudged), less the
	// time a busy machine kept pod1's sender from sending.
	bulk := func(i int) testutil.BulkResult {
		res, err := testutil.BulkTCP(node, netip.Addr{}, pods[i], netip.AddrPortFrom(addrs[i], 0), time.Second, 2*time.Second, 250*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	free := []testutil.BulkResult{bulk(1)}
	limited := bulk(0)
	free = append(free, bulk(1))
	capacity := min(free[0].Goodput, free[1].Goodput)
	stalled := limited.Stalled.Seconds() / limited.Duration.Seconds()
	t.Logf("into pod1 (limited to %d bit/s): %.1f Mbit/s, its sender stalled %.1f%% of the time; into pod2: %.1f and %.1f Mbit/s",
		limit, limited.Goodput/1e6, 100*stalled, free[0].Goodput/1e6, free[1].Goodput/1e6)
	// Goodput counts TCP payload, the limit whole IP packets: a little
	// under the limit, never over it.
	if limited.Goodput > limit {
		t.Errorf("into pod1: %.1f Mbit/s, want at most %d Mbit/s", limited.Goodput/1e6, limit/1_000_000)
	}
	if floor := 0.8 * limit * (1 - stalled); !testutil.FloorJudged(limit, capacity) {
		t.Logf("into pod1: floor not judged: pod2's path carried %.1f Mbit/s, under %d times the limit", capacity/1e6, testutil.FloorMargin)
	} else if limited.Goodput < floor {
		t.Errorf("into pod1: %.1f Mbit/s, want at least %.1f Mbit/s (80%% of %d Mbit/s, less the sender's stalls)", limited.Goodput/1e6, floor/1e6, limit/1_000_000)
	}
	// Pod1's limit would hold pod2 under it; far above, pod2 has none.
	// No path here is free of both to judge that floor against: at
	// twice the limit, it is far under what a veth carries on a busy
	// machine (a few Gbit/s).
	for k, res := range free {
		if res.Goodput < testutil.FloorMargin*limit {
			t.Errorf("into pod2, which has no limit (%s pod1's): %.1f Mbit/s, want above %d Mbit/s",
				[]string{"before", "after"}[k], res.Goodput/1e6, testutil.FloorMargin*limit/1_000_000)
		}
	}

	// CHECK fails once pod1's policy is changed behind the plugin's back.
	var full *datapath.Datapath
	node.MustDo(func() (err error) {
		full, err = datapath.Open(datapath.Options{Dir: bpffs})
		return err
	})
	defer full.Close()
	// (The Manager runs in the node's namespace: it knows endpoints by
	// their interfaces, which are there.)
	node.MustDo(func() error {
		pm, err := policy.NewManager(full)
		if err != nil {
			return err
		}
		defer pm.Close()
		return pm.SetPolicy(hosts[0], policy.Policy{Egress: policy.Rules{Rules: []policy.Rule{{Action: policy.Deny,
			Peers: []policy.Peer{{Prefix: netip.MustParsePrefix("192.0.2.0/24")}}}}}})
	})
	if err := cni.CheckNetworkList(ctx, list, rts[0]); err == nil || !strings.Contains(err.Error(), "policy or limits changed") {
		t.Errorf("CHECK after the policy changed: %v, want an error about the policy", err)
	}
	// A limit another writer gives pod2, which ADD gave none, fails its
	// CHECK; taken away again, CHECK passes.
	setLimit := func(l bandwidth.Limits) {
		node.MustDo(func() error {
			bm, err := bandwidth.NewManager(full)
			if err != nil {
				return err
			}
			defer bm.Close()
			return bm.Set(bandwidth.Endpoint{Interface: hosts[1], NetNS: pods[1].Path()}, l)
		})
	}
	setLimit(bandwidth.Limits{Ingress: bandwidth.Limit{Rate: 50_000_000}})
	if err := cni.CheckNetworkList(ctx, list, rts[1]); err == nil || !strings.Contains(err.Error(), "limits") {
		t.Errorf("CHECK after a limit was set: %v, want an error about the limits", err)
	}
	setLimit(bandwidth.Limits{})
	if err := cni.CheckNetworkList(ctx, list, rts[1]); err != nil {
		t.Errorf("CHECK after the limit was taken away again: %v", err)
	}
	dp, err := datapath.OpenPinned(bpffs)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()

	// GC: a third pod whose DEL never came; the runtime lists the first
	// two as valid, and GC removes the third's endpoint and record (the
	// runtime's DEL, later, still succeeds).
	pod3 := g.NS("pod3")
	rt3 := &libcni.RuntimeConf{ContainerID: "pod3", NetNS: pod3.Path(), IfName: "eth0"}
	res3, err := cni.AddNetworkList(ctx, list, rt3)
	if err != nil {
		t.Fatalf("ADD pod3: %v", err)
	}
	r3, err := current.NewResultFromResult(res3)
	if err != nil {
		t.Fatal(err)
	}
	var host3 string
	node.MustDo(func() (err error) {
		host3, _, err = hostSide(r3)
		return err
	})
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
		{ContainerID: "pod1", IfName: "eth0"}, {ContainerID: "pod2", IfName: "eth0"},
	}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if err := cni.CheckNetworkList(ctx, list, rt3); err == nil {
		t.Error("CHECK pod3 after GC: passed")
	}
	if err := cni.CheckNetworkList(ctx, list, rts[1]); err != nil {
		t.Errorf("CHECK pod2 after GC: %v", err)
	}
	// pod3's endpoint and record are gone (ptp's own GC may have taken
	// its veth too); pod1's and pod2's stay.
	if n := countEndpoints(t, full); n != 2 {
		t.Errorf("after GC the endpoints map holds %d entries, want 2", n)
	}
	if recs, _ := filepath.Glob(filepath.Join(dataDir, "*", "pod3-*")); len(recs) != 0 {
		t.Errorf("after GC pod3's record is still there: %v", recs)
	}
	node.MustDo(func() error {
		if _, attached, err := full.AttachedHook(host3); err == nil && attached {
			t.Errorf("after GC xdplane is still attached to pod3's %s", host3)
		}
		return nil
	})
	if err := cni.DelNetworkList(ctx, list, rt3); err != nil {
		t.Fatalf("DEL pod3 after GC: %v", err)
	}

	// DEL, twice; then nothing of either pod is left.
	for _, rt := range rts {
		for range 2 {
			if err := cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL %s: %v", rt.ContainerID, err)
			}
		}
	}
	if n := countEndpoints(t, dp); n != 0 {
		t.Errorf("after DEL the endpoints map holds %d entries", n)
	}
	atts, err := dp.Attachments()
	if err != nil || len(atts) != 0 {
		t.Errorf("after DEL xdplane is still attached: %v %v", atts, err)
	}
	for _, h := range hosts {
		if out, err := node.Command("ip", "link", "show", h).CombinedOutput(); err == nil {
			t.Errorf("after DEL %s still exists: %s", h, out)
		}
	}
	// DEL with limits ADD would refuse, for a pod never added: it succeeds.
	bad := &libcni.RuntimeConf{ContainerID: "never", NetNS: pods[0].Path(), IfName: "eth0",
		CapabilityArgs: map[string]any{"bandwidth": map[string]any{"ingressRate": 5}}}
	if err := cni.DelNetworkList(ctx, list, bad); err != nil {
		t.Errorf("DEL with an invalid bandwidth: %v", err)
	}
	if _, err := cni.AddNetworkList(ctx, list, bad); err == nil || !strings.Contains(err.Error(), "ingress.rate") {
		t.Errorf("ADD with an invalid bandwidth: %v, want an error naming ingress.rate", err)
	} else if err := cni.DelNetworkList(ctx, list, bad); err != nil {
		t.Errorf("DEL after a refused ADD: %v", err)
	}

	// With nothing left, the policy Manager recovers no endpoint.
	node.MustDo(func() error {
		pm, err := policy.NewManager(full)
		if err != nil {
			return err
		}
		defer pm.Close()
		if eps := pm.Endpoints(); len(eps) != 0 {
			t.Errorf("after DEL the policy holds endpoints %v", eps)
		}
		return nil
	})
	if left, _ := filepath.Glob(filepath.Join(dataDir, "*", "*")); len(left) != 0 {
		t.Errorf("after DEL the data directory holds %v", left)
	}
}

func countEndpoints(t *testing.T, dp *datapath.Datapath) int {
	t.Helper()
	var key uint32
	var val []byte
	n := 0
	it := kernel.Of(dp).Maps.Endpoints.Iterate()
	for it.Next(&key, &val) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConfErrors: bad configuration is refused with the field named, and
// ADD without a previous result says what to chain after.
func TestConfErrors(t *testing.T) {
	for _, c := range []struct{ conf, want string }{
		{`{"cniVersion":"1.1.0","name":"n","type":"xdplane","policy":{"ingress":{"rules":[{"action":"allow"}]}}}`, "policy"},
		{`{"cniVersion":"1.1.0","name":"n","type":"xdplane","runtimeConfig":{"bandwidth":{"ingressRate":5}}}`, "ingress.rate"},
		{`{"cniVersion":"1.1.0","name":"n","type":"xdplane","policy":`, "parse"},
	} {
		_, err := parseConf([]byte(c.conf), true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", c.conf, err, c.want)
		}
	}
	_, _, err := hostSide(nil)
	if err == nil || !strings.Contains(err.Error(), "chained") {
		t.Errorf("no prevResult: %v", err)
	}
	r := &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "eth0", Sandbox: "/var/run/netns/x"}}}
	if _, _, err := hostSide(r); err == nil || !strings.Contains(err.Error(), "host-side") {
		t.Errorf("no host-side interface: %v", err)
	}
}
