package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

func main() {
	res, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if len(res.order) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results on stdin")
		os.Exit(1)
	}
	write(os.Stdout, res)
}

// results are the metrics of each benchmark, every sample of each unit,
// in the order the benchmarks first appeared.
type results struct {
	order   []string
	metrics map[string]map[string][]float64
	runs    int // the most samples any metric has: the -count
}

// procSuffix is the -GOMAXPROCS suffix go test appends to names.
var procSuffix = regexp.MustCompile(`-\d+$`)

func parse(r io.Reader) (*results, error) {
	res := &results{metrics: map[string]map[string][]float64{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
			continue // a log line that happens to start with "Benchmark"
		}
		name := procSuffix.ReplaceAllString(f[0], "")
		m := res.metrics[name]
		if m == nil {
			m = map[string][]float64{}
			res.metrics[name] = m
			res.order = append(res.order, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: metric %q: %w", name, f[i+1], err)
			}
			m[f[i+1]] = append(m[f[i+1]], v)
			res.runs = max(res.runs, len(m[f[i+1]]))
		}
	}
	return res, sc.Err()
}

// get returns the median of a metric, and whether there is one.
func (r *results) get(name, unit string) (float64, bool) {
	v := slices.Clone(r.metrics[name][unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// packetCase splits "BenchmarkPacket/services=N/hook/case".
func packetCase(name string) (services, hook, kase string, ok bool) {
	p := strings.Split(name, "/")
	if len(p) != 4 || p[0] != "BenchmarkPacket" || !strings.HasPrefix(p[1], "services=") {
		return "", "", "", false
	}
	return strings.TrimPrefix(p[1], "services="), p[2], p[3], true
}

func write(w io.Writer, r *results) {
	first := true
	for _, part := range []func(io.Writer, *results) bool{writePacket, writePolicyPacket, writeConn, writeShaping} {
		var b strings.Builder
		if !part(&b, r) {
			continue
		}
		if !first {
			fmt.Fprintln(w)
		}
		first = false
		io.WriteString(w, b.String())
	}
}

// how says how the figures of the benchmarks whose names start with
// prefix were reduced: "one run" or "median of N runs".
func (r *results) how(prefix string) string {
	runs := 0
	for _, name := range r.order {
		if strings.HasPrefix(name, prefix) {
			for _, v := range r.metrics[name] {
				runs = max(runs, len(v))
			}
		}
	}
	if runs > 1 {
		return fmt.Sprintf("median of %d runs", runs)
	}
	return "one run"
}

// writePacket writes lb's BenchmarkPacket tables, and reports whether
// there was anything to write.
func writePacket(w io.Writer, r *results) bool {
	pkt := [][]string{{"case", "services", "ns/pkt", "p50 ns", "p99 ns", "× trivial"}}
	for _, name := range r.order {
		services, hook, kase, ok := packetCase(name)
		if !ok {
			continue
		}
		ns, ok := r.get(name, "ns/pkt")
		if !ok {
			continue
		}
		ratio := "-"
		if base, ok := r.get("BenchmarkPacket/services="+services+"/"+hook+"/trivial", "ns/pkt"); ok && base > 0 {
			ratio = fmt.Sprintf("%.2f", ns/base)
		}
		pkt = append(pkt, []string{hook + " " + kase, thousands(services), fmt.Sprintf("%.1f", ns),
			metric(r, name, "p50-ns", "%.0f"), metric(r, name, "p99-ns", "%.0f"), ratio})
	}

	inst := [][]string{{"services", "Sync", "per service", "service maps", "conntrack", "process RSS"}}
	for _, name := range r.order {
		p := strings.Split(name, "/")
		if len(p) != 3 || p[0] != "BenchmarkPacket" || p[2] != "install" {
			continue
		}
		ms, ok := r.get(name, "sync-ms")
		if !ok {
			continue
		}
		inst = append(inst, []string{thousands(strings.TrimPrefix(p[1], "services=")), duration(ms),
			metric(r, name, "sync-us/svc", "%.1f µs"), metric(r, name, "svc-maps-MiB", "%.0f MiB"),
			metric(r, name, "conntrack-MiB", "%.0f MiB"), metric(r, name, "rss-MiB", "%.0f MiB")})
	}
	if len(pkt) == 1 && len(inst) == 1 {
		return false
	}
	fmt.Fprintf(w, "Per-packet cost, measured by the kernel (BPF_PROG_TEST_RUN, one packet per run, %s).\n", r.how("BenchmarkPacket/"))
	fmt.Fprintf(w, "× trivial: ns/pkt over the trivial program of the same hook, measured in the same run.\n\n")
	table(w, pkt, 1)
	if len(inst) > 1 {
		fmt.Fprintf(w, "\nInstalling the services: lb.Manager.Sync into empty maps, one backend each; then\n"+
			"the kernel memory of the service maps and of conntrack (preallocated), and the process's resident set.\n\n")
		table(w, inst, 0)
	}
	return true
}

// policyCase splits "BenchmarkPolicyPacket/rules=N/case".
func policyCase(name string) (rules, kase string, ok bool) {
	p := strings.Split(name, "/")
	if len(p) != 3 || p[0] != "BenchmarkPolicyPacket" || !strings.HasPrefix(p[1], "rules=") {
		return "", "", false
	}
	return strings.TrimPrefix(p[1], "rules="), p[2], true
}

// writePolicyPacket writes policy's BenchmarkPolicyPacket tables, and
// reports whether there was anything to write.
func writePolicyPacket(w io.Writer, r *results) bool {
	pkt := [][]string{{"case", "rules", "ns/pkt", "p50 ns", "p99 ns", "× trivial", "+ ns over no endpoint"}}
	inst := [][]string{{"rules", "SetPolicy", "peer entries", "port entries", "rule maps"}}
	for _, name := range r.order {
		rules, kase, ok := policyCase(name)
		if !ok {
			continue
		}
		if kase == "install" {
			if ms, ok := r.get(name, "install-ms"); ok {
				mem := "-"
				if mib, ok := r.get(name, "rule-maps-MiB"); ok {
					mem = size(mib)
				}
				inst = append(inst, []string{thousands(rules), duration(ms), thousands(metric(r, name, "peer-entries", "%.0f")),
					thousands(metric(r, name, "port-entries", "%.0f")), mem})
			}
			continue
		}
		ns, ok := r.get(name, "ns/pkt")
		if !ok {
			continue
		}
		prefix := "BenchmarkPolicyPacket/rules=" + rules + "/"
		ratio, over := "-", "-"
		if base, ok := r.get(prefix+"trivial", "ns/pkt"); ok && base > 0 {
			ratio = fmt.Sprintf("%.2f", ns/base)
		}
		if base, ok := r.get(prefix+"no-endpoint", "ns/pkt"); ok && kase != "trivial" {
			over = fmt.Sprintf("%.0f", ns-base)
		}
		pkt = append(pkt, []string{kase, thousands(rules), fmt.Sprintf("%.1f", ns),
			metric(r, name, "p50-ns", "%.0f"), metric(r, name, "p99-ns", "%.0f"), ratio, over})
	}
	if len(pkt) == 1 && len(inst) == 1 {
		return false
	}
	fmt.Fprintf(w, "Network policy, per packet: xdplane_tc_egress judging the endpoint's ingress, measured by the kernel\n"+
		"(BPF_PROG_TEST_RUN, one packet per run, %s). × trivial: over a tc program that only returns,\n"+
		"measured in the same run; + ns over no endpoint: over the same program at an interface that is no endpoint.\n\n", r.how("BenchmarkPolicyPacket/rules="))
	table(w, pkt, 1)
	for _, name := range r.order {
		p := strings.Split(name, "/")
		if len(p) != 3 || p[0] != "BenchmarkPolicyPacket" || p[1] != "ratio" {
			continue
		}
		hi, lo, ok := strings.Cut(strings.TrimPrefix(p[2], "rules="), ":")
		if !ok {
			continue
		}
		var parts []string
		for _, kase := range []string{"new", "established"} {
			if v, ok := r.get(name, "x-"+kase); ok {
				parts = append(parts, fmt.Sprintf("%s %.2f", kase, v))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "\nns/pkt at %s rules over ns/pkt at %s (medians, measured in the same run): %s.\n",
				thousands(hi), thousands(lo), strings.Join(parts, ", "))
		}
	}
	if len(inst) > 1 {
		fmt.Fprintf(w, "\nInstalling the rules: policy.Manager.SetPolicy into empty maps; the entries it wrote,\n"+
			"and the kernel memory of the two rule maps.\n\n")
		table(w, inst, 0)
	}
	return true
}

// connCase splits "BenchmarkConnPolicy/none" and
// "BenchmarkConnPolicy/<variant>/rules=N".
func connCase(name string) (variant, rules string, ok bool) {
	p := strings.Split(name, "/")
	switch {
	case len(p) == 2 && p[0] == "BenchmarkConnPolicy":
		return p[1], "", true
	case len(p) == 3 && p[0] == "BenchmarkConnPolicy" && strings.HasPrefix(p[2], "rules="):
		return p[1], strings.TrimPrefix(p[2], "rules="), true
	}
	return "", "", false
}

// writeConn writes policy's BenchmarkConnPolicy table and the lines that
// set xdplane beside iptables, and reports whether there was anything to
// write.
func writeConn(w io.Writer, r *results) bool {
	base, haveBase := r.get("BenchmarkConnPolicy/none", "ns/conn")
	rows := [][]string{{"case", "rules", "µs/conn", "p50 µs", "p99 µs", "× none", "install"}}
	type key struct{ variant, rules string }
	conn := map[key]float64{}
	var counts []string
	for _, name := range r.order {
		variant, rules, ok := connCase(name)
		if !ok {
			continue
		}
		ns, ok := r.get(name, "ns/conn")
		if !ok {
			continue
		}
		conn[key{variant, rules}] = ns
		if rules != "" && !slices.Contains(counts, rules) {
			counts = append(counts, rules)
		}
		ratio, install := "-", "-"
		if haveBase && base > 0 {
			ratio = fmt.Sprintf("%.2f", ns/base)
		}
		if ms, ok := r.get(name, "install-ms"); ok {
			install = duration(ms)
		}
		rows = append(rows, []string{variant, thousands(rules), fmt.Sprintf("%.1f", ns/1e3),
			metric(r, name, "p50-ns", "%.1f", 1e-3), metric(r, name, "p99-ns", "%.1f", 1e-3), ratio, install})
	}
	if len(rows) == 1 {
		return false
	}
	fmt.Fprintf(w, "Network policy, per connection: TCP connect, one byte, reset, from an allowed client to a pod\n"+
		"through a forwarding node (%s). × none: over the same with no filtering, in the same run.\n\n", r.how("BenchmarkConnPolicy/"))
	table(w, rows, 1)
	var lines []string
	for _, n := range counts {
		x, ok := conn[key{"xdplane", n}]
		if !ok {
			continue
		}
		var others []string
		for _, v := range []string{"iptables", "iptables-legacy"} {
			if ipt, ok := conn[key{v, n}]; ok && ipt > 0 {
				others = append(others, fmt.Sprintf("%s %.1f µs (xdplane ÷ %s = %.2f)", v, ipt/1e3, v, x/ipt))
			}
		}
		if len(others) == 0 {
			continue
		}
		line := fmt.Sprintf("At %s rules: xdplane %.1f µs/conn, %s", thousands(n), x/1e3, strings.Join(others, ", "))
		if haveBase {
			line += fmt.Sprintf("; none %.1f µs", base/1e3)
		}
		lines = append(lines, line+".")
	}
	if len(lines) > 0 {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
	return true
}

// metric formats the median of a metric, times scale if given, or "-".
func metric(r *results, name, unit, format string, scale ...float64) string {
	v, ok := r.get(name, unit)
	if !ok {
		return "-"
	}
	for _, s := range scale {
		v *= s
	}
	return fmt.Sprintf(format, v)
}

func duration(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// size writes a size given in MiB, in KiB below 1 MiB.
func size(mib float64) string {
	if mib < 1 {
		return fmt.Sprintf("%.0f KiB", mib*1024)
	}
	return fmt.Sprintf("%.1f MiB", mib)
}

// thousands writes 1000000 as 1,000,000; anything not a number as it is.
func thousands(s string) string {
	if _, err := strconv.Atoi(s); err != nil || len(s) <= 3 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// table writes rows as a Markdown table, the first row the header. The
// first left columns are left-aligned, the others (numbers) right-aligned.
func table(w io.Writer, rows [][]string, left int) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c), 3)
		}
	}
	line := func(row []string) {
		var b strings.Builder
		for i, c := range row {
			if i < left {
				fmt.Fprintf(&b, "| %-*s ", width[i], c)
			} else {
				fmt.Fprintf(&b, "| %*s ", width[i], c)
			}
		}
		fmt.Fprintln(w, b.String()+"|")
	}
	line(rows[0])
	var b strings.Builder
	for i, n := range width {
		if i < left {
			b.WriteString("|" + strings.Repeat("-", n+2))
		} else {
			b.WriteString("|" + strings.Repeat("-", n+1) + ":")
		}
	}
	fmt.Fprintln(w, b.String()+"|")
	for _, row := range rows[1:] {
		line(row)
	}
}

// writeShaping writes policy's BenchmarkShaping table, and reports
// whether there was anything to write.
func writeShaping(w io.Writer, r *results) bool {
	const prefix = "BenchmarkShaping/"
	rows := [][]string{{"case", "ns/pkt", "p50 ns", "p99 ns", "× trivial", "+ ns over endpoint"}}
	for _, name := range r.order {
		kase, ok := strings.CutPrefix(name, prefix)
		if !ok || strings.Contains(kase, "/") {
			continue
		}
		ns, ok := r.get(name, "ns/pkt")
		if !ok {
			continue
		}
		ratio, over := "-", "-"
		if base, ok := r.get(prefix+"trivial", "ns/pkt"); ok && base > 0 {
			ratio = fmt.Sprintf("%.2f", ns/base)
		}
		if base, ok := r.get(prefix+"endpoint", "ns/pkt"); ok && kase != "trivial" && kase != "no-endpoint" {
			over = fmt.Sprintf("%.0f", ns-base)
		}
		rows = append(rows, []string{kase, fmt.Sprintf("%.1f", ns),
			metric(r, name, "p50-ns", "%.0f"), metric(r, name, "p99-ns", "%.0f"), ratio, over})
	}
	if len(rows) == 1 {
		return false
	}
	fmt.Fprintf(w, "Bandwidth limits, per packet: xdplane_tc_egress applying an endpoint's ingress limit, measured by\n"+
		"the kernel (BPF_PROG_TEST_RUN, one packet per run, %s). × trivial: over a tc program that only\n"+
		"returns, in the same run; + ns over endpoint: over the same program at an endpoint with no limit.\n\n", r.how(prefix))
	table(w, rows, 1)
	return true
}
