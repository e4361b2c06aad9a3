package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplane/xdplane/lb"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// BenchmarkAgentSyncLatency measures how long a change written to the API
// takes to reach the datapath: 1000 endpoint moves of one service, each
// timed from the API call to the moved endpoint in the pinned maps, with
// the agent's default flags (it waits for changes to stop for 10 ms).
//
//	go test -run '^$' -bench AgentSyncLatency -benchtime 1x ./examples/kube-agent  (as root)
func BenchmarkAgentSyncLatency(b *testing.B) {
	c := newCluster(b)
	c.create(webService())
	c.create(c.webSlice([]int{0, 1}))
	c.startAgent()
	c.waitHealthy()
	const changes = 1000
	for b.Loop() {
		var ds []time.Duration
		for i := range changes {
			// Move the second endpoint to another address of be1's
			// subnet, a new one each time.
			moved := netip.AddrFrom4([4]byte{10, 0, 2, byte(10 + i%200)})
			sl := c.webSlice([]int{0, 1})
			sl.Endpoints[1].Addresses = []string{moved.String()}
			want := netip.AddrPortFrom(moved, 8080).String()
			start := time.Now()
			c.updateSlice(sl)
			c.datapathShows("the moved endpoint", 5*time.Second, func(m map[string]lb.ServiceStatus) bool {
				return slices.Contains(backendsOf(m["10.96.0.10:80/tcp"], lb.Active), want)
			})
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		p := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
		b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, "max-ms")
		b.Logf("%d changes: p50 %v, p99 %v, max %v", changes, p(0.5), p(0.99), ds[len(ds)-1])
	}
	c.stopAgent()
}

// BenchmarkAgentMemory creates 10,000 ClusterIP services of two endpoints
// each through the API and reports the agent's resident memory once it
// has installed them all, and how long it took from the last write.
//
//	go test -run '^$' -bench AgentMemory -benchtime 1x -timeout 30m ./examples/kube-agent  (as root)
func BenchmarkAgentMemory(b *testing.B) {
	c := newCluster(b)
	c.startAgent()
	c.waitHealthy()
	const n = 10000
	for b.Loop() {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 16 {
					if err := c.createNumbered(i); err != nil {
						select {
						case errs <- err:
						default:
						}
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		b.Logf("%d services and slices written in %v", n, written.Sub(start))
		deadline := time.Now().Add(5 * time.Minute)
		for {
			// n services and the API server's own "kubernetes" service.
			_, body, err := c.get("127.0.0.1:10249", "/metrics")
			if err == nil && strings.Contains(body, fmt.Sprintf("\nxdplane_agent_services %d\n", n+1)) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the agent did not install %d frontends: %v\n%s", n, err, c.agentLog())
			}
			time.Sleep(100 * time.Millisecond)
		}
		installed := time.Since(written)
		rss := processRSS(b, c.agent.Process.Pid)
		b.ReportMetric(float64(rss)/(1<<20), "agent-rss-MiB")
		b.ReportMetric(installed.Seconds(), "s-after-last-write")
		b.Logf("agent RSS %.1f MiB with %d services; installed %v after the last write", float64(rss)/(1<<20), n, installed)
	}
	c.stopAgent()
}

// createNumbered writes service i (cluster IP 10.96.x.y) and its slice.
func (c *cluster) createNumbered(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := fmt.Sprintf("svc-%05d", i)
	ip := netip.AddrFrom4([4]byte{10, 96, byte(1 + i/250), byte(1 + i%250)})
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1.ServiceSpec{ClusterIP: ip.String(), Ports: []v1.ServicePort{
			{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)},
		}},
	}
	if _, err := c.api.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	sl := c.webSlice([]int{0, 1})
	sl.Name, sl.Labels[discovery.LabelServiceName] = name+"-1", name
	sl.Ports = sl.Ports[:1]
	if _, err := c.api.DiscoveryV1().EndpointSlices("default").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create %s: %w", sl.Name, err)
	}
	return nil
}

func processRSS(tb testing.TB, pid int) uint64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}
