package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	nodeName  = "node-a"
	clusterIP = "10.96.0.10"
	tcpNode   = 30080
	udpNode   = 30053
)

// cluster is the end-to-end test's world: the namespaces of
// testutil.NewLBTopology (a client, this node, two backends), a real API
// server in the node's namespace, and the agent binary.
type cluster struct {
	t     testing.TB
	tp    *testutil.LBTopology
	cp    *controlPlane
	api   *kubernetes.Clientset
	bpffs string
	bin   string
	agent *exec.Cmd
	log   string
}

func newCluster(t testing.TB) *cluster {
	testutil.RequireRoot(t)
	c := &cluster{t: t, tp: testutil.NewLBTopology(t, 2)}
	c.bpffs = testutil.BPFFS(t)
	t.Cleanup(func() {
		if err := datapath.Remove(c.bpffs); err != nil {
			t.Errorf("remove the datapath: %v", err)
		}
	})
	c.bin = filepath.Join(t.TempDir(), "xdplane-kube-agent")
	if out, err := exec.Command("go", "build", "-o", c.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	c.cp = startControlPlane(t, c.tp.Node)
	c.api = c.cp.client(t)
	for i, be := range c.tp.Backends {
		name := fmt.Sprintf("be%d", i)
		testutil.ServeTCP(t, be, netip.AddrPortFrom(c.tp.BackendAddrs[i], 8080), name)
		testutil.ServeUDP(t, be, netip.AddrPortFrom(c.tp.BackendAddrs[i], 5353), name)
		testutil.ServeTCP(t, be, netip.AddrPortFrom(c.tp.BackendAddrs6[i], 8080), name)
	}
	c.create(&v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "10.0.0.1"},
			{Type: v1.NodeInternalIP, Address: "fd01::1"},
			{Type: v1.NodeHostName, Address: nodeName},
		}},
	})
	return c
}

func (c *cluster) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c.t.Cleanup(cancel)
	return ctx
}

func (c *cluster) create(obj any) {
	c.t.Helper()
	var err error
	switch o := obj.(type) {
	case *v1.Node:
		_, err = c.api.CoreV1().Nodes().Create(c.ctx(), o, metav1.CreateOptions{})
		if err == nil {
			// Node status is a subresource: write the addresses there.
			var n *v1.Node
			n, err = c.api.CoreV1().Nodes().Get(c.ctx(), o.Name, metav1.GetOptions{})
			if err == nil {
				n.Status = o.Status
				_, err = c.api.CoreV1().Nodes().UpdateStatus(c.ctx(), n, metav1.UpdateOptions{})
			}
		}
	case *v1.Service:
		_, err = c.api.CoreV1().Services(o.Namespace).Create(c.ctx(), o, metav1.CreateOptions{})
	case *discovery.EndpointSlice:
		_, err = c.api.DiscoveryV1().EndpointSlices(o.Namespace).Create(c.ctx(), o, metav1.CreateOptions{})
	default:
		c.t.Fatalf("create %T", obj)
	}
	if err != nil {
		c.t.Fatalf("create %T: %v", obj, err)
	}
}

// startAgent runs the agent in the node's namespace; stopAgent ends it
// with SIGTERM, as a kubelet would.
func (c *cluster) startAgent() { c.startAgentWith(c.cp.kubeconfig) }

func (c *cluster) startAgentWith(kubeconfig string) {
	c.t.Helper()
	args := []string{c.bin, "--kubeconfig", kubeconfig, "--hostname-override", nodeName, "--bpffs", c.bpffs,
		"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249"}
	for _, ifname := range c.tp.NodeInterfaces {
		args = append(args, "--interface", ifname)
	}
	c.agent = c.tp.Node.Command(args...)
	c.log = filepath.Join(c.t.TempDir(), "agent.log")
	f, err := os.Create(c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	c.agent.Stdout, c.agent.Stderr = f, f
	if err := c.agent.Start(); err != nil {
		c.t.Fatal(err)
	}
	agent := c.agent
	c.t.Cleanup(func() {
		if agent.ProcessState == nil {
			_ = agent.Process.Kill()
			_ = agent.Wait()
		}
		f.Close()
	})
}

func (c *cluster) stopAgent() {
	c.t.Helper()
	if err := c.agent.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	if err := c.agent.Wait(); err != nil {
		c.t.Fatalf("agent exited with %v\n%s", err, c.agentLog())
	}
}

func (c *cluster) agentLog() string {
	b, _ := os.ReadFile(c.log)
	return tail(string(b), 40)
}

// get fetches path from the agent's health or metrics server, from inside
// the node's namespace.
func (c *cluster) get(addr, path string) (int, string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var conn net.Conn
			err := c.tp.Node.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, a)
				return err
			})
			return conn, err
		},
	}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHealthy waits for /healthz to answer 200: the first full sync is
