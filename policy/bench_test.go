package policy

// Per-packet cost of network policy, measured by the kernel through
// BPF_PROG_TEST_RUN, at 10, 10k and 100k rules; and the xdplane side of
// BenchmarkConnPolicy (connbench_test.go). `make bench` runs both and
// prints them as tables (internal/scripts/bench.sh, docs/benchmarks.md).
//
// The program measured is xdplane_tc_egress, which judges what enters the
// endpoint (its ingress policy) and then does the load balancer's reverse
// NAT. It finds the endpoint by the interface index in the skb, so every
// run passes a context naming the endpoint's interface, as rig_test.go's
// golden tests do. (*ebpf.Program).Benchmark returns the kernel's time but
// takes no context, and Run takes one but drops the time, so
// testutil.RunTimed makes the BPF_PROG_TEST_RUN call itself.
//
// Each run is one packet (repeat 1), and each "new" packet is a flow never
// seen: after its first run a flow is in policy_ct and takes the
// established path, so repeating one packet would measure a hash lookup,
// not the rules.

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/benchrand"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

var (
	benchRuleCounts = flag.String("xdplane.bench-rules", "",
		"comma-separated rule counts for BenchmarkPolicyPacket (default 10,10000,100000; with -short 10,10000)")
	benchPolicyFlows = flag.Int("xdplane.bench-flows", 0,
		"established flows the established case of BenchmarkPolicyPacket makes and draws from (default 65536; with -short 1024)")
	benchOnePort = flag.Bool("xdplane.bench-one-port", false,
		"every rule of BenchmarkPolicyPacket allows TCP port 443, instead of a random port each: the ports table then holds one entry, and only the peers table grows")
)

const (
	// benchMaxRules bounds -xdplane.bench-rules: the datapath below holds
	// that many peer prefixes and port entries.
	benchMaxRules = 1 << 20
	// benchPolicyConntrack holds every flow one case makes at the sample
	// counts bench.sh uses (100,000 new flows, or 65,536 established
	// ones, two entries each; each case starts with policy_ct empty), so
	// that no insert pays for an LRU eviction.
	benchPolicyConntrack = 1 << 20
)

