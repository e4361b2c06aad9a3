package bandwidth

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
)

func TestParseQuantity(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
	}{
		{"1000000", 1_000_000},
		{"1000", 1000},
		{"1k", 1000},
		{"500k", 500_000},
		{"10M", 10_000_000},
		{"1G", 1_000_000_000},
		{"2T", 2_000_000_000_000},
		{"1P", 1_000_000_000_000_000},
		{"1Ki", 1024},
		{"100Mi", 104_857_600},
		{"1Gi", 1 << 30},
		{"1Ti", 1 << 40},
		{"1.5G", 1_500_000_000},
		{"1.5Gi", 1_610_612_736},
		{"0.5Mi", 524_288},
		{".5M", 500_000},
		{"1.M", 1_000_000},
		{"+10M", 10_000_000},
		{"010M", 10_000_000},
		{"1e6", 1_000_000},
		{"1E6", 1_000_000},
		{"1e+6", 1_000_000},
		{"25000e-1", 2500},
		{"1.5e3", 1500},
		{"1e15", 1_000_000_000_000_000},
		{"1000000000m", 1_000_000},
		{"1000000000000n", 1000},
		// A fraction of a bit rounds up, as kubelet's Quantity.Value does.
		{"1000.5", 1001},
		{"1.0000001k", 1001},
		{"999.5", 1000},
		{"0.0000000000000000000000000001e31", 1000},
	} {
		got, err := ParseQuantity(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseQuantity(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}

	for _, tt := range []struct {
		in, reason string
	}{
		{"", "empty"},
		{"-10M", "negative"},
		{"-0.5k", "negative"},
		{"0", "below 1 kbit/s"},
		{"-0", "below 1 kbit/s"},
		{"999", "below 1 kbit/s"},
		{"100m", "below 1 kbit/s"},
		{"5u", "below 1 kbit/s"},
		{"10n", "below 1 kbit/s"},
		{"0.9k", "below 1 kbit/s"},
		{"1e-100", "below 1 kbit/s"},
		{"1e-99999999999", "below 1 kbit/s"},
		{"0." + strings.Repeat("0", 10000) + "1", "below 1 kbit/s"},
		{"1.000000001P", "above 1 Pbit/s"},
		{"2P", "above 1 Pbit/s"},
		{"1Pi", "above 1 Pbit/s"},
		{"1E", "above 1 Pbit/s"},
		{"1Ei", "above 1 Pbit/s"},
		{"1e16", "above 1 Pbit/s"},
		{"1e999999999999", "above 1 Pbit/s"},
		{"1" + strings.Repeat("0", 10000), "above 1 Pbit/s"},
		{"1e99999999999999999999", "exponent out of range"},
		{"10K", "kilo is a lower-case k"},
		{"10Mbps", "the unit, bit/s, is not written"},
		{"10mbit", "the unit, bit/s, is not written"},
		{"10kb", "the unit, bit/s, is not written"},
		{"10ki", "unknown suffix"},
		{"10Mi5", "unknown suffix"},
		{"1e", "unknown suffix"},
		{"1e1.5", "unknown suffix"},
		{"1e_3", "unknown suffix"},
		{"1.2.3", "unknown suffix"},
		{"0x10M", "unknown suffix"},
		{"1_000_000", "unknown suffix"},
		{"10M ", "white space"},
		{" 10M", "white space"},
		{"10 M", "white space"},
		{"10M\n", "white space"},
		{"M", "not a number"},
		{".", "not a number"},
		{"-", "not a number"},
		{"e6", "not a number"},
		{"ten", "not a number"},
		{"NaN", "not a number"},
		{"Inf", "not a number"},
	} {
		got, err := ParseQuantity(tt.in)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseQuantity(%q) = %d, %v, want ErrInvalid", tt.in, got, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, strconv.Quote(tt.in)) || !strings.Contains(msg, tt.reason) {
			t.Errorf("ParseQuantity(%q) = %q, want it to quote the text and say %q", tt.in, msg, tt.reason)
		}
	}
}

func FuzzParseQuantity(f *testing.F) {
	for _, s := range []string{"10M", "1.5Gi", "1e6", "-10M", "100m", "999.5", ".5M", "1P", "1E", "1e-3k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseQuantity(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseQuantity(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if v < kubeMinBandwidth || v > kubeMaxBandwidth {
			t.Fatalf("ParseQuantity(%q) = %d, outside kubelet's bounds", s, v)
		}
		// The plain decimal form is the same value.
		if back, err := ParseQuantity(strconv.FormatUint(v, 10)); err != nil || back != v {
			t.Fatalf("ParseQuantity(%q) = %d, but its decimal form gives %d, %v", s, v, back, err)
		}
	})
}