// done.
func (c *cluster) waitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := c.get("127.0.0.1:10256", "/healthz")
		if err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("agent not healthy: %d %s %v\n%s", code, body, err, c.agentLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// datapathShows polls the pinned maps until cond holds of the installed
// services, and returns how long that took; it fails the test after
// limit.
func (c *cluster) datapathShows(what string, limit time.Duration, cond func(map[string]lb.ServiceStatus) bool) time.Duration {
	c.t.Helper()
	dp, err := datapath.OpenPinned(c.bpffs)
	if err != nil {
		c.t.Fatal(err)
	}
	defer dp.Close()
	start := time.Now()
	for {
		st, err := lb.ReadStatus(dp)
		if err != nil {
			c.t.Fatal(err)
		}
		byFrontend := map[string]lb.ServiceStatus{}
		for _, s := range st {
			byFrontend[s.Frontend.String()] = s
		}
		if cond(byFrontend) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			c.t.Fatalf("the datapath did not show %s within %v: %v\n%s", what, limit, st, c.agentLog())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// backendsOf lists a frontend's backends in the given state.
func backendsOf(s lb.ServiceStatus, state lb.BackendState) []string {
	var out []string
	for _, b := range s.Backends {
		if b.State == state {
			out = append(out, b.Address.String())
		}
	}
	slices.Sort(out)
	return out
}

func webService() *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1.ServiceSpec{
			Type:      v1.ServiceTypeNodePort,
			ClusterIP: clusterIP,
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: tcpNode},
				{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: udpNode},
			},
		},
	}
}

func dualService() *v1.Service {
	policy := v1.IPFamilyPolicyRequireDualStack
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dual"},
		Spec: v1.ServiceSpec{
			Type:           v1.ServiceTypeNodePort,
			IPFamilyPolicy: &policy,
			IPFamilies:     []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol},
			ClusterIP:      "10.96.0.20",
			ClusterIPs:     []string{"10.96.0.20", "fd00:96::20"},
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30081},
			},
		},
	}
}

// familySlice is a slice of service svc with one ready endpoint, addr,
// serving port "http" on 8080.
func (c *cluster) familySlice(name, svc string, family discovery.AddressType, addr netip.Addr) *discovery.EndpointSlice {
	port, proto, ready := int32(8080), v1.ProtocolTCP, true
	pname := "http"
	return &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discovery.LabelServiceName: svc}},
		AddressType: family,
		Ports:       []discovery.EndpointPort{{Name: &pname, Protocol: &proto, Port: &port}},
		Endpoints: []discovery.Endpoint{{Addresses: []string{addr.String()},
			Conditions: discovery.EndpointConditions{Ready: &ready}}},
	}
}

// webSlice is the web service's endpoints: each backend ready unless
// listed in terminating (then serving and terminating).
func (c *cluster) webSlice(backends []int, terminating ...int) *discovery.EndpointSlice {
	name, dns := "http", "dns"
	tcp, udp := v1.ProtocolTCP, v1.ProtocolUDP
	p8080, p5353 := int32(8080), int32(5353)
	sl := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1",
			Labels: map[string]string{discovery.LabelServiceName: "web"}},
		AddressType: discovery.AddressTypeIPv4,
		Ports: []discovery.EndpointPort{
			{Name: &name, Protocol: &tcp, Port: &p8080},
			{Name: &dns, Protocol: &udp, Port: &p5353},
		},
	}
	for _, i := range backends {
		term := slices.Contains(terminating, i)
		ready, serving := !term, true
		node := "node-b"
		sl.Endpoints = append(sl.Endpoints, discovery.Endpoint{
			Addresses:  []string{c.tp.BackendAddrs[i].String()},
			Conditions: discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term},
			NodeName:   &node,
		})
	}
	return sl
}