// policyBenchSizes are the rule counts measured: 10 and 10k with -short
// (CI runs that, once, so the benchmark cannot rot), 100k as well
// otherwise. The ratio is of the largest over the smallest.
func policyBenchSizes(b *testing.B) []int {
	list := *benchRuleCounts
	switch {
	case list != "":
	case testing.Short():
		list = "10,10000"
	default:
		list = "10,10000,100000"
	}
	var sizes []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > benchMaxRules {
			b.Fatalf("-xdplane.bench-rules: %q: want counts from 1 to %d", f, benchMaxRules)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// policyFlowCount is how many flows the established case makes and picks
// from at random, the same at every size: the conntrack entries of 65,536
// flows do not stay in the CPU's caches, those of 1,024 do.
func policyFlowCount() int {
	switch {
	case *benchPolicyFlows > 0:
		return *benchPolicyFlows
	case testing.Short():
		return 1 << 10
	}
	return 1 << 16
}

// BenchmarkPolicyPacket reports, per rule count, the mean kernel-measured
// time per packet ("ns/pkt"), its median and 99th percentile, of:
//
//   - trivial: a tc program that only returns TC_ACT_UNSPEC, the baseline;
//   - no-endpoint: xdplane_tc_egress on an interface that is no endpoint,
//     where policy_check returns at its first lookup: the program without
//     policy;
//   - new: the first packet of a flow the policy allows, from a random
//     rule's peer to that rule's port: parse, a policy_ct miss, the two
//     longest-prefix lookups and the two policy_ct inserts;
//   - established: a packet of one of policyFlowCount() flows, at random.
//
// The endpoint's ingress is isolated with n allow rules, each one random
// prefix and one random TCP port. "install" reports SetPolicy's time and
// the entries it wrote; "ratio/rules=<largest>:<smallest>" the median new
// and established ns/pkt at the largest count over those at the smallest,
// measured in the same run. policy_ct is emptied before each new and
// established case, so that every repetition (-count) starts alike.
func BenchmarkPolicyPacket(b *testing.B) {
	testutil.RequireRoot(b)
	benchrand.Seed(b) // prints the run's seed before any result
	sizes := policyBenchSizes(b)
	trivial := testutil.TrivialProgram(b, ebpf.SchedCLS, -1)
	// means holds each repetition's ns/pkt by "<rules>/<case>": -count
	// repeats each case in place, after its size's setup.
	means := map[string][]float64{}

	for _, n := range sizes {
		b.Run("rules="+strconv.Itoa(n), func(b *testing.B) {
			env := newPolicyBenchEnv(b, n)
			b.Run("install", env.reportInstall)
			record := func(kase string, mean float64) {
				k := strconv.Itoa(n) + "/" + kase
				means[k] = append(means[k], mean)
			}
			prog := kernel.Of(env.dp).Programs.XdplaneTcEgress

			b.Run("trivial", func(b *testing.B) {
				pkt := env.flowPacket(nil, env.flows(b, 1)[0])
				mean, _ := env.measure(b, trivial, env.ctx, func(*rand.Rand) []byte { return pkt })
				record("trivial", mean)
			})
			b.Run("no-endpoint", func(b *testing.B) {
				pkt := env.flowPacket(nil, env.flows(b, 1)[0])
				check := env.expect(b, 0, 0)
				mean, _ := env.measure(b, prog, env.otherCtx, func(*rand.Rand) []byte { return pkt })
				record("no-endpoint", mean)
				check(0)
			})
			b.Run("new", func(b *testing.B) {
				env.clearConntrack(b)
				check := env.expect(b, 1, 2)
				var buf []byte
				mean, packets := env.measure(b, prog, env.ctx, func(r *rand.Rand) []byte {
					buf = env.flowPacket(buf, env.newFlow(r))
					return buf
				})
				record("new", mean)
				check(packets)
			})
			b.Run("established", func(b *testing.B) {
				env.clearConntrack(b)
				flows := env.establish(b, prog, policyFlowCount())
				check := env.expect(b, 1, 0)
				var buf []byte
				mean, packets := env.measure(b, prog, env.ctx, func(r *rand.Rand) []byte {
					buf = env.flowPacket(buf, flows[r.IntN(len(flows))])
					return buf
				})
				record("established", mean)
				check(packets)
			})
		})
	}

	lo, hi := slices.Min(sizes), slices.Max(sizes)
	if lo == hi {
		return
	}
	b.Run(fmt.Sprintf("ratio/rules=%d:%d", hi, lo), func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		for _, kase := range []string{"new", "established"} {
			top, base := benchMedian(means[strconv.Itoa(hi)+"/"+kase]), benchMedian(means[strconv.Itoa(lo)+"/"+kase])
			if top > 0 && base > 0 {
				b.ReportMetric(top/base, "x-"+kase)
			}
		}
	})
}

// policyBenchEnv is an endpoint, "pol0", in a namespace of its own, in a
// datapath of its own whose policy isolates the endpoint's ingress with n
// allow rules. "pol1", the other end of its veth, is no endpoint.
type policyBenchEnv struct {
	n     int
	ns    *testutil.NS
	dp    *datapath.Datapath
	m     *Manager
	rules []benchRule

	ctx      []byte // skb context naming pol0
	otherCtx []byte // naming pol1
	drawn    []int  // per rule: flows handed out so far

	install    time.Duration // SetPolicy of the n rules into empty maps
	peers      int           // entries it wrote to policy_peers
	ports      int           // and to policy_ports
	ruleMemory uint64        // bytes the kernel charges for those two maps
}

// benchRule is one rule of the benchmark's policies: a peer prefix and the
// one TCP port it may reach.
type benchRule struct {
	peer netip.Prefix
	port uint16
}

// benchRules draws n rules with distinct prefixes, from the run's seed
// and n: one in eight IPv6 (in 2000::/3, half /128, half
// /64), the rest IPv4 (first octet 11 to 99, half /32, half /24), each
// with a random TCP port from 1 to 65535 (443 for all with
// -xdplane.bench-one-port). Random ports give mostly distinct rulesets, so
// the ports table grows with the rules as the peers table does: the worst
// case for the second lookup. Prefixes may nest (a /32 in a /24);
// compileRules gives the inner one both rules' ports.
func benchRules(b *testing.B, n int) []benchRule {
	rng := benchrand.New(b, "policy-rules/"+strconv.Itoa(n))
	seen := make(map[netip.Prefix]bool, n)
	rules := make([]benchRule, 0, n)
	for len(rules) < n {
		var p netip.Prefix
		if rng.IntN(8) == 0 {
			var a [16]byte
			binary.BigEndian.PutUint64(a[:8], 0x2000<<48|rng.Uint64()>>3)
			binary.BigEndian.PutUint64(a[8:], rng.Uint64())
			p = netip.PrefixFrom(netip.AddrFrom16(a), []int{128, 64}[rng.IntN(2)]).Masked()
		} else {
			a := [4]byte{byte(11 + rng.IntN(89)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
			p = netip.PrefixFrom(netip.AddrFrom4(a), []int{32, 24}[rng.IntN(2)]).Masked()
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		port := uint16(1 + rng.IntN(65535))
		if *benchOnePort {
			port = 443
		}
		rules = append(rules, benchRule{peer: p, port: port})
	}
	return rules
}

func benchPolicy(rules []benchRule) Policy {
	rs := make([]Rule, len(rules))
	for i, r := range rules {
		rs[i] = Rule{Action: Allow, Peers: []Peer{{Prefix: r.peer}}, Ports: []PortRange{{Protocol: TCP, Port: r.port}}}
	}
	return Policy{Ingress: Rules{Isolated: true, Rules: rs}}
}

func newPolicyBenchEnv(b *testing.B, n int) *policyBenchEnv {
	b.Helper()
	env := &policyBenchEnv{n: n, rules: benchRules(b, n), drawn: make([]int, n)}
	env.ns = testutil.NewGroup(b).NS("polb")
	testutil.Veth(b, env.ns, "pol0", env.ns, "pol1")
	dir := testutil.BPFFS(b)
	limits := datapath.Limits{
		MaxPolicyPrefixes:   benchMaxRules,
		MaxPolicyPorts:      benchMaxRules,
		PolicyConntrackSize: benchPolicyConntrack,
	}
	var ifindex, other int
	env.ns.MustDo(func() error {
		dp, err := datapath.Open(datapath.Options{Dir: dir, Limits: limits})
		if err != nil {
			return err
		}
		env.dp = dp
		b.Cleanup(func() {
			if env.m != nil {
				env.m.Close()
			}
			dp.Close()
			if err := datapath.Remove(dir); err != nil {
				b.Errorf("remove datapath: %v", err)
			}
		})
		if env.m, err = NewManager(dp); err != nil {
			return err
		}
		if err := env.m.AddEndpoint(Endpoint{Interface: "pol0", Addresses: []netip.Addr{pod4, pod6}}); err != nil {
			return err
		}
		for name, idx := range map[string]*int{"pol0": &ifindex, "pol1": &other} {
			ifc, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			*idx = ifc.Index
		}
		p := benchPolicy(env.rules)
		start := time.Now()
		if err := env.m.SetPolicy("pol0", p); err != nil {
			return fmt.Errorf("set a policy of %d rules: %w", n, err)
		}
		env.install = time.Since(start)
		return nil
	})
	mp := kernel.Of(env.dp).Maps
	env.peers = benchMapEntries(b, mp.PolicyPeers) + benchMapEntries(b, mp.PolicyPeerHash)
	env.ports = benchMapEntries(b, mp.PolicyPorts) + benchMapEntries(b, mp.PolicyPortHash)
	env.churnConntrack(b)
	env.ruleMemory = benchMapMemory(b, mp.PolicyPeers, mp.PolicyPeerHash, mp.PolicyLens, mp.PolicyPorts, mp.PolicyPortHash)
	env.ctx = testutil.SKBContextBytes(uint32(ifindex))
	env.otherCtx = testutil.SKBContextBytes(uint32(other))
	return env
}

// reportInstall is a sub-benchmark that only reports what
// newPolicyBenchEnv measured, so that install cost appears beside the
// per-packet figures.
func (env *policyBenchEnv) reportInstall(b *testing.B) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(env.install.Seconds()*1e3, "install-ms")
	b.ReportMetric(float64(env.peers), "peer-entries")
	b.ReportMetric(float64(env.ports), "port-entries")
	b.ReportMetric(float64(env.ruleMemory)/(1<<20), "rule-maps-MiB")
}

// benchFlow is a flow from a rule's peer to the endpoint, on that rule's
// port.
type benchFlow struct {
	src netip.AddrPort
	dst netip.AddrPort
}

// newFlow returns a flow never handed out before, from a random rule's
// peer. The k-th flow of a rule comes from source port 1024 + k%64512 of
// the prefix's (k/64512)-th address, so flows never repeat in a
// datapath's life; a rule whose prefix has no address left (a /32 after
// 64,512 flows) gives way to another.
func (env *policyBenchEnv) newFlow(r *rand.Rand) benchFlow {
	for range 1000 {
		i := r.IntN(len(env.rules))
		rule, k := env.rules[i], env.drawn[i]
		host := uint64(k / 64512)
		if hostBits := rule.peer.Addr().BitLen() - rule.peer.Bits(); hostBits < 64 && host >= 1<<hostBits {
			continue
		}
		env.drawn[i]++
		pod := pod4
		if rule.peer.Addr().Is6() {
			pod = pod6
		}
		return benchFlow{
			src: netip.AddrPortFrom(addHost(rule.peer.Addr(), host), uint16(1024+k%64512)),
			dst: netip.AddrPortFrom(pod, rule.port),
		}
	}
	panic("policy benchmark: every rule drawn has run out of fresh flows; use fewer packets per case")
}

// flows returns k fresh flows, drawn from the run's seed.
func (env *policyBenchEnv) flows(b *testing.B, k int) []benchFlow {
	r := benchrand.New(b, "policy-flows/"+strconv.Itoa(env.n))
	out := make([]benchFlow, k)
	for i := range out {
		out[i] = env.newFlow(r)
	}
	return out
}

// establish makes k flows, each by running its first packet through prog
// as the endpoint's traffic would, just before the case that uses them: a
// flow's first packet more than a second after its entry was refreshed
// takes a slower path (it refreshes both entries), which a steady flow
// pays once a second, not once in every few packets.
func (env *policyBenchEnv) establish(b *testing.B, prog *ebpf.Program, k int) []benchFlow {
	flows := env.flows(b, k)
	err := env.ns.Do(func() error {
		var buf []byte
		for i, f := range flows {
			buf = env.flowPacket(buf, f)
			ret, _, err := testutil.RunTimed(prog, buf, env.ctx)
			if err != nil {
				return err
			}
			if ret != tcActUnspc {
				return fmt.Errorf("make flow %d (%s to %s): verdict %d, want pass", i, f.src, f.dst, int32(ret))
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return flows
}

func (env *policyBenchEnv) flowPacket(buf []byte, f benchFlow) []byte {
	return benchTCPSYN(buf, f.src, f.dst)
}

// measure runs prog on the packets next returns in the endpoint's
// namespace (testutil.MeasureProg); every one must pass.
func (env *policyBenchEnv) measure(b *testing.B, prog *ebpf.Program, ctx []byte, next func(*rand.Rand) []byte) (float64, int) {
	return testutil.MeasureProg(b, env.ns, prog, ctx, tcActUnspc, next)
}

// expect reads the endpoint's allowed-ingress counter and policy_ct's
// size, and returns a check that fails b unless, after the packets run,
// the counter went up by allowed and policy_ct by entries per packet, and
// nothing was denied: proof that every "new" packet was a flow policy_ct
// had never seen (judged by the rules, two entries inserted, none
// evicted), that every "established" one found its entry, and that no
// packet at an interface without an endpoint was judged at all.
func (env *policyBenchEnv) expect(b *testing.B, allowed, entries int) (check func(packets int)) {
	read := func() (Counters, int) {
		c, err := env.m.Counters("pol0")
		if err != nil {
			b.Fatal(err)
		}
		return c.Ingress, env.conntrackEntries(b)
	}
	c0, ct0 := read()
	return func(packets int) {
		c, ct := read()
		if got, want := c.AllowedPackets-c0.AllowedPackets, uint64(allowed*packets); got != want {
			b.Errorf("the endpoint allowed %d packets in, want %d", got, want)
		}
		if d := c.DeniedPackets - c0.DeniedPackets; d != 0 {
			b.Errorf("the endpoint denied %d packets; every flow drawn is allowed", d)
		}
		if got, want := ct-ct0, entries*packets; got != want {
			b.Errorf("policy_ct grew by %d entries over %d packets, want %d: not every packet took the path measured (or policy_ct, %d entries, was full and evicted)",
				got, packets, want, benchPolicyConntrack)
		}
	}
}

// conntrackEntries counts policy_ct's entries.
func (env *policyBenchEnv) conntrackEntries(b *testing.B) int {
	return env.readConntrack(b, false)
}

// churnConntrack fills policy_ct to half with entries of no endpoint and
// empties it again, before any case runs. An LRU map hands out its free
// elements in the order they were freed: fresh from preallocation they lie
// in address order, once used wherever their hash buckets put them, and
// refilling a CPU's free list from the shared one (128 elements, every 64
// new flows) then costs a cache miss per element, some 20 µs here.
// Without this, the first repetition of a case would meet a pristine map
// and the others a used one; a map in service is a used one.
func (env *policyBenchEnv) churnConntrack(b *testing.B) {
	mp := kernel.Of(env.dp).Maps.PolicyCt
	r := benchrand.New(b, "policy-churn/"+strconv.Itoa(env.n))
	keys := make([]bpf.XdplanePctKey, 4096)
	vals := make([]bpf.XdplanePctValue, len(keys))
	for range int(mp.MaxEntries()) / 2 / len(keys) {
		for i := range keys {
			keys[i] = bpf.XdplanePctKey{Endpoint: ^uint32(0), Proto: unix.IPPROTO_TCP, Sport: uint16(r.Uint32()), Dport: uint16(r.Uint32())}
			binary.NativeEndian.PutUint64(keys[i].Saddr[:8], r.Uint64())
			binary.NativeEndian.PutUint64(keys[i].Saddr[8:], r.Uint64())
		}
		if _, err := mp.BatchUpdate(keys, vals, nil); err != nil {
			b.Fatalf("fill policy_ct: %v", err)
		}
	}
	env.clearConntrack(b)
}

// clearConntrack empties policy_ct.
func (env *policyBenchEnv) clearConntrack(b *testing.B) {
	env.readConntrack(b, true)
}

// readConntrack reads policy_ct in batches, deleting what it reads if del,
// and returns the number of entries read.
func (env *policyBenchEnv) readConntrack(b *testing.B, del bool) int {
	mp := kernel.Of(env.dp).Maps.PolicyCt
	keys := make([]bpf.XdplanePctKey, 4096)
	vals := make([]bpf.XdplanePctValue, len(keys))
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		var n int
		var err error
		if del {
			n, err = mp.BatchLookupAndDelete(&cursor, keys, vals, nil)
		} else {
			n, err = mp.BatchLookup(&cursor, keys, vals, nil)
		}
		total += n
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return total
		case err != nil:
			b.Fatalf("read policy_ct: %v", err)
		}
	}
}

// benchMedian returns the median of v, or 0 for none.
func benchMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Sorted(slices.Values(v))
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// addHost returns a plus i, i below 2^64, carrying within the address.
func addHost(a netip.Addr, i uint64) netip.Addr {
	if a.Is4() {
		v := a.As4()
		binary.BigEndian.PutUint32(v[:], binary.BigEndian.Uint32(v[:])+uint32(i))
		return netip.AddrFrom4(v)
	}
	v := a.As16()
	lo := binary.BigEndian.Uint64(v[8:])
	hi := binary.BigEndian.Uint64(v[:8])
	if lo+i < lo {
		hi++
	}
	binary.BigEndian.PutUint64(v[:8], hi)
	binary.BigEndian.PutUint64(v[8:], lo+i)
	return netip.AddrFrom16(v)
}

// benchTCPSYN writes an Ethernet + IPv4 or IPv6 + TCP SYN frame from src
// to dst (both of one family) into buf's storage, with correct checksums,
// and returns it. The golden tests' builders go through gopacket, too
// slow for a million packets.
func benchTCPSYN(buf []byte, src, dst netip.AddrPort) []byte {
	const ethLen, tcpLen = 14, 20
	v6 := src.Addr().Is6()
	ipLen, ethType := 20, uint16(0x0800)
	if v6 {
		ipLen, ethType = 40, 0x86dd
	}
	buf = append(buf[:0], make([]byte, ethLen+ipLen+tcpLen)...)
	copy(buf[0:6], []byte{0x02, 0, 0, 0, 0, 0x02})
	copy(buf[6:12], []byte{0x02, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(buf[12:], ethType)

	ip := buf[ethLen : ethLen+ipLen]
	var s, d []byte
	if v6 {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], tcpLen)
		ip[6] = unix.IPPROTO_TCP
		ip[7] = 64
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:24], s16[:])
		copy(ip[24:40], d16[:])
		s, d = ip[8:24], ip[24:40]
	} else {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+tcpLen))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = unix.IPPROTO_TCP
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:16], s4[:])
		copy(ip[16:20], d4[:])
		binary.BigEndian.PutUint16(ip[10:], ^benchSum(0, ip))
		s, d = ip[12:16], ip[16:20]
	}

	tcp := buf[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	pseudo := uint32(benchSum(uint32(benchSum(0, s)), d)) + unix.IPPROTO_TCP + tcpLen
	binary.BigEndian.PutUint16(tcp[16:], ^benchSum(pseudo, tcp))
	return buf
}

