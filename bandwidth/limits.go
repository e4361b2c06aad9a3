package bandwidth

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/xdplane/xdplane/internal/verr"
)

// The pod annotations that carry Kubernetes bandwidth limits, in bits per
// second, as kubelet, the container runtimes and the CNI bandwidth plugin
// read them. FromAnnotations reads both.
const (
	// IngressAnnotation limits what enters the pod.
	IngressAnnotation = "kubernetes.io/ingress-bandwidth"
	// EgressAnnotation limits what the pod sends.
	EgressAnnotation = "kubernetes.io/egress-bandwidth"
)

// The bounds Validate holds limits to, and the defaults of Limit.
const (
	// minRate is kubelet's own floor for the bandwidth annotations
	// (1k): anything slower cannot carry even a TCP handshake in time.
	minRate = 1_000
	// maxRate, 1 Tbit/s, is above any interface a node has.
	maxRate = 1_000_000_000_000
	// minBurst is one full-size Ethernet frame (1500 bytes): a shaper
	// cannot send a packet larger than its burst.
	minBurst = 1500 * 8
	// maxBurst, 1 Gbit (125 MB), is 1 ms at the highest rate.
	maxBurst = 1_000_000_000
	// maxBurstSeconds bounds the time Rate takes to earn a burst back.
	// HTB holds a burst as the time to send it at the rate, in a 32-bit
	// count of 64 ns ticks: about 274 s.
	maxBurstSeconds = 240
	// maxPacketRate keeps the policer's interval between packets, in
	// whole nanoseconds, at 10 ns or more.
	maxPacketRate = 100_000_000
	// maxPacketBurst is as many packets as the fastest policer passes
	// in a second.
	maxPacketBurst = 100_000_000

	// defaultBurstPerSecond: the default burst is Rate/100, 10 ms of it,
	// the classic rate/HZ at HZ=100, so that a shaper woken a jiffy late
	// still keeps up.
	defaultBurstPerSecond = 100
	// defaultMinBurst, 64 KiB, is one full GSO packet: after a quiet
	// moment one leaves at once instead of waiting for the bucket.
	defaultMinBurst = 64 << 10 * 8
	// defaultPacketBurstPerSecond: the default packet burst is 100 ms
	// of PacketRate.
	defaultPacketBurstPerSecond = 10
	// defaultMinPacketBurst is Calico's default packet burst.
	defaultMinPacketBurst = 5

	// kubeMinBandwidth and kubeMaxBandwidth are what kubelet and the
	// container runtimes accept in the annotations: 1k and 1P.
	kubeMinBandwidth = 1_000
	kubeMaxBandwidth = 1_000_000_000_000_000
)

// Limit is one direction's bandwidth limit: a shaper (Rate and Burst),
// which holds back what goes faster, and a policer (PacketRate and
// PacketBurst), which drops what comes faster. Either, both or neither
// may be set; the zero Limit limits nothing.
type Limit struct {
	// Rate is the average the direction may carry, in bits per second,
	// as the CNI bandwidth capability counts it (the whole IP packet).
	// Optional. Default: 0, no shaping.
	Rate uint64
	// Burst is how much may leave at once, after a quiet moment, before
	// Rate holds it back, in bits. Optional, and only with Rate.
	// Default (0): 10 ms at Rate, but at least 64 KiB (524,288 bits, one
	// full GSO packet) and at most 1 Gbit, and never more than Rate earns
	// in 240 s (which bites below 2,185 bit/s).
	Burst uint64
	// PacketRate is the most packets per second the direction takes;
	// the policer drops the rest instead of queueing them, which is what
	// a UDP flood needs. Optional; it works with or without Rate.
	// Default: 0, no policer.
	PacketRate uint64
	// PacketBurst is how many packets may come back to back, after a
	// quiet moment, before PacketRate applies. Optional, and only with
	// PacketRate. Default (0): 100 ms at PacketRate, rounded up, but at
	// least 5, Calico's default.
	PacketBurst uint64
}

