package lb

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
)

// What FuzzModel's inputs are made of: small pools, so that random bytes
// often name a frontend, a backend or a client that something else in the
// input names too. Index 0 is IPv4, 1 IPv6.
var (
	// Frontend addresses: two cluster IPs, a node address (for node
	// ports) and an address that is also a client's.
	modelFrontends = [2][4]netip.Addr{
		{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.11"), netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("10.0.0.3")},
		{netip.MustParseAddr("fd00::10"), netip.MustParseAddr("fd00::11"), netip.MustParseAddr("fd00:ff::1"), netip.MustParseAddr("fd00:9::3")},
	}
	modelFrontendPorts = [4]uint16{80, 53, 443, 30080}
	// Backend addresses, among them a client's and the node's.
	modelBackends = [2][8]netip.Addr{
		{netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.1.3"), netip.MustParseAddr("10.0.1.4"), netip.MustParseAddr("10.0.2.2"),
			netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("10.0.3.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("192.168.1.1")},
		{netip.MustParseAddr("fd00:1::2"), netip.MustParseAddr("fd00:1::3"), netip.MustParseAddr("fd00:1::4"), netip.MustParseAddr("fd00:2::2"),
			netip.MustParseAddr("fd00:2::3"), netip.MustParseAddr("fd00:3::2"), netip.MustParseAddr("fd00:9::3"), netip.MustParseAddr("fd00:ff::1")},
	}
	modelBackendPorts = [2]uint16{8080, 53}
	modelClients      = [2][4]netip.Addr{
		{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.1.0.9"), netip.MustParseAddr("192.168.7.5")},
		{netip.MustParseAddr("fd00:9::2"), netip.MustParseAddr("fd00:9::3"), netip.MustParseAddr("fd00:8::9"), netip.MustParseAddr("2001:db8::5")},
	}
	modelClientPorts = [4]uint16{40000, 40001, 1000, 80}
	// Source ranges: some hold some clients, some all, some none.
	modelRanges = [2][8]netip.Prefix{
		{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.1.0.0/16"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.3/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")},
		{netip.MustParsePrefix("fd00:9::/64"), netip.MustParsePrefix("fd00:9::2/128"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("fd00:8::/32"),
			netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("fd00:9::3/128"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("fe80::/10")},
	}
	modelWeights = [8]uint16{0, 1, 1, 2, 3, 7, 100, MaxWeight}
	// Affinity timeouts long enough that no input outlives one.
	modelAffinity    = [4]time.Duration{0, 0, time.Minute, DefaultSessionAffinity}
	modelMaglevSizes = [4]uint32{MinMaglevTableSize, 1021, MinMaglevTableSize, 0}
	// Conntrack timeouts short enough that an input can outlive each, on
	// a machine up for a minute, and apart enough that the idle times
	// below fall between them.
	modelTimeouts = datapath.ConntrackTimeouts{
		TCPClosing: 6 * time.Second, UDP: 10 * time.Second, TCPOpening: 18 * time.Second,
		UDPStream: 26 * time.Second, TCPEstablished: 34 * time.Second,
	}
	// How long an input may leave every flow idle at once: whole seconds,
	// so that no sum of them is within a second of a timeout but on it.
	modelIdle = [4]time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 36 * time.Second}
)

// fuzzBytes hands out a fuzz input byte by byte, zeros once it is used up.
type fuzzBytes []byte

func (r *fuzzBytes) next() byte {
	if len(*r) == 0 {
		return 0
	}
	c := (*r)[0]
	*r = (*r)[1:]
	return c
}

// modelServicesFrom makes up to five services from r: every algorithm,
// family, protocol, weight, state, locality, traffic policy, affinity,
// source range, virtual IP and backend count (none included) the pools
// above allow. A frontend or a backend address that comes again, and a
// backend equal to its frontend, are skipped, so any bytes make a valid
// set. One service in eight is a
// Maglev service.
func modelServicesFrom(r *fuzzBytes) []Service {
	var out []Service
	for range r.next() % 6 {
		a, c, d := r.next(), r.next(), r.next()
		fam := int(a & 1)
		s := Service{Frontend: Frontend{
			Address:  netip.AddrPortFrom(modelFrontends[fam][a>>1&3], modelFrontendPorts[a>>3&3]),
			Protocol: [2]Protocol{TCP, UDP}[a>>5&1],
		}}
		s.VirtualIP = d&4 != 0
		if a>>6 == 3 && d>>5&1 == 1 {
			s.Algorithm, s.MaglevTableSize = Maglev, modelMaglevSizes[d>>3&3]
		}
		s.TrafficPolicy = TrafficPolicy(c & 1)
		s.SessionAffinity = modelAffinity[c>>1&3]
		for range int(c>>3&7) % 5 {
			b := r.next()
			be := Backend{
				Address: netip.AddrPortFrom(modelBackends[fam][b&7], modelBackendPorts[b>>3&1]),
				State:   BackendState(b >> 4 & 3 % 3),
				Local:   b>>6&1 == 1,
			}
			if b>>7 == 1 {
				be.Weight = modelWeights[r.next()&7]
			}
			if be.Address != s.Frontend.Address && !slices.ContainsFunc(s.Backends, func(o Backend) bool { return o.Address == be.Address }) {
				s.Backends = append(s.Backends, be)
			}
		}
		for range d & 3 {
			s.SourceRanges = append(s.SourceRanges, modelRanges[fam][r.next()&7])
		}
		if !slices.ContainsFunc(out, func(o Service) bool { return o.Frontend == s.Frontend }) {
			out = append(out, s)
		}
	}
	return out
}

// modelServicesFor makes the services of seed: modelServicesFrom over
// bytes drawn from a generator seeded with it. Writing services takes
// time (a new Maglev table costs an RCU grace period, some 10 ms, in the
// kernel's update of the outer map, once per Sync), so a fuzz input names its services
// with two bytes that mutations seldom touch (its last two, which the
// minimizer, cutting bytes out of the middle, keeps), and Manager.Sync,
// which writes only what changed, leaves them alone while they stay the
// same.
func modelServicesFor(seed uint16) []Service {
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	spec := make(fuzzBytes, 64)
	for i := range spec {
		spec[i] = byte(rng.Uint32())
	}
	return modelServicesFrom(&spec)
}

// modelHook is one program and what its half of lb_main does.
type modelHook struct {
	name           string
	prog           *ebpf.Program
	forward, reply bool
	xdp            bool
}

// modelFuzz is one fuzz worker's datapath and what it knows of it.
type modelFuzz struct {
	dp    *datapath.Datapath
	m     *Manager
	hooks []modelHook
	view  *modelView
	dirty bool // the services differ from the last input's
	// counts are the stats after the last run, as modelCounts reads them.
	counts [bpf.XdplaneStatSTAT_MAX][2]uint64
	count  modelCount
}

// modelCount counts what the fuzz test compared: inputs, frames (each
// run through all three programs, unless the kernel refused it) and
// program runs.
type modelCount struct{ inputs, frames, runs uint64 }

const (
	modelMaxOps    = 24
	modelMaxFrames = 16
)

// FuzzModel holds the programs to the reference model. An input's last
// two bytes name a set of services (modelServicesFor), installed with
// Manager.Sync; the rest is a program of up to 24 steps: a packet of a
// flow from a client to a frontend (or to another port or address), a
// reply from the backend a flow went to (either with any TCP flags: SYN,
// ACK, FIN or RST), a random frame, a mutation of the last frame (bytes
// overwritten, cut short or lengthened), a change to a service (a
// backend's state or locality, a backend or the service removed), or time
// passing: every conntrack entry made older, past some of the timeouts
// (modelTimeouts), in the maps and in the model alike. Every frame, up to 16 per input, goes through all
// three programs, in turn; for each run the model says which counter
// moves, the verdict and the exact output frame (for a Random service's
// new flow, one of the frames for its eligible backends; a reject to the
// byte), and the run must agree. Conntrack and affinity start empty for
// each input and must end as the model says, entry by entry, flags
// included, and ct_stats must count the entries made and the flows
// reopened that the model counts.
//
// With XDPLANE_MODEL_COUNT set to a directory, each fuzz worker writes
// its counts to a file there, named by its process id, after every input.
func FuzzModel(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 32 {
		in := make([]byte, 80)
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		f.Add(in)
	}
	for _, in := range modelScenarios() {
		f.Add(in)
	}

	dp, _ := openDatapathWith(f, datapath.Options{
		Limits:    datapath.Limits{ConntrackSize: 4096, AffinitySize: 1024},
		Conntrack: modelTimeouts,
	})
	m, err := NewManager(dp)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	progs := kernel.Of(dp).Programs
	mf := &modelFuzz{dp: dp, m: m, dirty: true, hooks: []modelHook{
		{"xdp", progs.XdplaneXdp, true, true, true},
		{"tc ingress", progs.XdplaneTcIngress, true, false, false},
		{"tc egress", progs.XdplaneTcEgress, false, true, false},
	}}
	countFile := ""
	if dir := os.Getenv("XDPLANE_MODEL_COUNT"); dir != "" {
		countFile = filepath.Join(dir, fmt.Sprint(os.Getpid()))
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		mf.input(t, in)
		if countFile != "" {
			c := mf.count
			if err := os.WriteFile(countFile, fmt.Appendf(nil, "%d %d %d\n", c.inputs, c.frames, c.runs), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// modelScenarios are inputs that take one service of a kind through a
// story: four clients' first packets, replies, client 0's next flows
// while first backend 0 and then backend 1 stops taking new flows (one of
// them is client 0's, which affinity must then let go), an established
// flow with IP options, a mutated frame, backend 0 removed, and client
// 0's first flow again.
func modelScenarios() [][]byte {
	eligible := func(s Service) int { return len(s.normalized().eligible()) }
	kinds := []func(Service) bool{
		func(s Service) bool {
			return s.Algorithm == Random && s.SessionAffinity > 0 && len(s.SourceRanges) == 0 && s.TrafficPolicy == Cluster &&
				len(s.Backends) == 2 && s.Backends[0].State == Active && s.Backends[1].State == Active
		},
		func(s Service) bool {
			return s.Algorithm == Maglev && eligible(s) >= 2 && s.Frontend.Address.Addr().Is4()
		},
		func(s Service) bool {
			return s.Algorithm == Maglev && eligible(s) >= 2 && s.Frontend.Address.Addr().Is6()
		},
		func(s Service) bool { return len(s.SourceRanges) > 0 && eligible(s) > 0 },
		func(s Service) bool { return s.normalized().dropsWithoutBackend() },
		func(s Service) bool {
			return s.TrafficPolicy == Local && eligible(s) > 0 && eligible(s) < len(s.Backends)
		},
		func(s Service) bool {
			return len(s.Backends) > 1 && !slices.ContainsFunc(s.Backends, func(b Backend) bool { return b.State != Terminating })
		},
	}
	var out [][]byte
	for _, kind := range kinds {
	seeds:
		for seed := range 1 << 16 {
			for i, s := range modelServicesFor(uint16(seed)) {
				if !kind(s) {
					continue
				}
				x := byte(i)
				out = append(out, []byte{
					0, x, 0, 0, 0, x, 1, 0, 0, x, 2, 0, 0, x, 3, 0, // four clients
					3, 0, 0, 3, 1, 0, // replies to the first two
					7, x, 0, // backend 0's state: active to terminating
					0, x, 4, 0, // client 0's second flow
					7, x, 0, 7, x, 0, 7, x, 4, // backend 0 back to active, backend 1 terminating
					0, x, 8, 0, // client 0's third flow
					0, x, 0, 0x48, // its first, with IP options
					5, 1, 30, 0, 0xff, 40, 0, 0, // that frame, two bytes changed
					7, x, 2, // backend 0 removed
					0, x, 0, 8, // client 0's first flow again
					3, 0, 8, // a reply to it
					byte(seed), byte(seed >> 8),
				})
				break seeds
			}
		}
	}
	// Two stories of a flow's life: a TCP connection that closes, opens
	// again on the same port, waits, is retransmitted, expires and is
	// reset; a UDP flow that expires, is answered, and expires later.
	lives := []struct {
		kind func(Service) bool
		ops  func(x byte) []byte
	}{
		{func(s Service) bool { return s.Frontend.Protocol == TCP && s.Algorithm == Random && eligible(s) >= 2 }, func(x byte) []byte {
			return []byte{
				0, x, 0, 0, // SYN
				3, 0, 0x08, // the backend's answer
				0, x, 0, 0x80, 3, 0, 0x80, // FIN both ways
				0, x, 0, 0, // SYN on the same port: a new flow
				0x17, 1, // 8 s idle: opening, not expired
				0, x, 0, 0, // a retransmitted SYN stays
				0x17, 2, 0x17, 1, // 24 s idle: expired
				0, x, 0, 0, // SYN: a new flow
				0, x, 0, 0x08, 3, 2, 0x08, // data, answered: established
				0x17, 2, 0x17, 1, // 24 s idle: established, not expired
				0, x, 0, 0, // a SYN of a live flow stays
				3, 2, 0x88, // a reset by the backend
				0, x, 0, 0, // SYN: a new flow
				0x17, 3, 0, x, 0, 0x08, // idle past every timeout, an ACK keeps its backend
			}
		}},
		{func(s Service) bool { return s.Frontend.Protocol == UDP && eligible(s) >= 1 }, func(x byte) []byte {
			return []byte{
				0, x, 0, 0, // a datagram
				0x17, 2, // 16 s idle: expired
				0, x, 0, 0, // a new flow
				3, 1, 0, // answered: a stream
				0x17, 2, 0, x, 0, 0, // 16 s idle: still the flow
				0x17, 2, 0x17, 2, 0, x, 0, 0, // 32 s: a new flow
			}
		}},
	}
	for _, l := range lives {
	found:
		for seed := range 1 << 16 {
			for i, s := range modelServicesFor(uint16(seed)) {
				if l.kind(s) {
					out = append(out, append(l.ops(byte(i)), byte(seed), byte(seed>>8)))
					break found
				}
			}
		}
	}
	return out
}

// input runs one fuzz input.
func (mf *modelFuzz) input(t *testing.T, in []byte) {
	var seed uint16
	if n := len(in); n >= 2 {
		in, seed = in[:n-2], uint16(in[n-2])|uint16(in[n-1])<<8
	}
	r := fuzzBytes(in)
	svcs := modelServicesFor(seed)
	res, err := mf.m.Sync(svcs)
	if err != nil {
		t.Fatalf("sync %v: %v", svcs, err)
	}
	if mf.dirty || len(res.Added)+len(res.Changed)+len(res.Removed) > 0 {
		mf.refresh(t)
	}

	mf.dirty = false
	modelFlush(t, mf.dp)
	mf.counts = modelCounts(t, mf.dp)
	st := newModelState(kernel.Of(mf.dp).Timeouts)
	ctBefore := modelCTStats(t, mf.dp)
	mf.count.inputs++

	var flows []modelChosen // the new flows so far, for replies
	var last []byte
	for ops, frames := 0, 0; len(r) > 0 && ops < modelMaxOps && frames < modelMaxFrames; ops++ {
		op := r.next()
		var frame []byte
		switch op & 7 {
		case 7: // a change to a service, time passing; or, mostly, a packet of a flow
			if op>>3&1 == 0 {
				if op>>4&1 == 0 {
					mf.change(t, svcs, r.next(), r.next())
				} else {
					mf.pass(t, st, modelIdle[r.next()&3])
				}
				continue
			}
			fallthrough
		case 0, 1, 2:
			frame = modelFlowFrame(t, svcs, r.next(), r.next(), r.next())
		case 3:
			k, shape := r.next(), r.next()
			var fl modelChosen
			if len(flows) > 0 {
				fl = flows[int(k)%len(flows)]
			} else {
				fam := int(k & 1)
				fl = modelChosen{netip.AddrPortFrom(modelClients[fam][k>>1&3], modelClientPorts[k>>3&3]),
					netip.AddrPortFrom(modelBackends[fam][k>>5&7], modelBackendPorts[0]), [2]Protocol{TCP, UDP}[shape>>7]}
			}
			frame = modelFrame(t, fl.backend, fl.client, fl.proto, shape)
		case 4:
			n := int(r.next())
			frame = bytes.Clone(r[:min(n, len(r))])
			r = r[len(frame):]
		case 5:
			frame = bytes.Clone(last)
			for range 1 + r.next()&3 {
				pos, b := int(r.next())|int(r.next())<<8, r.next()
				if len(frame) > 0 {
					frame[pos%len(frame)] = b
				}
			}
		case 6:
			frame = bytes.Clone(last)
			if n := int(r.next()); n&0x80 != 0 {
				frame = append(frame, make([]byte, n&0x7f)...)
			} else {
				frame = frame[:len(frame)-min(n, len(frame))]
			}
		}
		last = frame
		if len(frame) > testutil.XDPLinearMax {
			continue // XDP would see only part of it; see testutil.XDPLinearMax
		}
		frames++
		ran := false
		for _, h := range mf.hooks {
			chosen, ok := mf.run(t, h, st, frame)
			if !ok {
				continue
			}
			ran = true
			if chosen != nil {
				flows = append(flows, *chosen)
			}
		}
		if ran {
			mf.count.frames++
		}
	}
	modelCompareState(t, mf.dp, st)
	ctAfter := modelCTStats(t, mf.dp)
	if got, want := [2]uint64{ctAfter[0] - ctBefore[0], ctAfter[1] - ctBefore[1]}, [2]uint64{st.created, st.reopened}; got != want {
		t.Fatalf("ct_stats counted %v entries made and flows reopened, the model %v", got, want)
	}
}

// pass makes every conntrack entry d older, in the maps and in the model.
func (mf *modelFuzz) pass(t *testing.T, st *modelState, d time.Duration) {
	dptest.AgeConntrack(t, mf.dp, d)
	for k := range st.idle {
		st.idle[k] += d
	}
}

// modelCTStats reads ct_stats' made and reopened counts, summed over CPUs.
func modelCTStats(t *testing.T, dp *datapath.Datapath) [2]uint64 {
	t.Helper()
	c, err := readCTStats(kernel.Of(dp).Maps.CtStats)
	if err != nil {
		t.Fatal(err)
	}
	return [2]uint64{c[bpf.XdplaneCtStatCT_STAT_CREATED], c[bpf.XdplaneCtStatCT_STAT_REOPENED]}
}

// refresh reads the maps the programs read into the model's view.
func (mf *modelFuzz) refresh(t *testing.T) {
	v, err := readModelView(kernel.Of(mf.dp).Maps)
	if err != nil {
		t.Fatal(err)
	}
	mf.view = v
}

// change changes one of svcs as the Manager holds it: cycles a backend's
// state, flips its locality, removes it, or removes the service. Flows
// already made then meet a backend that left or stopped taking new ones.
func (mf *modelFuzz) change(t *testing.T, svcs []Service, which, how byte) {
	if len(svcs) == 0 {
		return
	}
	s, ok := mf.m.Get(svcs[int(which)%len(svcs)].Frontend)
	if !ok {
		return
	}
	i := int(how>>2) % max(len(s.Backends), 1)
	switch how & 3 {
	case 0:
		if len(s.Backends) > 0 {
			s.Backends[i].State = (s.Backends[i].State + 1) % 3
		}
	case 1:
		if len(s.Backends) > 0 {
			s.Backends[i].Local = !s.Backends[i].Local
		}
	case 2:
		if len(s.Backends) > 0 {
			s.Backends = slices.Delete(s.Backends, i, i+1)
		}
	case 3:
		if err := mf.m.Delete(s.Frontend); err != nil {
			t.Fatal(err)
		}
		mf.refresh(t)
		mf.dirty = true
		return
	}
	if err := mf.m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	mf.refresh(t)
	mf.dirty = true
}

// modelFlowFrame builds a packet from a client to the frontend of one of
// svcs, or to another port or address of the pools (x); y picks the
// client, its port and (one time in four) the other protocol; shape as for
// modelFrame.
func modelFlowFrame(t *testing.T, svcs []Service, x, y, shape byte) []byte {
	var dst netip.AddrPort
	var proto Protocol
	if len(svcs) > 0 && x&0xc0 != 0xc0 {
		fe := svcs[int(x)%len(svcs)].Frontend
		dst, proto = fe.Address, fe.Protocol
	} else {
		dst = netip.AddrPortFrom(modelFrontends[x&1][x>>1&3], [4]uint16{80, 53, 8081, 30080}[x>>3&3])
		proto = [2]Protocol{TCP, UDP}[x>>5&1]
	}
	if y&0x30 == 0x30 {
		proto ^= TCP ^ UDP
	}
	fam := 0
	if dst.Addr().Is6() {
		fam = 1
	}
	src := netip.AddrPortFrom(modelClients[fam][y&3], modelClientPorts[y>>2&3])
	return modelFrame(t, src, dst, proto, shape)
}

// modelFrame builds a packet with packets' builders. shape picks the
// payload's length (bits 0-2), the TCP flags (bits 3 and 7: SYN, ACK,
// FIN or RST), and (bits 4-6) a plain
// packet (0 to 3), IPv4 options or an IPv6 hop-by-hop header, UDP without
// checksum or IPv6 destination options and AH, a fragment, or a padded
// frame.
func modelFrame(t *testing.T, src, dst netip.AddrPort, proto Protocol, shape byte) []byte {
	payload := bytes.Repeat([]byte{0xa5, 0x5a, 0x3c}, int(shape&7))
	flags := [4]packets.TCPFlags{
		{SYN: true}, {ACK: true, PSH: true}, {FIN: true, ACK: true}, {RST: true, ACK: true},
	}[shape>>3&1|shape>>6&2]
	l4 := layers.IPProtocolTCP
	if proto == UDP {
		l4 = layers.IPProtocolUDP
	}
	variant := shape >> 4 & 7
	pad := 0
	if variant == 7 {
		pad = 6
	}
	var b []byte
	var err error
	if src.Addr().Is4() {
		p := packets.IPv4{Src: src, Dst: dst, Proto: l4, Payload: payload, TCPFlags: flags, Seq: 1, ID: 7, Pad: pad}
		switch variant {
		case 4:
			p.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		case 5:
			p.UDPNoChecksum = true
		case 6:
			p.Flags = layers.IPv4MoreFragments
		}
		b, err = p.Build()
	} else {
		p := packets.IPv6{Src: src, Dst: dst, Proto: l4, Payload: payload, TCPFlags: flags, Seq: 1, Pad: pad}
		switch variant {
		case 4:
			p.Ext = []packets.IPv6Ext{packets.HopByHop}
		case 5:
			p.Ext = []packets.IPv6Ext{packets.DestOpts, packets.AH}
		case 6:
			p.Ext = []packets.IPv6Ext{packets.Fragment(0, true, 1)}
		}
		b, err = p.Build()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// modelChosen is the new flow a run made.
type modelChosen struct {
	client, backend netip.AddrPort
	proto           Protocol
}

// run runs frame through h and requires what the model says of it; then
// the model takes the run into its state. It reports false if the kernel
// refused the frame before any program ran, and the new flow if the run
// made one.
func (mf *modelFuzz) run(t *testing.T, h modelHook, st *modelState, frame []byte) (*modelChosen, bool) {
	d := mf.view.decide(st, frame, h.forward, h.reply)
	before := mf.counts
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := h.prog.Run(&opts)
	if err != nil {
		return nil, false
	}
	mf.count.runs++
	out := opts.DataOut
	after := modelCounts(t, mf.dp)
	mf.counts = after
	for s := range after {
		want := [2]uint64{}
		if modelStat(s) == d.stat {
			want = [2]uint64{1, uint64(len(frame))}
		}
		if got := [2]uint64{after[s][0] - before[s][0], after[s][1] - before[s][1]}; got != want {
			t.Fatalf("%s: stat %d moved by %v packets and bytes, the model says %v (it counts in %d)\n in %x",
				h.name, s, got, want, d.stat, frame)
		}
	}
	if err := modelVerdict(h.xdp, d, ret); err != nil {
		t.Fatalf("%s: %v (model: %+v)\n in  %x\n out %x", h.name, err, d, frame, out)
	}
	var be modelBackend
	candidates := d.backends
	if len(candidates) == 0 {
		candidates = []modelBackend{{}}
	}
	var wants [][]byte
	for _, c := range candidates {
		want, err := d.output(frame, c)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(out, want) {
			be, wants = c, nil
			break
		}
		wants = append(wants, want)
	}
	if wants != nil {
		t.Fatalf("%s: output differs from the model's (stat %d)\n in   %x\n out  %x\n want %x", h.name, d.stat, frame, out, wants)
	}
	if d.stat == mForwardNew || d.stat == mForwardEst || d.stat == mReply {
		if packets.VerifyChecksums(frame) == nil {
			if err := packets.VerifyChecksums(out); err != nil {
				t.Fatalf("%s: valid checksums made invalid: %v\n in  %x\n out %x", h.name, err, frame, out)
			}
		}
	}
	st.commit(d, be, len(frame))
	if d.stat != mForwardNew {
		return nil, true
	}
	return &modelChosen{netip.AddrPortFrom(d.flow.src, d.flow.sport), be.addr, Protocol(d.flow.proto)}, true
}

// modelVerdict compares a run's verdict with the model's decision.
func modelVerdict(xdp bool, d modelDecision, ret uint32) error {
	const (
		xdpDrop, xdpPass, xdpTX      = 1, 2, 3
		tcUnspec, tcShot, tcRedirect = 0xffffffff, 2, 7
	)
	verdict := map[modelStat][2]uint32{
		mPass: {xdpPass, tcUnspec}, mMalformed: {xdpPass, tcUnspec}, mFragment: {xdpPass, tcUnspec},
		mForwardNew: {xdpPass, tcUnspec}, mForwardEst: {xdpPass, tcUnspec}, mReply: {xdpPass, tcUnspec},
		mNoBackend: {xdpTX, tcRedirect}, mUnknownPort: {xdpTX, tcRedirect},
		mSourceDenied: {xdpDrop, tcShot}, mCTFull: {xdpDrop, tcShot},
	}[d.stat]
	if d.stat == mNoBackend && d.drop {
		verdict = [2]uint32{xdpDrop, tcShot}
	}
	want := verdict[1]
	if xdp {
		want = verdict[0]
	}
	if ret != want {
		return fmt.Errorf("verdict %d, model says %d", ret, want)
	}
	return nil
}

// modelFlush empties conntrack and affinity.
func modelFlush(t *testing.T, dp *datapath.Datapath) {
	t.Helper()
	for _, mp := range []*ebpf.Map{kernel.Of(dp).Maps.Conntrack, kernel.Of(dp).Maps.Affinity} {
		var keys [][]byte
		var k, v []byte
		it := mp.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, slices.Clone(k))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := mp.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// modelCompareState requires conntrack and affinity to hold what the
// model says, entry by entry, with a time in every entry.
func modelCompareState(t *testing.T, dp *datapath.Datapath, st *modelState) {
	t.Helper()
	err := errors.Join(
		modelCompareMap(kernel.Of(dp).Maps.Conntrack, st.conntrack, func(v *bpf.XdplaneCtValue) bool {
			set := v.LastSeen != 0
			v.LastSeen = 0
			return set
		}),
		modelCompareMap(kernel.Of(dp).Maps.Affinity, st.affinity, func(v *bpf.XdplaneAffinityValue) bool {
			set := v.LastUsed != 0
			v.LastUsed = 0
			return set
		}))
	if err != nil {
		t.Fatal(err)
	}
}

// modelCompareMap requires m to hold exactly want, once untime has zeroed
// the time in each value; untime says whether it was set.
func modelCompareMap[K, V comparable](m *ebpf.Map, want map[K]V, untime func(*V) bool) error {
	got, err := kernel.ReadAll[K, V](m)
	if err != nil {
		return err
	}
	var errs []error
	for k, v := range got {
		if !untime(&v) {
			errs = append(errs, fmt.Errorf("%s entry %+v has no time", m, k))
		}
		if w, ok := want[k]; !ok || v != w {
			errs = append(errs, fmt.Errorf("%s entry %+v is %+v, the model says %+v (%v)", m, k, v, w, ok))
		}
	}
	if len(got) != len(want) {
		errs = append(errs, fmt.Errorf("%s holds %d entries, the model %d", m, len(got), len(want)))
	}
	return errors.Join(errs...)
}

// modelCounts reads every stat's packets and bytes, summed over CPUs, in
// one batch.
func modelCounts(t *testing.T, dp *datapath.Datapath) [bpf.XdplaneStatSTAT_MAX][2]uint64 {
	t.Helper()
	const n = int(bpf.XdplaneStatSTAT_MAX)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]bpf.XdplaneStat, n)
	per := make([]bpf.XdplaneCounter, n*cpus)
	var cursor ebpf.MapBatchCursor
	if got, err := kernel.Of(dp).Maps.Stats.BatchLookup(&cursor, keys, per, nil); got != n || (err != nil && !errors.Is(err, ebpf.ErrKeyNotExist)) {
		t.Fatalf("read %d of %d stats: %v", got, n, err)
	}
	var out [n][2]uint64
	for i, k := range keys {
		for _, c := range per[i*cpus : (i+1)*cpus] {
			out[k][0] += c.Packets
			out[k][1] += c.Bytes
		}
	}
	return out
}