func (c *cluster) updateSlice(sl *discovery.EndpointSlice) {
	c.t.Helper()
	cur, err := c.api.DiscoveryV1().EndpointSlices("default").Get(c.ctx(), sl.Name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	sl.ResourceVersion = cur.ResourceVersion
	if _, err := c.api.DiscoveryV1().EndpointSlices("default").Update(c.ctx(), sl, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// askAll makes n requests and returns which backends answered.
func (c *cluster) askAll(ask func(*testutil.NS, netip.AddrPort, time.Duration) (string, error), addr netip.AddrPort, n int) []string {
	c.t.Helper()
	seen := map[string]bool{}
	for range n {
		name, err := ask(c.tp.Client, addr, 2*time.Second)
		if err != nil {
			c.t.Fatalf("%v: %v\n%s", addr, err, c.agentLog())
		}
		seen[name] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// TestAgentEndToEnd drives the agent through a real kube-apiserver: a
// Service and its EndpointSlice created through the API carry real TCP
// and UDP traffic through the cluster IP and a node port, and a dual-stack
// service through its cluster IP and node port of each family; a scale-down, a
// terminating endpoint and the service's deletion reach the datapath
// within a second; and a restart of the agent keeps an established
// connection and prunes what was deleted while it was down, after its
// first full sync.
func TestAgentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	c := newCluster(t)
	c.create(webService())
	c.create(c.webSlice([]int{0, 1}))
	// A service that is deleted while the agent is down, later.
	stale := webService()
	stale.Name, stale.Spec.ClusterIP = "stale", "10.96.0.11"
	stale.Spec.Type, stale.Spec.Ports = v1.ServiceTypeClusterIP, stale.Spec.Ports[:1]
	stale.Spec.Ports[0].NodePort = 0
	c.create(stale)
	c.startAgent()
	c.waitHealthy()

	cip := netip.MustParseAddr(clusterIP)
	node := netip.MustParseAddr("10.0.0.1")
	both := []string{"be0", "be1"}
	for _, tc := range []struct {
		name string
		ask  func(*testutil.NS, netip.AddrPort, time.Duration) (string, error)
		addr netip.AddrPort
	}{
		{"TCP to the cluster IP", testutil.AskTCP, netip.AddrPortFrom(cip, 80)},
		{"UDP to the cluster IP", testutil.AskUDP, netip.AddrPortFrom(cip, 53)},
		{"TCP to the node port", testutil.AskTCP, netip.AddrPortFrom(node, tcpNode)},
		{"UDP to the node port", testutil.AskUDP, netip.AddrPortFrom(node, udpNode)},
	} {
		if got := c.askAll(tc.ask, tc.addr, 40); !slices.Equal(got, both) {
			t.Errorf("%s: answered by %v, want %v", tc.name, got, both)
		}
	}
	if _, err := testutil.AskTCP(c.tp.Client, netip.AddrPortFrom(cip, 81), time.Second); !testutil.ErrRefused(err) {
		t.Errorf("another port of the cluster IP: %v, want connection refused", err)
	}

	// Dual stack: one service with a cluster IP of each family, its
	// endpoints in one slice per family (be0 in IPv4, be1 in IPv6), and a
	// node port on the node's address of each family.
	c.create(dualService())
	c.create(c.familySlice("dual-v4", "dual", discovery.AddressTypeIPv4, c.tp.BackendAddrs[0]))
	c.create(c.familySlice("dual-v6", "dual", discovery.AddressTypeIPv6, c.tp.BackendAddrs6[1]))
	c.datapathShows("the dual-stack service", 5*time.Second, func(m map[string]lb.ServiceStatus) bool {
		_, v6 := m["[fd01::1]:30081/tcp"]
		return v6 && len(m["[fd00:96::20]:80/tcp"].Backends) == 1
	})
	for _, tc := range []struct {
		addr netip.AddrPort
		want string
	}{
		{netip.MustParseAddrPort("10.96.0.20:80"), "be0"},
		{netip.MustParseAddrPort("[fd00:96::20]:80"), "be1"},
		{netip.MustParseAddrPort("10.0.0.1:30081"), "be0"},
		{netip.MustParseAddrPort("[fd01::1]:30081"), "be1"},
	} {
		if got := c.askAll(testutil.AskTCP, tc.addr, 10); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("dual stack, %v: answered by %v, want %s", tc.addr, got, tc.want)
		}
	}
	if err := c.api.CoreV1().Services("default").Delete(c.ctx(), "dual", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.datapathShows("the dual-stack service gone", time.Second, func(m map[string]lb.ServiceStatus) bool {
		_, ok := m["[fd00:96::20]:80/tcp"]
		return !ok
	})

	// Scale down to be0.
	c.updateSlice(c.webSlice([]int{0}))
	d := c.datapathShows("web scaled down to be0", time.Second, func(m map[string]lb.ServiceStatus) bool {
		return slices.Equal(backendsOf(m["10.96.0.10:80/tcp"], lb.Active), []string{"10.0.1.2:8080"}) &&
			slices.Equal(backendsOf(m["10.0.0.1:30053/udp"], lb.Active), []string{"10.0.1.2:5353"})
	})
	t.Logf("scale-down in the datapath after %v", d)
	if got := c.askAll(testutil.AskTCP, netip.AddrPortFrom(cip, 80), 20); !slices.Equal(got, []string{"be0"}) {
		t.Errorf("after the scale-down: answered by %v, want be0", got)
	}

	// Back to two, then be0 terminating: it serves only while no other
	// endpoint is ready.
	c.updateSlice(c.webSlice([]int{0, 1}, 0))
	d = c.datapathShows("be0 terminating", time.Second, func(m map[string]lb.ServiceStatus) bool {
		s := m["10.96.0.10:80/tcp"]
		return slices.Equal(backendsOf(s, lb.Active), []string{"10.0.2.2:8080"}) &&
			slices.Equal(backendsOf(s, lb.Terminating), []string{"10.0.1.2:8080"})
	})
	t.Logf("terminating endpoint in the datapath after %v", d)
	if got := c.askAll(testutil.AskUDP, netip.AddrPortFrom(cip, 53), 20); !slices.Equal(got, []string{"be1"}) {
		t.Errorf("with be0 terminating: answered by %v, want be1", got)
	}
	// With be1 gone, the terminating be0 takes new flows: the fallback.
	c.updateSlice(c.webSlice([]int{0}, 0))
	c.datapathShows("be0 terminating alone", time.Second, func(m map[string]lb.ServiceStatus) bool {
		s := m["10.96.0.10:80/tcp"]
		return len(backendsOf(s, lb.Active)) == 0 && slices.Equal(backendsOf(s, lb.Terminating), []string{"10.0.1.2:8080"})
	})
	if got := c.askAll(testutil.AskTCP, netip.AddrPortFrom(cip, 80), 10); !slices.Equal(got, []string{"be0"}) {
		t.Errorf("with only the terminating be0: answered by %v, want be0", got)
	}
	c.updateSlice(c.webSlice([]int{0, 1}, 0))
	c.datapathShows("be1 back", time.Second, func(m map[string]lb.ServiceStatus) bool {
		return slices.Equal(backendsOf(m["10.96.0.10:80/tcp"], lb.Active), []string{"10.0.2.2:8080"})
	})

	// Restart with an established connection, deleting "stale" while the
	// agent is down.
	conn, err := testutil.DialTCP(c.tp.Client, netip.AddrPortFrom(cip, 80), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Echo("before", time.Second); err != nil {
		t.Fatal(err)
	}
	c.stopAgent()
	if err := c.api.CoreV1().Services("default").Delete(c.ctx(), "stale", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Echo("while the agent is down", time.Second); err != nil {
		t.Fatalf("established connection broke with the agent down: %v", err)
	}
	// An agent that cannot list (its API server unreachable) adopts the
	// datapath but must not touch it: "stale" stays, the connection
	// flows, and it is not healthy.
	unreachable := filepath.Join(c.t.TempDir(), "kubeconfig")
	kc, err := os.ReadFile(c.cp.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unreachable, []byte(strings.ReplaceAll(string(kc), apiserverAddr, "127.0.0.1:6999")), 0o600); err != nil {
		t.Fatal(err)
	}
	c.startAgentWith(unreachable)
	time.Sleep(1500 * time.Millisecond)
	if code, _, err := c.get("127.0.0.1:10256", "/healthz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/healthz of an agent that has not listed: %d, %v; want 503", code, err)
	}
	c.datapathShows("stale kept until a first full sync", 0, func(m map[string]lb.ServiceStatus) bool {
		_, ok := m["10.96.0.11:80/tcp"]
		return ok && len(m["10.96.0.10:80/tcp"].Backends) == 2
	})
	if err := conn.Echo("while an agent waits for the API", time.Second); err != nil {
		t.Fatalf("established connection broke: %v", err)
	}
	c.stopAgent()
	c.startAgent()
	c.waitHealthy()
	c.datapathShows("stale pruned after the restart", time.Second, func(m map[string]lb.ServiceStatus) bool {
		_, ok := m["10.96.0.11:80/tcp"]
		return !ok
	})
	if err := conn.Echo("after the restart", time.Second); err != nil {
		t.Fatalf("established connection broke across the agent's restart: %v", err)
	}

	// Metrics and health.
	code, body, err := c.get("127.0.0.1:10249", "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	// web (two ports, on the cluster IP and the node port: four
	// frontends of two backends) and the API server's own "kubernetes"
	// service (one frontend; no endpoints here, the reconciler is off).
	for _, want := range []string{`xdplane_agent_syncs_total{result="ok"}`, "xdplane_agent_services 2", "xdplane_agent_frontends 5",
		"xdplane_agent_backends 8", "xdplane_agent_sync_duration_seconds_count"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}

	// The service goes.
	if err := c.api.CoreV1().Services("default").Delete(c.ctx(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = c.datapathShows("web deleted", time.Second, func(m map[string]lb.ServiceStatus) bool {
		_, ok := m["10.96.0.1:443/tcp"]
		return len(m) == 1 && ok
	})
	t.Logf("deletion in the datapath after %v", d)
	if _, err := testutil.AskTCP(c.tp.Client, netip.AddrPortFrom(cip, 80), 500*time.Millisecond); err == nil {
		t.Error("the deleted service still answers")
	}
	c.stopAgent()
}
