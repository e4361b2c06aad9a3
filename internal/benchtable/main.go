// Command benchtable reads `go test -bench` output of lb's BenchmarkPacket
// on stdin and prints it as Markdown tables: per-packet cost with its ratio
// to the trivial program measured in the same run, and the cost of
// installing the services. With -count above 1, every figure is the median
// over the runs. `make bench` pipes into it (internal/scripts/bench.sh).
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
	how := "one run"
	if r.runs > 1 {
		how = fmt.Sprintf("median of %d runs", r.runs)
	}
	fmt.Fprintf(w, "Per-packet cost, measured by the kernel (BPF_PROG_TEST_RUN, one packet per run, %s).\n", how)
	fmt.Fprintf(w, "× trivial: ns/pkt over the trivial program of the same hook, measured in the same run.\n\n")
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
	table(w, pkt, 1)

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
	if len(inst) > 1 {
		fmt.Fprintf(w, "\nInstalling the services: lb.Manager.Sync into empty maps, one backend each; then\n"+
			"the kernel memory of the service maps and of conntrack (preallocated), and the process's resident set.\n\n")
		table(w, inst, 0)
	}
}

func metric(r *results, name, unit, format string) string {
	v, ok := r.get(name, unit)
	if !ok {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func duration(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
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