// benchSum is the folded 16-bit one's complement sum of b added to
// initial.
func benchSum(initial uint32, b []byte) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// benchMapEntries counts a map's entries.
func benchMapEntries(b *testing.B, mp *ebpf.Map) int {
	var k, v []byte
	n := 0
	it := mp.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		b.Fatalf("count %v: %v", mp, err)
	}
	return n
}

// benchMapMemory sums the memory the kernel charges for maps ("memlock"
// in each map's fdinfo).
func benchMapMemory(b *testing.B, maps ...*ebpf.Map) uint64 {
	var total uint64
	for _, mp := range maps {
		raw, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", strconv.Itoa(mp.FD())))
		if err != nil {
			b.Logf("read fdinfo of %v: %v", mp, err)
			continue
		}
		for line := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "memlock" {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				total += n
			}
		}
	}
	return total
}

func init() { xdplaneConnCase = xdplaneConn }

// xdplaneConn is BenchmarkConnPolicy's xdplane case: a datapath on the
// node with the pod's link (tp.NodeInterfaces[1]) as an endpoint whose
// ingress is isolated with one allow rule per peer, each for TCP to dst's
// port, as the iptables cases have one rule per peer. (One rule listing
// every peer compiles to the same entries: rulesets are shared.) It
// reports SetPolicy's time as "install-ms", and checks that the
// endpoint's counters saw every connection allowed and nothing denied.
func xdplaneConn(b *testing.B, tp *testutil.LBTopology, peers []netip.Prefix, dst netip.AddrPort) {
	b.Helper()
	pod := tp.NodeInterfaces[1]
	rules := make([]Rule, len(peers))
	for i, p := range peers {
		rules[i] = Rule{Action: Allow, Peers: []Peer{{Prefix: p}}, Ports: []PortRange{{Protocol: TCP, Port: dst.Port()}}}
	}
	dir := testutil.BPFFS(b)
	var m *Manager
	var install time.Duration
	tp.Node.MustDo(func() error {
		dp, err := datapath.Open(datapath.Options{Dir: dir})
		if err != nil {
			return err
		}
		b.Cleanup(func() {
			if m != nil {
				m.Close()
			}
			dp.Close()
			if err := datapath.Remove(dir); err != nil {
				b.Errorf("remove datapath: %v", err)
			}
		})
		if m, err = NewManager(dp); err != nil {
			return err
		}
		if err := m.AddEndpoint(Endpoint{Interface: pod, Addresses: []netip.Addr{dst.Addr()}}); err != nil {
			return err
		}
		start := time.Now()
		if err := m.SetPolicy(pod, Policy{Ingress: Rules{Isolated: true, Rules: rules}}); err != nil {
			return fmt.Errorf("set a policy of %d rules: %w", len(rules), err)
		}
		install = time.Since(start)
		return nil
	})
	before, err := m.Counters(pod)
	if err != nil {
		b.Fatal(err)
	}
	conns := measureConnLatency(b, tp.Client, dst)
	after, err := m.Counters(pod)
	if err != nil {
		b.Fatal(err)
	}
	// At least the SYN and the ACK of each connection enter the pod.
	if got := after.Ingress.AllowedPackets - before.Ingress.AllowedPackets; got < 2*uint64(conns) {
		b.Errorf("the pod's endpoint let in %d packets over %d connections, want at least %d", got, conns, 2*conns)
	}
	if d := after.Ingress.DeniedPackets - before.Ingress.DeniedPackets; d != 0 {
		b.Errorf("the pod's endpoint denied %d packets while only the allowed client was sending", d)
	}
	b.ReportMetric(install.Seconds()*1e3, "install-ms")
}