func TestFromAnnotations(t *testing.T) {
	for _, tt := range []struct {
		name string
		ann  map[string]string
		want Limits
	}{
		{"nil", nil, Limits{}},
		{"neither", map[string]string{"example.com/other": "10M"}, Limits{}},
		{"ingress only", map[string]string{IngressAnnotation: "10M"},
			Limits{Ingress: Limit{Rate: 10_000_000}}},
		{"egress only", map[string]string{EgressAnnotation: "1.5Gi", "example.com/other": "x"},
			Limits{Egress: Limit{Rate: 1_610_612_736}}},
		{"both", map[string]string{IngressAnnotation: "1k", EgressAnnotation: "1T"},
			Limits{Ingress: Limit{Rate: 1000}, Egress: Limit{Rate: 1_000_000_000_000}}},
	} {
		got, err := FromAnnotations(tt.ann)
		if err != nil || got != tt.want {
			t.Errorf("%s: FromAnnotations() = %+v, %v, want %+v", tt.name, got, err, tt.want)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: the limits read do not validate: %v", tt.name, err)
		}
	}

	for _, tt := range []struct {
		name string
		ann  map[string]string
		key  string
	}{
		{"ingress not a quantity", map[string]string{IngressAnnotation: "10Mbps"}, IngressAnnotation},
		{"egress empty", map[string]string{EgressAnnotation: ""}, EgressAnnotation},
		{"egress negative", map[string]string{IngressAnnotation: "10M", EgressAnnotation: "-10M"},
			EgressAnnotation},
		{"below kubelet's floor", map[string]string{IngressAnnotation: "100m"}, IngressAnnotation},
		{"above kubelet's ceiling", map[string]string{EgressAnnotation: "2P"}, EgressAnnotation},
		// kubelet takes it; Validate does not.
		{"above 1 Tbit/s", map[string]string{EgressAnnotation: "2T"}, EgressAnnotation},
		{"ingress checked first", map[string]string{IngressAnnotation: "x", EgressAnnotation: "y"},
			IngressAnnotation},
	} {
		got, err := FromAnnotations(tt.ann)
		var ve *datapath.ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) {
			t.Errorf("%s: FromAnnotations() = %+v, %v, want a *datapath.ValidationError wrapping ErrInvalid", tt.name, got, err)
			continue
		}
		if ve.Field != tt.key || ve.Value != tt.ann[tt.key] || !strings.HasPrefix(err.Error(), tt.key+" ") {
			t.Errorf("%s: FromAnnotations() = %q (field %q, value %q), want it to name %s and its value",
				tt.name, err, ve.Field, ve.Value, tt.key)
		}
		if got != (Limits{}) {
			t.Errorf("%s: FromAnnotations() returned %+v with its error", tt.name, got)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	in := func(l Limit) Limits { return Limits{Ingress: l} }
	out := func(l Limit) Limits { return Limits{Egress: l} }
	for _, tt := range []struct {
		name  string
		b     Limits
		field string
	}{
		{"rate below 1000 bit/s", in(Limit{Rate: 999}), "ingress.rate"},
		{"rate of 1 bit/s", out(Limit{Rate: 1}), "egress.rate"},
		{"rate above 1 Tbit/s", out(Limit{Rate: maxRate + 1}), "egress.rate"},
		{"rate of MaxUint64", in(Limit{Rate: math.MaxUint64}), "ingress.rate"},
		{"burst without rate", in(Limit{Burst: 100_000}), "ingress.burst"},
		{"burst without rate, with a policer", out(Limit{Burst: 100_000, PacketRate: 1000}), "egress.burst"},
		{"burst below one frame", in(Limit{Rate: 10_000_000, Burst: minBurst - 1}), "ingress.burst"},
		{"burst of 1 bit", out(Limit{Rate: 10_000_000, Burst: 1}), "egress.burst"},
		{"burst above 1 Gbit", in(Limit{Rate: maxRate, Burst: maxBurst + 1}), "ingress.burst"},
		{"burst of MaxUint32 bits (containerd's stand-in)", in(Limit{Rate: 10_000_000, Burst: math.MaxUint32}), "ingress.burst"},
		{"burst longer than 240 s", out(Limit{Rate: 1000, Burst: 240_001}), "egress.burst"},
		{"packet rate above 100M", in(Limit{PacketRate: maxPacketRate + 1}), "ingress.packetRate"},
		{"packet burst without packet rate", out(Limit{Rate: 1_000_000, PacketBurst: 10}), "egress.packetBurst"},
		{"packet burst above 100M", in(Limit{PacketRate: 1000, PacketBurst: maxPacketBurst + 1}), "ingress.packetBurst"},
		{"first problem wins", Limits{
			Ingress: Limit{Rate: 1_000_000, Burst: 10},
			Egress:  Limit{Rate: 1},
		}, "ingress.burst"},
		{"egress after a good ingress", Limits{
			Ingress: Limit{Rate: 1_000_000, Burst: 100_000, PacketRate: 100, PacketBurst: 10},
			Egress:  Limit{PacketBurst: 1},
		}, "egress.packetBurst"},
	} {
		err := tt.b.Validate()
		var ve *datapath.ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) {
			t.Errorf("%s: Validate() = %v, want a *datapath.ValidationError wrapping ErrInvalid", tt.name, err)
			continue
		}
		if ve.Field != tt.field || ve.Endpoint != "" || !strings.HasPrefix(err.Error(), tt.field+" ") {
			t.Errorf("%s: Validate() = %q, want field %q", tt.name, err, tt.field)
		}
	}

	for _, tt := range []struct {
		name string
		b    Limits
	}{
		{"no limits", Limits{}},
		{"rates only", Limits{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{Rate: 1_000_000_000}}},
		{"the least rate", in(Limit{Rate: minRate})},
		{"the most rate", out(Limit{Rate: maxRate})},
		{"the least burst", in(Limit{Rate: minRate, Burst: minBurst})},
		{"the most burst", in(Limit{Rate: maxRate, Burst: maxBurst})},
		{"240 s of burst", out(Limit{Rate: 1000, Burst: 240_000})},
		{"a burst that is not whole bytes", in(Limit{Rate: 1_000_000, Burst: 12_345})},
		{"a policer alone", in(Limit{PacketRate: 1})},
		{"a policer with its burst", out(Limit{PacketRate: maxPacketRate, PacketBurst: maxPacketBurst})},
		{"everything", Limits{
			Ingress: Limit{Rate: 10_000_000, Burst: 1_000_000, PacketRate: 10_000, PacketBurst: 100},
			Egress:  Limit{Rate: 5_000_000, PacketRate: 20_000},
		}},
	} {
		if err := tt.b.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", tt.name, err)
		}
	}

	want := "egress.burst 1: below 12000 bits, one 1500-byte frame: a shaper cannot send a packet larger than its burst"
	if err := out(Limit{Rate: 1_000_000, Burst: 1}).Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
}