// Limits are an endpoint's bandwidth limits. Ingress limits what enters
// the pod, Egress what the pod sends, as the Kubernetes annotations
// kubernetes.io/ingress-bandwidth and kubernetes.io/egress-bandwidth name
// them. The zero Limits limit nothing.
type Limits struct {
	Ingress, Egress Limit
}

// IsZero reports whether l limits nothing.
func (l Limit) IsZero() bool { return l == Limit{} }

// Validate checks b and returns the first problem as a
// *datapath.ValidationError wrapping ErrInvalid, its Field named after the
// direction and the field, for example "egress.burst" or
// "ingress.packetRate". The bounds, past which a value is a mistake
// rather than a wish:
//
//   - Rate: 0, or from 1,000 bit/s (kubelet's own floor for the
//     annotations) to 1 Tbit/s.
//   - Burst: 0, or with a Rate from 12,000 bits (one 1500-byte frame: a
//     shaper cannot send a packet larger than its burst) to 1 Gbit (125
//     MB), and no more than Rate earns in 240 s: HTB holds a burst as the
//     time to send it, and cannot hold much more.
//   - PacketRate: up to 100,000,000 packets per second.
//   - PacketBurst: 0, or with a PacketRate up to 100,000,000 packets.
func (b Limits) Validate() error {
	if err := b.Ingress.validate("ingress"); err != nil {
		return err
	}
	return b.Egress.validate("egress")
}

func (l Limit) validate(dir string) error {
	if l.Rate != 0 {
		if reason := rateProblem(l.Rate); reason != "" {
			return verr.Invalid(dir+".rate", l.Rate, reason)
		}
	}
	switch {
	case l.Burst == 0:
	case l.Rate == 0:
		return verr.Invalid(dir+".burst", l.Burst, "set without rate")
	case l.Burst < minBurst:
		return verr.Invalid(dir+".burst", l.Burst,
			"below 12000 bits, one 1500-byte frame: a shaper cannot send a packet larger than its burst")
	case l.Burst > maxBurst:
		return verr.Invalid(dir+".burst", l.Burst, "above 1 Gbit (125 MB)")
	case l.Burst > l.Rate*maxBurstSeconds:
		return verr.Invalid(dir+".burst", l.Burst, fmt.Sprintf(
			"more than rate %d bit/s earns in %d s: HTB cannot hold so long a burst", l.Rate, maxBurstSeconds))
	}
	if l.PacketRate > maxPacketRate {
		return verr.Invalid(dir+".packetRate", l.PacketRate, "above 100M packets/s")
	}
	switch {
	case l.PacketBurst == 0:
	case l.PacketRate == 0:
		return verr.Invalid(dir+".packetBurst", l.PacketBurst, "set without packetRate")
	case l.PacketBurst > maxPacketBurst:
		return verr.Invalid(dir+".packetBurst", l.PacketBurst, "above 100M packets")
	}
	return nil
}

// rateProblem says what is wrong with a nonzero rate, or returns "".
func rateProblem(rate uint64) string {
	switch {
	case rate < minRate:
		return "below 1000 bit/s, the least kubelet accepts"
	case rate > maxRate:
		return "above 1 Tbit/s"
	}
	return ""
}

// rateBytes is Rate in bytes per second, rounded up: never stricter than
// asked.
func (l Limit) rateBytes() uint64 { return ceilDiv(l.Rate, 8) }

// burst is Burst in bits with the default applied; 0 without a Rate.
func (l Limit) burst() uint64 {
	switch {
	case l.Rate == 0:
		return 0
	case l.Burst != 0:
		return l.Burst
	}
	b := min(max(ceilDiv(l.Rate, defaultBurstPerSecond), defaultMinBurst), maxBurst)
	if l.Rate <= math.MaxUint64/maxBurstSeconds {
		b = min(b, l.Rate*maxBurstSeconds)
	}
	return b
}

