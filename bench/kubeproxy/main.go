// Command kpbench measures xdplane beside the real kube-proxy, on the same
// machine, topology and services, in one run: kube-proxy's Proxier from
// k8s.io/kubernetes in iptables mode (legacy and nft backends) and in
// nftables mode, driven in-process as its informers would drive it, and
// xdplane's lb package.
//
// For each number of services N and each implementation it builds a fresh
// client, node and backend namespace, programs N services into the node
// (timing the full sync, the addition of one service and an endpoint
// change), then measures new TCP connections and UDP request-replies
// through it, to a random service and to the first and last in rule
// order, and bulk TCP throughput. "none", the same traffic sent straight
// to the endpoints with no service rules at all, is the baseline.
//
// Usage, as root:
//
//	kpbench [-n 10,1000,10000] [-repeat 5] [-requests 2000] [-docs DIR]
//	kpbench -short
//
// With -docs it writes the tables into DIR/benchmarks.md, between marker
// comments, and the charts and raw results into DIR/kube-proxy/.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		err = workerMain(os.Args[2:])
	} else {
		err = benchMain(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kpbench:", err)
		os.Exit(1)
	}
}

// config is one run's settings.
type config struct {
	Ns       []int         `json:"n"`
	Impls    []string      `json:"impls"`
	Repeat   int           `json:"repeat"`
	Requests int           `json:"requests"`
	Bulk     time.Duration `json:"bulk"`
	Seed     uint64        `json:"seed"`
}

// runResult is one implementation at one N, once.
type runResult struct {
	Impl   string       `json:"impl"`
	N      int          `json:"n"`
	Repeat int          `json:"repeat"`
	Worker workerResult `json:"worker"`
	// TCP and UDP by destination: "random", "first", "last".
	TCP      map[string]latency `json:"tcp"`
	UDP      map[string]latency `json:"udp"`
	BulkGbps float64            `json:"bulk_gbps"`
	Seconds  float64            `json:"seconds"` // the whole run, wall clock
}

// results is what a whole benchmark produced.
type results struct {
	Config  config      `json:"config"`
	Machine machine     `json:"machine"`
	Started time.Time   `json:"started"`
	Runs    []runResult `json:"runs"`
}

var positions = []string{"random", "first", "last"}

func benchMain(args []string) error {
	fs := flag.NewFlagSet("kpbench", flag.ContinueOnError)
	ns := fs.String("n", "10,1000,10000", "comma-separated numbers of services")
	impls := fs.String("impl", strings.Join(allImpls, ","), "comma-separated implementations")
	repeat := fs.Int("repeat", 5, "runs of each implementation at each N; the report gives medians")
	requests := fs.Int("requests", 2000, "TCP connections and UDP requests per destination choice per run")
	bulk := fs.Duration("bulk", 2*time.Second, "bulk TCP transfer per run")
	seed := fs.Uint64("seed", 0, "seed for the random choice of services (0: from the clock; the run prints it)")
	short := fs.Bool("short", false, "a fast check that every implementation works: N=10, one run, few requests")
	docs := fs.String("docs", "", "write the report into DIR/benchmarks.md and charts into DIR/kube-proxy/")
	rawIn := fs.String("report-from", "", "write the report from a raw results file instead of measuring")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rawIn != "" {
		raw, err := os.ReadFile(*rawIn)
		if err != nil {
			return err
		}
		var res results
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: %w", *rawIn, err)
		}
		return report(&res, *docs)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it makes network namespaces and programs the kernel")
	}
	cfg := config{Repeat: *repeat, Requests: *requests, Bulk: *bulk, Seed: *seed}
	if *short {
		*ns, cfg.Repeat, cfg.Requests, cfg.Bulk = "10", 1, 100, 200*time.Millisecond
	}
	for f := range strings.SplitSeq(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxServices {
			return fmt.Errorf("-n: %q: want a number of services from 1 to %d", f, maxServices)
		}
		cfg.Ns = append(cfg.Ns, n)
	}
	for f := range strings.SplitSeq(*impls, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(allImpls, f) {
			return fmt.Errorf("-impl: %q: want some of %s", f, strings.Join(allImpls, ", "))
		}
		cfg.Impls = append(cfg.Impls, f)
	}
	if cfg.Repeat < 1 || cfg.Requests < 10 {
		return fmt.Errorf("-repeat %d -requests %d: want at least 1 and 10", cfg.Repeat, cfg.Requests)
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	fmt.Printf("kpbench: seed %d (-seed %d repeats the choice of services)\n", cfg.Seed, cfg.Seed)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	base := "kpb"
	deleteStale(base)
	prefix := fmt.Sprintf("%s%d", base, os.Getpid())
	// An interrupt still removes the namespaces; the worker dies with its
	// rules inside them.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		deleteStale(base)
		fmt.Fprintln(os.Stderr, "kpbench: interrupted by", s)
		os.Exit(1)
	}()

	res := &results{Config: cfg, Machine: describeMachine(), Started: time.Now().UTC()}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6b70626e))
	for _, n := range cfg.Ns {
		for r := range cfg.Repeat {
			// Interleave the implementations within each repeat, so that
			// a slow phase of the machine does not fall on one alone.
			for _, impl := range cfg.Impls {
				run, err := runOnce(self, prefix, impl, n, r, cfg, rng)
				if err != nil {
					return fmt.Errorf("%s, %d services, run %d: %w", impl, n, r+1, err)
				}
				fmt.Println(run.summary())
				res.Runs = append(res.Runs, run)
			}
		}
	}
	if *short {
		return checkShort(res)
	}
	return report(res, *docs)
}

