package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// machine describes where a run happened.
type machine struct {
	CPU        string `json:"cpu"`
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	KubeProxy  string `json:"kube_proxy"`
	IPTables   string `json:"iptables"`
	NFT        string `json:"nft"`
	MemoryGiB  int    `json:"memory_gib"`
	Hypervisor string `json:"hypervisor,omitempty"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(string(raw), "MemTotal: %d kB", &kb)
		m.MemoryGiB = int(math.Round(float64(kb) / (1 << 20)))
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("systemd-detect-virt").Output(); err == nil {
		m.Hypervisor = strings.TrimSpace(string(out))
	}
	m.IPTables = toolVersion("iptables-legacy", "--version") + "; " + toolVersion("iptables-nft", "--version")
	m.NFT = toolVersion("nft", "--version")
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/kubernetes" {
				m.KubeProxy = d.Version
			}
		}
	}
	return m
}

// Markers around the generated part of docs/benchmarks.md.
const (
	beginMarker = "<!-- kpbench:begin (make bench-kube-proxy writes this part) -->"
	endMarker   = "<!-- kpbench:end -->"
)

// report prints the tables and, with docs set, writes them into
// docs/benchmarks.md with the charts and raw results.
func report(res *results, docs string) error {
	sum := summarizeRuns(res)
	md := sum.markdown()
	fmt.Println(md)
	if docs == "" {
		return nil
	}
	dir := filepath.Join(docs, "kube-proxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(raw, '\n'), 0o644); err != nil {
		return err
	}
	if err := sum.charts(dir); err != nil {
		return err
	}
	return spliceDoc(filepath.Join(docs, "benchmarks.md"), md)
}

// spliceDoc replaces the text between the markers in path with md, or
// appends it with the markers if they are not there yet.
func spliceDoc(path, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	block := beginMarker + "\n" + md + "\n" + endMarker
	s := string(old)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(endMarker):]
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s: only one of the kpbench markers is there; fix it by hand", path)
	default:
		if s != "" && !strings.HasSuffix(s, "\n\n") {
			s = strings.TrimRight(s, "\n") + "\n\n"
		}
		s += block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// summary holds the medians over repeats.
type summary struct {
	res   *results
	ns    []int
	impls []string
	// by implementation, then N
	fullSync, addService, endpointChange, syncEndpointChange map[string]map[int]float64
	tcp, udp                                                 map[string]map[int]map[string]latency
	bulk                                                     map[string]map[int]float64
	mapBytes                                                 map[int]float64
	backend                                                  map[string]string
}

func summarizeRuns(res *results) *summary {
	s := &summary{res: res, ns: res.Config.Ns, impls: res.Config.Impls, backend: map[string]string{}}
	type key struct {
		impl string
		n    int
	}
	byKey := map[key][]runResult{}
	for _, r := range res.Runs {
		k := key{r.Impl, r.N}
		byKey[k] = append(byKey[k], r)
		if r.Worker.Backend != "" {
			s.backend[r.Impl] = r.Worker.Backend
		}
	}
	med := func(runs []runResult, f func(runResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return median(v)
	}
	s.fullSync, s.addService, s.endpointChange, s.syncEndpointChange = nest(), nest(), nest(), nest()
	s.bulk = nest()
	s.mapBytes = map[int]float64{}
	s.tcp, s.udp = map[string]map[int]map[string]latency{}, map[string]map[int]map[string]latency{}
	for _, impl := range s.impls {
		s.tcp[impl], s.udp[impl] = map[int]map[string]latency{}, map[int]map[string]latency{}
		for _, n := range s.ns {
			runs := byKey[key{impl, n}]
			if len(runs) == 0 {
				continue
			}
			s.bulk[impl][n] = med(runs, func(r runResult) float64 { return r.BulkGbps })
			s.tcp[impl][n], s.udp[impl][n] = map[string]latency{}, map[string]latency{}
			for _, pos := range positions {
				s.tcp[impl][n][pos] = latency{
					P50: med(runs, func(r runResult) float64 { return r.TCP[pos].P50 }),
					P99: med(runs, func(r runResult) float64 { return r.TCP[pos].P99 }),
				}
				s.udp[impl][n][pos] = latency{
					P50: med(runs, func(r runResult) float64 { return r.UDP[pos].P50 }),
					P99: med(runs, func(r runResult) float64 { return r.UDP[pos].P99 }),
				}
			}
			if impl == implNone {
				continue
			}
			s.fullSync[impl][n] = med(runs, func(r runResult) float64 { return r.Worker.FullSync })
			s.addService[impl][n] = med(runs, func(r runResult) float64 { return r.Worker.AddService })
			s.endpointChange[impl][n] = med(runs, func(r runResult) float64 { return r.Worker.EndpointChange })
			if impl == implXDPlane {
				s.syncEndpointChange[impl][n] = med(runs, func(r runResult) float64 { return r.Worker.SyncEndpointChange })
				s.mapBytes[n] = med(runs, func(r runResult) float64 { return float64(r.Worker.MapBytes) })
			}
		}
	}
	return s
}

func nest() map[string]map[int]float64 {
	m := map[string]map[int]float64{}
	for _, impl := range allImpls {
		m[impl] = map[int]float64{}
	}
	return m
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// kubeProxyModes are the implementations xdplane is compared with.
func (s *summary) kubeProxyModes() []string {
	var out []string
	for _, impl := range s.impls {
		if impl != implNone && impl != implXDPlane {
			out = append(out, impl)
		}
	}
	return out
}

func (s *summary) has(impl string) bool { return slices.Contains(s.impls, impl) }

func fmtSeconds(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 1:
		return fmt.Sprintf("%.2f s", v)
	case v >= 1e-3:
		return fmt.Sprintf("%.1f ms", v*1e3)
	default:
		return fmt.Sprintf("%.0f µs", v*1e6)
	}
}

func fmtRatio(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case v < 0.001:
		return strconv.FormatFloat(v, 'e', 1, 64)
	case v < 0.01:
		return fmt.Sprintf("%.4f", v)
	case v < 0.1:
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func get(m map[int]float64, n int) float64 {
	if v, ok := m[n]; ok {
		return v
	}
	return math.NaN()
}

func (s *summary) header(first string) string {
	var b strings.Builder
	b.WriteString("| " + first + " |")
	for _, n := range s.ns {
		fmt.Fprintf(&b, " N = %d |", n)
	}
	b.WriteString("\n|---|")
	for range s.ns {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	return b.String()
}

// programmingTable is one of the sync measurements, with ratio rows.
func (s *summary) programmingTable(title string, m map[string]map[int]float64) string {
	var b strings.Builder
	b.WriteString(s.header(title))
	for _, impl := range s.impls {
		if impl == implNone {
			continue
		}
		fmt.Fprintf(&b, "| %s |", impl)
		for _, n := range s.ns {
			fmt.Fprintf(&b, " %s |", fmtSeconds(get(m[impl], n)))
		}
		b.WriteString("\n")
	}
	if s.has(implXDPlane) {
		for _, kp := range s.kubeProxyModes() {
			fmt.Fprintf(&b, "| xdplane / %s |", kp)
			for _, n := range s.ns {
				fmt.Fprintf(&b, " %s |", fmtRatio(get(m[implXDPlane], n)/get(m[kp], n)))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func (s *summary) latencyTable(proto string, m map[string]map[int]map[string]latency) string {
	var b strings.Builder
	b.WriteString(s.header(proto + ", p50 / p99 µs"))
	for _, impl := range s.impls {
		for _, pos := range positions {
			fmt.Fprintf(&b, "| %s, %s |", impl, pos)
			for _, n := range s.ns {
				if l, ok := m[impl][n][pos]; ok {
					fmt.Fprintf(&b, " %.0f / %.0f |", l.P50, l.P99)
				} else {
					b.WriteString(" – |")
				}
			}
			b.WriteString("\n")
		}
	}
	if s.has(implXDPlane) {
		others := append([]string{implNone}, s.kubeProxyModes()...)
		for _, o := range others {
			if !s.has(o) {
				continue
			}
			for _, pos := range positions {
				fmt.Fprintf(&b, "| xdplane / %s, %s, p50 |", o, pos)
				for _, n := range s.ns {
					fmt.Fprintf(&b, " %s |", fmtRatio(m[implXDPlane][n][pos].P50/m[o][n][pos].P50))
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

func (s *summary) bulkTable() string {
	var b strings.Builder
	b.WriteString(s.header("bulk TCP, Gbit/s"))
	for _, impl := range s.impls {
		fmt.Fprintf(&b, "| %s |", impl)
		for _, n := range s.ns {
			fmt.Fprintf(&b, " %.2f |", get(s.bulk[impl], n))
		}
		b.WriteString("\n")
	}
	if s.has(implNone) {
		for _, impl := range s.impls {
			if impl == implNone {
				continue
			}
			fmt.Fprintf(&b, "| %s / none |", impl)
			for _, n := range s.ns {
				fmt.Fprintf(&b, " %s |", fmtRatio(get(s.bulk[impl], n)/get(s.bulk[implNone], n)))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// goal is one of the targets, judged on this run.
type goal struct {
	text, measured string
	met            bool
}

func (s *summary) goals() []goal {
	var out []goal
	big := slices.Max(s.ns)
	if s.has(implXDPlane) {
		fastest, fastestImpl := math.Inf(1), ""
		for _, kp := range s.kubeProxyModes() {
			if v := get(s.fullSync[kp], big); v < fastest {
				fastest, fastestImpl = v, kp
			}
		}
		if fastestImpl != "" {
			x := get(s.fullSync[implXDPlane], big)
			out = append(out, goal{
				text: fmt.Sprintf("full sync of %d services at least 25 times faster than the fastest kube-proxy mode", big),
				measured: fmt.Sprintf("xdplane %s, %s %s: %.1f times faster", fmtSeconds(x), fastestImpl,
					fmtSeconds(fastest), fastest/x),
				met: fastest/x >= 25,
			})
		}
		ec, sc := get(s.endpointChange[implXDPlane], big), get(s.syncEndpointChange[implXDPlane], big)
		out = append(out, goal{
			text: fmt.Sprintf("one endpoint change at %d services under 1 ms", big),
			measured: fmt.Sprintf("%s by `Upsert`, the incremental API; %s by `Sync` of the whole desired set, which "+
				"examples/kube-agent calls, after its 10 ms debounce, so the verdict holds for `Upsert` only", fmtSeconds(ec), fmtSeconds(sc)),
			met: ec < 1e-3,
		})
		if s.has(implNone) {
			var worst float64
			var parts []string
			for _, proto := range []struct {
				name string
				m    map[string]map[int]map[string]latency
			}{{"TCP", s.tcp}, {"UDP", s.udp}} {
				for _, pos := range positions {
					r := proto.m[implXDPlane][big][pos].P50 / proto.m[implNone][big][pos].P50
					worst = max(worst, r)
					parts = append(parts, fmt.Sprintf("%s %s %.3f", proto.name, pos, r))
				}
			}
			g := goal{
				text:     fmt.Sprintf("per-connection latency (p50) at %d services within 5%% of no service rules", big),
				measured: "xdplane / none: " + strings.Join(parts, ", "),
				met:      worst <= 1.05,
			}
			if s.has(implIPTablesLegacy) || s.has(implIPTablesNFT) {
				small := slices.Min(s.ns)
				var grow []string
				for _, kp := range []string{implIPTablesLegacy, implIPTablesNFT} {
					if s.has(kp) {
						grow = append(grow, fmt.Sprintf("%s, last service, TCP p50 %.0f µs at %d and %.0f µs at %d", kp,
							s.tcp[kp][small]["last"].P50, small, s.tcp[kp][big]["last"].P50, big))
					}
				}
				g.measured += "; for comparison " + strings.Join(grow, "; ")
			}
			out = append(out, g)
			bulk := get(s.bulk[implXDPlane], big) / get(s.bulk[implNone], big)
			out = append(out, goal{
				text:     "bulk TCP throughput at least 0.9 of the no-rules baseline",
				measured: fmt.Sprintf("%.3f at %d services", bulk, big),
				met:      bulk >= 0.9,
			})
		}
	}
	return out
}

func (s *summary) markdown() string {
	var b strings.Builder
	m := s.res.Machine
	cfg := s.res.Config
	fmt.Fprintf(&b, "### The run of %s\n\n", s.res.Started.Format("2006-01-02"))
	fmt.Fprintf(&b, "Written by `make bench-kube-proxy`: the real kube-proxy %s, driven in-process, against xdplane's "+
		"`lb` on the tc hook, on the same machine, topology and services, in one run.\n\n", m.KubeProxy)
	fmt.Fprintf(&b, "- **Machine:** %s, %d CPUs, %d GiB", m.CPU, m.CPUs, m.MemoryGiB)
	if m.Hypervisor != "" && m.Hypervisor != "none" {
		fmt.Fprintf(&b, " (systemd-detect-virt: %s)", m.Hypervisor)
	}
	fmt.Fprintf(&b, "; %s; %s.\n", m.Kernel, m.Go)
	fmt.Fprintf(&b, "- **Tools:** %s; %s.\n", m.IPTables, m.NFT)
	fmt.Fprintf(&b, "- **Method:** each figure is the median of %d runs; every run builds a fresh client, node and backend "+
		"namespace. Each service has one port (TCP for even-numbered services, UDP for odd) and %d endpoints. "+
		"Latency: %d requests per destination choice per run, each a new TCP connection with a one-byte echo, or a UDP "+
		"request and reply from a new socket; \"random\" picks a service for each request (seed %d), \"first\" and \"last\" "+
		"are the first and last service in the order packets meet the rules (iptables' KUBE-SERVICES chain; the order "+
		"programmed elsewhere). \"none\" is the same traffic sent to the endpoints' addresses with no service rules at "+
		"all. Bulk: one TCP stream for %v s to the first service.\n",
		cfg.Repeat, endpointsPerService, cfg.Requests, cfg.Seed, cfg.Bulk.Seconds())
	b.WriteString("- **Programming:** kube-proxy's own sync function, called and timed directly (its first sync is a full " +
		"one; the next are partial where the mode has partial syncs); xdplane's `Manager.Sync` of the whole set, then " +
		"`Upsert` of the one service that changes. \"Add a service\" adds one with its endpoints; \"endpoint change\" " +
		"moves one endpoint of one service.\n")
	for _, impl := range s.impls {
		if bk := s.backend[impl]; bk != "" {
			fmt.Fprintf(&b, "- **%s:** %s.\n", impl, strings.ReplaceAll(bk, "\n", "; "))
		}
	}
	b.WriteString("\n![Full sync time against the number of services](kube-proxy/sync.png)\n")
	b.WriteString("![New TCP connection latency against the number of services](kube-proxy/latency.png)\n\n")

	b.WriteString("#### Goals\n\n")
	for _, g := range s.goals() {
		verdict := "**not met**"
		if g.met {
			verdict = "met"
		}
		fmt.Fprintf(&b, "- %s: %s (%s).\n", g.text, verdict, g.measured)
	}
	b.WriteString("\n#### Programming time\n\n")
	b.WriteString(s.programmingTable("full sync", s.fullSync) + "\n")
	b.WriteString(s.programmingTable("add one service", s.addService) + "\n")
	b.WriteString(s.programmingTable("endpoint change", s.endpointChange) + "\n")
	if s.has(implXDPlane) {
		b.WriteString("The same endpoint change through `Sync` of the whole desired set (what an agent that reconciles " +
			"state calls):")
		for _, n := range s.ns {
			fmt.Fprintf(&b, " %s at N = %d;", fmtSeconds(get(s.syncEndpointChange[implXDPlane], n)), n)
		}
		b.WriteString("\n\n")
	}
	b.WriteString("#### Latency of a new connection\n\n")
	b.WriteString(s.latencyTable("TCP", s.tcp) + "\n")
	b.WriteString(s.latencyTable("UDP", s.udp) + "\n")
	b.WriteString("#### Bulk throughput\n\n")
	b.WriteString(s.bulkTable() + "\n")
	if s.has(implXDPlane) {
		b.WriteString("#### xdplane's map memory\n\n")
		b.WriteString(s.header("maps (memlock)"))
		b.WriteString("| xdplane |")
		for _, n := range s.ns {
			fmt.Fprintf(&b, " %.1f MiB |", get(s.mapBytes, n)/(1<<20))
		}
		b.WriteString("\n\nWhat the kernel charges for all of xdplane's maps, with the default `datapath.Limits`. Most of it " +
			"is preallocated whatever N is: the conntrack and affinity LRU maps (131,072 and 65,536 entries), the per-CPU " +
			"counters and the policy maps' fixed parts; the service, backend, slot and reverse-NAT maps allocate per entry " +
			"and grow with N.\n")
	}
	return b.String()
}