// burstBytes is the burst in bytes, the default applied, rounded up; 0
// without a Rate.
func (l Limit) burstBytes() uint64 { return ceilDiv(l.burst(), 8) }

// packetBurst is PacketBurst with the default applied; 0 without a
// PacketRate.
func (l Limit) packetBurst() uint64 {
	switch {
	case l.PacketRate == 0:
		return 0
	case l.PacketBurst != 0:
		return l.PacketBurst
	}
	return max(ceilDiv(l.PacketRate, defaultPacketBurstPerSecond), defaultMinPacketBurst)
}

func ceilDiv(a, b uint64) uint64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}

// ParseQuantity parses a bandwidth annotation's value, a
// Kubernetes resource quantity in bits per second, and returns it as
// kubelet reads it: a whole number, a fraction rounded up. It takes what
// kubelet takes: digits with an optional sign and decimal point, then at
// most one suffix, decimal (k, M, G, T, P, E; "10M" is 10,000,000 bit/s;
// also n, u, m), binary (Ki, Mi, Gi, Ti, Pi, Ei; "100Mi" is 104,857,600)
// or an exponent ("1e6", "15E5"); and from 1 kbit/s to 1 Pbit/s, kubelet's
// bounds ("100m", a tenth of a bit per second, is refused). The error
// wraps ErrInvalid and quotes s.
func ParseQuantity(s string) (uint64, error) {
	v, reason := parseBandwidth(s)
	if reason != "" {
		return 0, fmt.Errorf("%w: bandwidth %q: %s", ErrInvalid, s, reason)
	}
	return v, nil
}

// parseBandwidth is ParseQuantity, with the problem as a reason.
func parseBandwidth(s string) (uint64, string) {
	if s == "" {
		return 0, "empty: want a quantity such as 10M"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		return 0, "has white space"
	}
	rest, neg := s, false
	switch rest[0] {
	case '-':
		neg = true
		rest = rest[1:]
	case '+':
		rest = rest[1:]
	}
	whole, rest := leadingDigits(rest)
	var frac string
	if strings.HasPrefix(rest, ".") {
		frac, rest = leadingDigits(rest[1:])
	}
	if whole == "" && frac == "" {
		return 0, "not a number: want one such as 10M"
	}
	exp10, exp2, reason := quantitySuffix(rest)
	if reason != "" {
		return 0, reason
	}
	digits := strings.TrimLeft(whole+frac, "0")
	switch {
	case digits == "":
		return 0, "below 1 kbit/s, the least kubelet accepts"
	case neg:
		return 0, "negative"
	}
	// The value is digits × 10^scale × 2^exp2, which is at least
	// 10^(n-1+scale) and below 10^(n+scale+19). Settle what is far out of
	// range before computing it, so that "1e999999" costs nothing.
	exp10 = min(max(exp10, math.MinInt32), math.MaxInt32)
	n := int64(len(digits))
	scale := exp10 - int64(len(frac))
	switch {
	case n-1+scale > 18:
		return 0, "above 1 Pbit/s, the most kubelet accepts"
	case n+scale+19 < 0:
		return 0, "below 1 kbit/s, the least kubelet accepts"
	}
	num, _ := new(big.Int).SetString(digits, 10)
	den := big.NewInt(1)
	if scale > 0 {
		num.Mul(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(scale), nil))
	} else {
		den.Exp(big.NewInt(10), big.NewInt(-scale), nil)
	}
	num.Lsh(num, exp2)
	q, r := num.QuoRem(num, den, new(big.Int))
	if r.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	switch {
	case !q.IsUint64() || q.Uint64() > kubeMaxBandwidth:
		return 0, "above 1 Pbit/s, the most kubelet accepts"
	case q.Uint64() < kubeMinBandwidth:
		return 0, "below 1 kbit/s, the least kubelet accepts"
	}
	return q.Uint64(), ""
}