// runOnce measures impl at n services on a fresh topology.
func runOnce(self, prefix, impl string, n, repeat int, cfg config, rng *rand.Rand) (runResult, error) {
	started := time.Now()
	run := runResult{Impl: impl, N: n, Repeat: repeat}
	topo, err := newTopology(prefix)
	if err != nil {
		return run, err
	}
	defer topo.delete()
	be, err := startBackends(topo.backend)
	if err != nil {
		return run, err
	}
	defer be.close()

	services := make([]benchService, n+1)
	for i := range services {
		services[i] = newBenchService(i)
	}
	order := make([]int, len(services))
	for i := range order {
		order[i] = i
	}
	if impl != implNone {
		w, err := startWorker(self, topo.node, impl, n, repeat)
		if err != nil {
			return run, err
		}
		defer w.stop()
		run.Worker = w.result
		if len(w.result.Order) > 0 {
			order = w.result.Order
		}
	}

	var tcp, udp picker
	tcp.rng, udp.rng = rng, rng
	for _, i := range order {
		s := services[i]
		dst := s.Frontend()
		if impl == implNone {
			dst = s.Endpoints[0]
		}
		if s.Protocol == protocolOf(0) {
			tcp.dests = append(tcp.dests, dst)
		} else {
			udp.dests = append(udp.dests, dst)
		}
	}
	if len(tcp.dests) == 0 || len(udp.dests) == 0 {
		return run, fmt.Errorf("%d services hold no TCP or no UDP service", n)
	}

	// Warm up: neighbour entries, the servers, the programs' code paths.
	if _, err := measure(topo.client, 20, tcpRequest, tcp.random); err != nil {
		return run, fmt.Errorf("warm-up, TCP: %w", err)
	}
	if _, err := measure(topo.client, 20, udpRequest, udp.random); err != nil {
		return run, fmt.Errorf("warm-up, UDP: %w", err)
	}
	run.TCP, run.UDP = map[string]latency{}, map[string]latency{}
	for _, proto := range []struct {
		name string
		req  func(netip.AddrPort) (time.Duration, error)
		p    picker
		out  map[string]latency
	}{{"TCP", tcpRequest, tcp, run.TCP}, {"UDP", udpRequest, udp, run.UDP}} {
		ls, err := measure(topo.client, cfg.Requests, proto.req, proto.p.random, proto.p.first, proto.p.last)
		if err != nil {
			return run, fmt.Errorf("%s: %w", proto.name, err)
		}
		for i, pos := range positions { // random, first, last
			proto.out[pos] = ls[i]
		}
	}
	if run.BulkGbps, err = bulkTCP(topo.client, tcp.first(), cfg.Bulk); err != nil {
		return run, fmt.Errorf("bulk TCP: %w", err)
	}
	run.Seconds = time.Since(started).Seconds()
	return run, nil
}

func (r runResult) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s n=%-6d run %d:", r.Impl, r.N, r.Repeat+1)
	if r.Impl != implNone {
		fmt.Fprintf(&b, " sync %s, add %s, endpoint %s;", fmtSeconds(r.Worker.FullSync),
			fmtSeconds(r.Worker.AddService), fmtSeconds(r.Worker.EndpointChange))
	}
	fmt.Fprintf(&b, " tcp p50 %.0f/%.0f/%.0f us, udp p50 %.0f/%.0f/%.0f us (random/first/last), bulk %.1f Gbit/s [%.1fs]",
		r.TCP["random"].P50, r.TCP["first"].P50, r.TCP["last"].P50,
		r.UDP["random"].P50, r.UDP["first"].P50, r.UDP["last"].P50, r.BulkGbps, r.Seconds)
	return b.String()
}

// worker is a kpbench process in the node namespace holding one
// implementation's rules.
type worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	result workerResult
}

func startWorker(self, nodeNS, impl string, n, repeat int) (*worker, error) {
	cmd := exec.Command("ip", "netns", "exec", nodeNS, self, "worker",
		"-impl", impl, "-n", strconv.Itoa(n), "-change", strconv.Itoa(repeat))
	w := &worker{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = w.stderr
	var err error
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		w.stdin.Close()
		werr := cmd.Wait()
		return nil, fmt.Errorf("worker %s: %v (%v)\n%s", impl, err, werr, lastLines(w.stderr.String(), 20))
	}
	if err := json.Unmarshal(line, &w.result); err != nil {
		w.stop()
		return nil, fmt.Errorf("worker %s: %w: %q", impl, err, line)
	}
	return w, nil
}

// stop tells the worker to remove its rules and waits for it.
func (w *worker) stop() {
	w.stdin.Close()
	if err := w.cmd.Wait(); err != nil {
		fmt.Fprintf(os.Stderr, "kpbench: worker: %v\n%s", err, lastLines(w.stderr.String(), 20))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// checkShort is CI's check of a short run: every implementation answered
// every request, and every program reported its timings.
func checkShort(res *results) error {
	for _, r := range res.Runs {
		if r.Impl != implNone && (r.Worker.FullSync <= 0 || r.Worker.AddService <= 0 || r.Worker.EndpointChange <= 0) {
			return fmt.Errorf("%s: a sync time is missing: %+v", r.Impl, r.Worker)
		}
		for _, m := range []map[string]latency{r.TCP, r.UDP} {
			for _, pos := range positions {
				if l := m[pos]; l.Errors != 0 || l.Count != res.Config.Requests {
					return fmt.Errorf("%s, %s: %d of %d requests answered", r.Impl, pos, l.Count, res.Config.Requests)
				}
			}
		}
		if r.BulkGbps <= 0 {
			return fmt.Errorf("%s: no bulk throughput", r.Impl)
		}
	}
	fmt.Println("kpbench: short run passed")
	return nil
}
