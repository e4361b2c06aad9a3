package lb

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
)

// An IPv6 rewrite on tc keeps a CHECKSUM_COMPLETE skb's csum right: the
// kernel checks it after the run and fails the run with EBADMSG if not.
func TestIPv6ChecksumCompleteOnTC(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	for _, s := range []Service{svc("[fd00::10]:80/tcp", "[fd00:1::2]:8080"), svc("[fd00::10]:53/udp", "[fd00:1::2]:5353")} {
		if err := m.Upsert(s); err != nil {
			t.Fatal(err)
		}
		frame := maglevFrame(t, s.Frontend.Protocol, netip.MustParseAddrPort("[fd00:9::2]:40000"), s.Frontend.Address)
		out := make([]byte, len(frame)+64)
		const testSKBChecksumComplete = 1 << 2 // BPF_F_TEST_SKB_CHECKSUM_COMPLETE
		opts := ebpf.RunOptions{Data: frame, DataOut: out, Flags: testSKBChecksumComplete}
		if _, err := kernel.Of(dp).Programs.XdplaneTcIngress.Run(&opts); err != nil {
			t.Fatalf("%s: %v", s.Frontend, err)
		}
		if got := maglevDst(t, opts.DataOut); got != s.Backends[0].Address {
			t.Fatalf("%s: went to %s", s.Frontend, got)
		}
	}
}
