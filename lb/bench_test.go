package lb_test

// Per-packet cost of the load balancer, measured by the kernel through
// BPF_PROG_TEST_RUN. `make bench` runs these and prints them as a table of
// ratios (internal/scripts/bench.sh, docs/benchmarks.md); `go test -bench`
// works on its own too.
//
// Each iteration runs the program once on one packet (repeat=1) and keeps
// the duration the kernel reports for that run. Repeat=1 is not a
// convenience: BPF_PROG_TEST_RUN reuses one buffer for all repetitions of a
// call, so from the second repetition on the program would see the packet
// it had itself rewritten to a backend, which is no longer for a service.
// The trivial programs are measured the same way, so the kernel's timing
// overhead appears in both and the ratio compares like with like.

import (
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/benchrand"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

const (
	xdpPass     = 2
	tcActUnspec = ^uint32(0) // TC_ACT_UNSPEC (-1): what xdplane returns for a packet it lets through

	// benchConntrack is large enough that no case fills conntrack at the
	// sample counts bench.sh uses (and at -benchtime=1s): inserting into
	// a full LRU map would add eviction to the new-flow cost.
	benchConntrack = 1 << 22
	// benchMaxServices holds the largest default size with the map 95% full.
	benchMaxServices = 1 << 20
)

var (
	benchServices = flag.String("xdplane.bench-services", "",
		"comma-separated service counts for BenchmarkPacket (default 1,10000,100000,1000000; with -short 1,10000)")
	benchFlows = flag.Int("xdplane.bench-flows", 0,
		"established flows each established case of BenchmarkPacket makes and draws from (default 65536; with -short 1024)")
)

// benchSizes are the service counts measured: 1 and 10k in -short mode (CI
// runs that, once, so the benchmarks cannot rot), 100k and 1M as well
// otherwise.
func benchSizes(b *testing.B) []int {
	list := *benchServices
	switch {
	case list != "":
	case testing.Short():
		list = "1,10000"
	default:
		list = "1,10000,100000,1000000"
	}
	var sizes []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > benchMaxServices {
			b.Fatalf("-xdplane.bench-services: %q: want counts from 1 to %d", f, benchMaxServices)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// flowCount is how many flows each established case makes; a packet of
// the case belongs to one of them at random. It is the same at every size,
// so that the conntrack lookup costs the same and only the service maps
// grow. It matters as much as the number of services: the conntrack
// entries of 1024 flows stay in the CPU's caches, those of 65536 do not.
func flowCount() int {
	switch {
	case *benchFlows > 0:
		return *benchFlows
	case testing.Short():
		return 1 << 10
	}
	return 1 << 16
}

// BenchmarkPacket reports, per case, the mean kernel-measured time per
// packet ("ns/pkt") and its median and 99th percentile. Within each size
// it first measures trivial XDP and tc programs that only return a verdict,
// the baselines the table's ratios divide by.
func BenchmarkPacket(b *testing.B) {
	testutil.RequireRoot(b)
	benchrand.Seed(b) // prints the run's seed before any result
	trivialXDP := testutil.TrivialProgram(b, ebpf.XDP, xdpPass)
	trivialTC := testutil.TrivialProgram(b, ebpf.SchedCLS, -1)

	for _, n := range benchSizes(b) {
		b.Run("services="+strconv.Itoa(n), func(b *testing.B) {
			env := newBenchEnv(b, n, lb.Random)
			b.Run("install", env.reportInstall)

			progs := kernel.Of(env.dp).Programs
			for _, hook := range []struct {
				name    string
				trivial *ebpf.Program
				lb      *ebpf.Program
				verdict uint32
			}{
				{"xdp", trivialXDP, progs.XdplaneXdp, xdpPass},
				{"tc", trivialTC, progs.XdplaneTcIngress, tcActUnspec},
			} {
				b.Run(hook.name+"/trivial", func(b *testing.B) {
					pkt := tcpSYN(nil, client(0), env.frontend(0))
					measure(b, hook.trivial, hook.verdict, func(*rand.Rand) []byte { return pkt })
				})
				b.Run(hook.name+"/established", func(b *testing.B) {
					flows := env.newFlows(b, hook.lb, hook.verdict)
					check := env.expect(b, "ForwardEstablished", func(c datapath.Counters) uint64 { return c.ForwardEstablished.Packets })
					var buf []byte
					check(measure(b, hook.lb, hook.verdict, func(r *rand.Rand) []byte {
						f := flows[r.IntN(len(flows))]
						buf = tcpSYN(buf, f.client, env.frontend(f.svc))
						return buf
					}))
				})
				b.Run(hook.name+"/new", func(b *testing.B) {
					check := env.expect(b, "ForwardNew", func(c datapath.Counters) uint64 { return c.ForwardNew.Packets })
					var buf []byte
					check(measure(b, hook.lb, hook.verdict, func(r *rand.Rand) []byte {
						buf = tcpSYN(buf, newClient(), env.frontend(r.IntN(env.n)))
						return buf
					}))
					if used := 2 * (clients.Load() - env.clients); used > benchConntrack*9/10 {
						b.Logf("conntrack nearly full (%d of %d entries used over the run): late samples may include LRU eviction", used, benchConntrack)
					}
				})
			}

			// The algorithm matters only for new flows: the same service
			// with Maglev, at one service. (BenchmarkMaglevSync measures
			// installing many.)
			if n > 1 {
				return
			}
			menv := newBenchEnv(b, n, lb.Maglev)
			mprogs := kernel.Of(menv.dp).Programs
			for _, hook := range []struct {
				name    string
				lb      *ebpf.Program
				verdict uint32
			}{
				{"xdp", mprogs.XdplaneXdp, xdpPass},
				{"tc", mprogs.XdplaneTcIngress, tcActUnspec},
			} {
				b.Run(hook.name+"/new-maglev", func(b *testing.B) {
					check := menv.expect(b, "ForwardNew", func(c datapath.Counters) uint64 { return c.ForwardNew.Packets })
					var buf []byte
					check(measure(b, hook.lb, hook.verdict, func(r *rand.Rand) []byte {
						buf = tcpSYN(buf, newClient(), menv.frontend(r.IntN(menv.n)))
						return buf
					}))
				})
			}
		})
	}
}

// measure runs prog once per iteration on the packet next returns, checks
// the verdict, reports the kernel's durations and returns how many packets
// it ran.
func measure(b *testing.B, prog *ebpf.Program, verdict uint32, next func(*rand.Rand) []byte) int {
	r := benchrand.New(b, b.Name())
	unpin := pinCPU(b)
	defer unpin()

	var ns []uint32
	for b.Loop() {
		pkt := next(r)
		ret, d, err := prog.Benchmark(pkt, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != verdict {
			b.Fatalf("verdict %d, want %d", int32(ret), int32(verdict))
		}
		ns = append(ns, uint32(d.Nanoseconds()))
	}
	report(b, ns)
	return len(ns)
}

// report sets the metrics of a case from its samples.
func report(b *testing.B, ns []uint32) {
	if len(ns) == 0 {
		return
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	slices.Sort(ns)
	b.ReportMetric(sum/float64(len(ns)), "ns/pkt")
	b.ReportMetric(float64(ns[len(ns)/2]), "p50-ns")
	b.ReportMetric(float64(ns[len(ns)*99/100]), "p99-ns")
}

// pinCPU keeps the calling goroutine on one thread and that thread on one
// CPU, so that consecutive runs find the caches they warmed.
func pinCPU(b *testing.B) (unpin func()) {
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	cpu := -1
	for i := 0; i < 1024; i++ {
		if old.IsSet(i) {
			cpu = i // the last CPU allowed
		}
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		b.Logf("pin to CPU %d: %v", cpu, err)
	}
	return func() {
		_ = unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}
}

// benchEnv is a datapath holding n services of one backend each.
type benchEnv struct {
	n       int
	dp      *datapath.Datapath
	clients uint64 // the clients counter when dp was made

	sync       time.Duration // Manager.Sync of the n services into empty maps
	serviceMem uint64        // bytes the kernel charges for the service maps
	ctMem      uint64        // and for conntrack
	rss        uint64        // this process's resident set after Sync
}

// benchFlow is an established flow: a client of service svc.
type benchFlow struct {
	client netip.AddrPort
	svc    int
}

// newFlows establishes flows from fresh clients to random services, each
// made by prog itself as a real first packet would make it. Each
// established case makes its own just before it runs: a flow's first
// packet more than a second after the last refresh takes a slower path
// (it refreshes the entry), which a steady flow pays once a second, not
// once in every few packets as it would here.
func (env *benchEnv) newFlows(b *testing.B, prog *ebpf.Program, verdict uint32) []benchFlow {
	n := flowCount()
	r := benchrand.New(b, "lb-flows/"+strconv.Itoa(env.n))
	flows := make([]benchFlow, n)
	var buf []byte
	for i := range flows {
		f := benchFlow{client: newClient(), svc: r.IntN(env.n)}
		buf = tcpSYN(buf, f.client, env.frontend(f.svc))
		if ret, _, err := prog.Benchmark(buf, 1, nil); err != nil || ret != verdict {
			b.Fatalf("make flow %d: verdict %d, %v", i, int32(ret), err)
		}
		flows[i] = f
	}
	return flows
}

func newBenchEnv(b *testing.B, n int, alg lb.Algorithm) *benchEnv {
	dir := testutil.BPFFS(b)
	dp, err := datapath.Open(datapath.Options{Dir: dir, Limits: datapath.Limits{
		MaxServices:     benchMaxServices,
		MaxBackends:     benchMaxServices,
		MaxBackendSlots: benchMaxServices,
		ConntrackSize:   benchConntrack,
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		dp.Close()
		if err := datapath.Remove(dir); err != nil {
			b.Errorf("remove datapath: %v", err)
		}
	})
	env := &benchEnv{n: n, dp: dp, clients: clients.Load()}

	mgr, err := lb.NewManager(dp)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mgr.Close() }) // before Remove, which refuses while it is open
	services := make([]lb.Service, n)
	for i := range services {
		services[i] = lb.Service{
			Frontend:  lb.Frontend{Address: env.frontend(i), Protocol: lb.TCP},
			Backends:  []lb.Backend{{Address: backendAddr(i)}},
			Algorithm: alg,
		}
		if alg == lb.Maglev {
			services[i].MaglevTableSize = lb.MinMaglevTableSize
		}
	}
	start := time.Now()
	if _, err := mgr.Sync(services); err != nil {
		b.Fatalf("sync %d services: %v", n, err)
	}
	env.sync = time.Since(start)
	m := kernel.Of(dp).Maps
	env.serviceMem = mapMemory(b, m.Services, m.BackendSlots, m.Backends, m.Revnat, m.BackendStats)
	env.ctMem = mapMemory(b, m.Conntrack)
	env.rss = residentSet()

	return env
}

// reportInstall is a sub-benchmark that only reports what newBenchEnv
// measured, so that install cost appears beside the per-packet figures.
func (env *benchEnv) reportInstall(b *testing.B) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(env.sync.Seconds()*1e3, "sync-ms")
	b.ReportMetric(env.sync.Seconds()*1e6/float64(env.n), "sync-us/svc")
	b.ReportMetric(float64(env.serviceMem)/(1<<20), "svc-maps-MiB")
	b.ReportMetric(float64(env.ctMem)/(1<<20), "conntrack-MiB")
	b.ReportMetric(float64(env.rss)/(1<<20), "rss-MiB")
}

// expect reads the counter get selects and returns a check that fails b
// unless the counter has since gone up by exactly the packets run: proof
// that every packet took the path the case is named after (a "new" packet
// that met a conntrack entry, or an "established" one that did not, would
// land in the other counter).
func (env *benchEnv) expect(b *testing.B, name string, get func(datapath.Counters) uint64) (check func(packets int)) {
	read := func() uint64 {
		c, err := env.dp.Counters()
		if err != nil {
			b.Fatal(err)
		}
		return get(c)
	}
	before := read()
	return func(packets int) {
		if got := read() - before; got != uint64(packets) {
			b.Errorf("%s counted %d packets, want %d: not every packet took the path measured", name, got, packets)
		}
	}
}

// frontend returns the address of service i: 10.0.0.1 onwards, port 80.
func (env *benchEnv) frontend(i int) netip.AddrPort {
	return netip.AddrPortFrom(addrFrom(0x0a000001+uint32(i)), 80)
}

// backendAddr returns the one backend of service i: 100.64.0.1 onwards.
func backendAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(addrFrom(0x64400001+uint32(i)), 8080)
}

// clients counts the client endpoints handed out in this process, so that
// no two flows ever share a 5-tuple.
var clients atomic.Uint64

func newClient() netip.AddrPort { return client(clients.Add(1)) }

// client returns the i-th client endpoint: 20.0.0.0/8 and then ports.
func client(i uint64) netip.AddrPort {
	return netip.AddrPortFrom(addrFrom(0x14000000|uint32(i&0xffffff)), uint16(1024+i>>24))
}

func addrFrom(v uint32) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// tcpSYN writes an Ethernet + IPv4 + TCP SYN frame from src to dst into
// buf's storage, with correct checksums, and returns it.
func tcpSYN(buf []byte, src, dst netip.AddrPort) []byte {
	const ethLen, ipLen, tcpLen = 14, 20, 20
	buf = append(buf[:0], make([]byte, ethLen+ipLen+tcpLen)...)
	copy(buf[0:6], []byte{0x02, 0, 0, 0, 0, 0x02})
	copy(buf[6:12], []byte{0x02, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(buf[12:], 0x0800)

	ip := buf[ethLen : ethLen+ipLen]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], ipLen+tcpLen)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip)))

	tcp := buf[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	pseudo := sum16(s[:]) + sum16(d[:]) + unix.IPPROTO_TCP + tcpLen
	binary.BigEndian.PutUint16(tcp[16:], ^fold(pseudo+sum16(tcp)))
	return buf
}

func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// mapMemory sums the memory the kernel charges for maps ("memlock" in each
// map's fdinfo).
func mapMemory(b *testing.B, maps ...*ebpf.Map) uint64 {
	var total uint64
	for _, mp := range maps {
		raw, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", strconv.Itoa(mp.FD())))
		if err != nil {
			b.Logf("read fdinfo of %v: %v", mp, err)
			continue
		}
		total += fdinfoField(string(raw), "memlock")
	}
	return total
}

// residentSet returns this process's resident set size in bytes.
func residentSet() uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return fdinfoField(string(raw), "VmRSS") << 10 // in kB
}

func fdinfoField(s, name string) uint64 {
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(line, ":"); ok && k == name {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