// leadingDigits splits s after its leading ASCII digits.
func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// quantitySuffix interprets a Kubernetes quantity's suffix as a power of
// ten and a power of two.
func quantitySuffix(suffix string) (exp10 int64, exp2 uint, reason string) {
	switch suffix {
	case "":
		return 0, 0, ""
	case "n":
		return -9, 0, ""
	case "u":
		return -6, 0, ""
	case "m":
		return -3, 0, ""
	case "k":
		return 3, 0, ""
	case "M":
		return 6, 0, ""
	case "G":
		return 9, 0, ""
	case "T":
		return 12, 0, ""
	case "P":
		return 15, 0, ""
	case "E":
		return 18, 0, ""
	case "Ki":
		return 0, 10, ""
	case "Mi":
		return 0, 20, ""
	case "Gi":
		return 0, 30, ""
	case "Ti":
		return 0, 40, ""
	case "Pi":
		return 0, 50, ""
	case "Ei":
		return 0, 60, ""
	}
	if len(suffix) > 1 && (suffix[0] == 'e' || suffix[0] == 'E') {
		e, err := strconv.ParseInt(suffix[1:], 10, 64)
		switch {
		case err == nil:
			return e, 0, ""
		case errors.Is(err, strconv.ErrRange):
			return 0, 0, "exponent out of range"
		}
	}
	reason = fmt.Sprintf("unknown suffix %q: want k, M, G, T, P, Ki, Mi, Gi, Ti, Pi or an exponent such as e6", suffix)
	switch lower := strings.ToLower(suffix); {
	case suffix == "K":
		reason += " (kilo is a lower-case k)"
	case strings.Contains(lower, "b"):
		reason += " (the unit, bit/s, is not written: 10M is 10 Mbit/s)"
	}
	return 0, 0, reason
}

// FromAnnotations reads a pod's limits from its annotations
// kubernetes.io/ingress-bandwidth and kubernetes.io/egress-bandwidth,
// each optional, with ParseQuantity. The bursts are left 0, the
// default, and so are the packet rates: the annotations carry rates only.
// A value is refused if ParseQuantity or Validate would refuse
// it (above 1 Tbit/s, though kubelet accepts up to 1 Pbit/s); the error
// is a *datapath.ValidationError wrapping ErrInvalid whose Field is the
// annotation's key and Value its text. A nil map is no limits.
func FromAnnotations(ann map[string]string) (Limits, error) {
	var b Limits
	for _, a := range []struct {
		key   string
		limit *Limit
	}{{IngressAnnotation, &b.Ingress}, {EgressAnnotation, &b.Egress}} {
		text, ok := ann[a.key]
		if !ok {
			continue
		}
		rate, reason := parseBandwidth(text)
		if reason == "" {
			reason = rateProblem(rate)
		}
		if reason != "" {
			return Limits{}, verr.Invalid(a.key, text, reason)
		}
		a.limit.Rate = rate
	}
	return b, nil
}

// CNI is the CNI bandwidth capability's runtime config, which a
// container runtime passes a CNI plugin as runtimeConfig.bandwidth, and
// the fields of the bandwidth plugin's own configuration: rates in bits
// per second, bursts in bits. A zero field is unset.
type CNI struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// Limits returns c as limits, without checking them (see Validate).
// Runtimes that build c from the pod annotations, which carry no burst,
// fill in a huge burst that stands for none, and Limits reads those
// values as 0, the default: 2147483647 (cri-dockerd, after dockershim),
// 4294967295 (containerd) and 34359738359 or 34359738360 (CRI-O). Any
// other burst is kept as it is.
func (c CNI) Limits() Limits {
	return Limits{
		Ingress: Limit{Rate: c.IngressRate, Burst: cniBurst(c.IngressBurst)},
		Egress:  Limit{Rate: c.EgressRate, Burst: cniBurst(c.EgressBurst)},
	}
}

// cniBurst reads the container runtimes' stand-ins for "no burst" as 0.
func cniBurst(b uint64) uint64 {
	switch b {
	case math.MaxInt32, math.MaxUint32, math.MaxUint32*8 - 1, math.MaxUint32 * 8:
		return 0
	}
	return b
}