func TestLimitDefaults(t *testing.T) {
	for _, tt := range []struct {
		l                     Limit
		rateBytes, burstBytes uint64
	}{
		{Limit{}, 0, 0},
		{Limit{PacketRate: 1000}, 0, 0},
		// 240 s at the rate: 64 KiB would take 524 s.
		{Limit{Rate: 1000}, 125, 30_000},
		{Limit{Rate: 1001}, 126, 30_030},
		// 64 KiB, one GSO packet.
		{Limit{Rate: 2185}, 274, 65_536},
		{Limit{Rate: 10_000_000}, 1_250_000, 65_536},
		{Limit{Rate: 52_428_800}, 6_553_600, 65_536},
		// 10 ms at the rate.
		{Limit{Rate: 52_428_801}, 6_553_601, 65_537},
		{Limit{Rate: 1_000_000_000}, 125_000_000, 1_250_000},
		{Limit{Rate: 100_000_000_000}, 12_500_000_000, 125_000_000},
		// 1 Gbit, the most.
		{Limit{Rate: maxRate}, 125_000_000_000, 125_000_000},
		// An explicit burst, rounded up to whole bytes.
		{Limit{Rate: 10_000_000, Burst: minBurst}, 1_250_000, 1500},
		{Limit{Rate: 10_000_000, Burst: minBurst + 1}, 1_250_000, 1501},
		{Limit{Rate: 10_000_000, Burst: 8_000_000}, 1_250_000, 1_000_000},
		// Beyond what Validate takes, the defaults neither overflow nor wrap.
		{Limit{Rate: math.MaxUint64}, math.MaxUint64/8 + 1, maxBurst / 8},
	} {
		if got := tt.l.rateBytes(); got != tt.rateBytes {
			t.Errorf("%+v: rateBytes() = %d, want %d", tt.l, got, tt.rateBytes)
		}
		if got := tt.l.burstBytes(); got != tt.burstBytes {
			t.Errorf("%+v: burstBytes() = %d, want %d", tt.l, got, tt.burstBytes)
		}
	}

	for _, tt := range []struct {
		l    Limit
		want uint64
	}{
		{Limit{}, 0},
		{Limit{Rate: 1_000_000}, 0},
		{Limit{PacketRate: 1}, 5},
		{Limit{PacketRate: 50}, 5},
		{Limit{PacketRate: 51}, 6},
		{Limit{PacketRate: 1000}, 100},
		{Limit{PacketRate: 1001}, 101},
		{Limit{PacketRate: maxPacketRate}, 10_000_000},
		{Limit{PacketRate: 1000, PacketBurst: 1}, 1},
		{Limit{PacketRate: 1000, PacketBurst: 7}, 7},
	} {
		if got := tt.l.packetBurst(); got != tt.want {
			t.Errorf("%+v: packetBurst() = %d, want %d", tt.l, got, tt.want)
		}
	}

	// A limit with its defaults written out is valid wherever the limit
	// is: the defaults stay inside Validate's bounds.
	for rate := uint64(minRate); rate <= maxRate; rate = rate*3 + 1 {
		l := Limit{Rate: rate, PacketRate: min(rate, maxPacketRate)}
		explicit := Limit{Rate: rate, Burst: l.burst(), PacketRate: l.PacketRate, PacketBurst: l.packetBurst()}
		if err := (Limits{Ingress: explicit}).Validate(); err != nil {
			t.Errorf("rate %d: the defaults %+v do not validate: %v", rate, explicit, err)
		}
	}

	if !(Limit{}).IsZero() || (Limit{PacketBurst: 1}).IsZero() || (Limit{Rate: 1000}).IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestCNI(t *testing.T) {
	// runtimeConfig.bandwidth as containerd passes it for a pod annotated
	// with kubernetes.io/ingress-bandwidth: 10M.
	var c CNI
	if err := json.Unmarshal([]byte(`{"ingressRate":10000000,"ingressBurst":4294967295}`), &c); err != nil {
		t.Fatal(err)
	}
	if want := (CNI{IngressRate: 10_000_000, IngressBurst: math.MaxUint32}); c != want {
		t.Fatalf("unmarshal gave %+v, want %+v", c, want)
	}
	if got, want := c.Limits(), (Limits{Ingress: Limit{Rate: 10_000_000}}); got != want {
		t.Errorf("Limits() = %+v, want %+v", got, want)
	}
	text, err := json.Marshal(CNI{EgressRate: 1000, EgressBurst: 12000})
	if want := `{"egressRate":1000,"egressBurst":12000}`; err != nil || string(text) != want {
		t.Errorf("marshal gave %s, %v, want %s", text, err, want)
	}

	for _, tt := range []struct {
		name string
		c    CNI
		want Limits
	}{
		{"unset", CNI{}, Limits{}},
		{"explicit bursts kept", CNI{IngressRate: 1_000_000, IngressBurst: 80_000, EgressRate: 2_000_000, EgressBurst: 12_000},
			Limits{Ingress: Limit{Rate: 1_000_000, Burst: 80_000}, Egress: Limit{Rate: 2_000_000, Burst: 12_000}}},
		{"cri-dockerd", CNI{EgressRate: 1_000_000, EgressBurst: math.MaxInt32},
			Limits{Egress: Limit{Rate: 1_000_000}}},
		{"containerd", CNI{IngressRate: 1_000_000, IngressBurst: math.MaxUint32, EgressRate: 2_000_000, EgressBurst: math.MaxUint32},
			Limits{Ingress: Limit{Rate: 1_000_000}, Egress: Limit{Rate: 2_000_000}}},
		{"CRI-O", CNI{IngressRate: 1_000_000, IngressBurst: math.MaxUint32*8 - 1},
			Limits{Ingress: Limit{Rate: 1_000_000}}},
		{"older CRI-O", CNI{EgressRate: 1_000_000, EgressBurst: math.MaxUint32 * 8},
			Limits{Egress: Limit{Rate: 1_000_000}}},
		{"a burst near a stand-in", CNI{IngressRate: 1_000_000, IngressBurst: math.MaxUint32 - 1},
			Limits{Ingress: Limit{Rate: 1_000_000, Burst: math.MaxUint32 - 1}}},
	} {
		if got := tt.c.Limits(); got != tt.want {
			t.Errorf("%s: Limits() = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// The datapath entries a limit becomes, in each mode and direction.
func TestLimitValue(t *testing.T) {
	class := uint32(htbHandle<<16 | htbClass)
	for _, tt := range []struct {
		name string
		mode Mode
		dir  datapath.Direction
		l    Limit
		want bpf.XdplaneBwValue
	}{
		{"EDT, a rate", ModeEDT, datapath.Ingress, Limit{Rate: 10_000_000},
			// 1.25 MB/s; the default burst, 64 KiB, is 52.4288 ms of it.
			bpf.XdplaneBwValue{Mode: bwEDT, Rate: 1_250_000, BurstNs: 52_428_800, HorizonNs: edtHorizon, SetRate: 10_000_000}},
		{"EDT egress: the pod side's HTB queue, as in HTB mode", ModeEDT, datapath.Egress, Limit{Rate: 10_000_000},
			bpf.XdplaneBwValue{Mode: bwHTB, HorizonNs: edtHorizon, SetRate: 10_000_000}},
		{"EDT, a rate and burst", ModeEDT, datapath.Ingress, Limit{Rate: 8_000_000, Burst: 80_000},
			bpf.XdplaneBwValue{Mode: bwEDT, Rate: 1_000_000, BurstNs: 10_000_000, HorizonNs: edtHorizon, SetRate: 8_000_000, SetBurst: 80_000}},
		{"HTB ingress: classified", ModeHTB, datapath.Ingress, Limit{Rate: 10_000_000},
			bpf.XdplaneBwValue{Mode: bwHTB, Rate: 1_250_000, Priority: class, HorizonNs: edtHorizon, SetRate: 10_000_000}},
		{"HTB egress: the pod side's queue takes all, nothing to classify", ModeHTB, datapath.Egress, Limit{Rate: 10_000_000, Burst: 100_000},
			bpf.XdplaneBwValue{Mode: bwHTB, HorizonNs: edtHorizon, SetRate: 10_000_000, SetBurst: 100_000}},
		{"a policer alone", ModeHTB, datapath.Egress, Limit{PacketRate: 1000},
			// 1 ms a packet; the default burst, 100 packets, lets the
			// clock run 99 intervals ahead.
			bpf.XdplaneBwValue{PpsIntervalNs: 1_000_000, PpsBurstNs: 99_000_000, HorizonNs: edtHorizon, SetPacketRate: 1000}},
		{"a policer of one packet burst", ModeEDT, datapath.Ingress, Limit{PacketRate: 3, PacketBurst: 1},
			bpf.XdplaneBwValue{PpsIntervalNs: 333_333_333, HorizonNs: edtHorizon, SetPacketRate: 3, SetPacketBurst: 1}},
		{"both", ModeHTB, datapath.Ingress, Limit{Rate: 1_000_000, PacketRate: 100, PacketBurst: 10},
			bpf.XdplaneBwValue{Mode: bwHTB, Rate: 125_000, Priority: class, PpsIntervalNs: 10_000_000, PpsBurstNs: 90_000_000,
				HorizonNs: edtHorizon, SetRate: 1_000_000, SetPacketRate: 100, SetPacketBurst: 10}},
	} {
		got, ok := limitValue(tt.mode, tt.dir, tt.l)
		if !ok || got != tt.want {
			t.Errorf("%s: limitValue = %+v, %v\nwant %+v, true", tt.name, got, ok, tt.want)
		}
	}
	if v, ok := limitValue(ModeHTB, datapath.Ingress, Limit{}); ok {
		t.Errorf("no limit: limitValue = %+v, true; want nothing to write", v)
	}

	// A changed limit keeps the clocks: a backlog stamped at the old
	// rate leaves on its stamps, and a lower rate queues after it; a
	// higher one starts now, not held up by the old rate.
	have := bpf.XdplaneBwValue{Rate: 1000, ClockNs: 900, PpsIntervalNs: 100, PpsClockNs: 700}
	noPolicer := have
	noPolicer.PpsIntervalNs = 0
	for _, c := range []struct {
		name        string
		have, v     bpf.XdplaneBwValue
		clock, pclk uint64
	}{
		{"lower rates", have, bpf.XdplaneBwValue{Rate: 500, PpsIntervalNs: 200}, 900, 700},
		{"the same rates", have, bpf.XdplaneBwValue{Rate: 1000, PpsIntervalNs: 100}, 900, 700},
		{"higher rates", have, bpf.XdplaneBwValue{Rate: 2000, PpsIntervalNs: 50}, 600, 600},
		{"a policer where there was none", noPolicer, bpf.XdplaneBwValue{Rate: 1000, PpsIntervalNs: 100}, 900, 600},
	} {
		v := c.v
		carryClocks(&v, c.have, 600)
		if v.ClockNs != c.clock || v.PpsClockNs != c.pclk || v.Rate != c.v.Rate {
			t.Errorf("%s: carryClocks = %+v, want clock %d, packet clock %d, the rest kept", c.name, v, c.clock, c.pclk)
		}
	}
}
