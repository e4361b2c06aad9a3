package kernel

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/internal/bpf"
)

// CTTimeouts are the conntrack idle timeouts the programs were loaded
// with; datapath.ConntrackTimeouts documents them, and converts to and
// from this type: the fields must stay the same, in the same order.
type CTTimeouts struct {
	TCPEstablished, TCPOpening, TCPClosing, UDP, UDPStream time.Duration
}

// Set writes t into the programs' constants in spec, before load.
func (t CTTimeouts) Set(spec *ebpf.CollectionSpec) error {
	for name, d := range map[string]time.Duration{
		bpf.XdplaneVarCtTimeoutTcpEstablished: t.TCPEstablished,
		bpf.XdplaneVarCtTimeoutTcpOpening:     t.TCPOpening,
		bpf.XdplaneVarCtTimeoutTcpClosing:     t.TCPClosing,
		bpf.XdplaneVarCtTimeoutUdp:            t.UDP,
		bpf.XdplaneVarCtTimeoutUdpStream:      t.UDPStream,
	} {
		v, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("set conntrack timeouts: the object has no %s", name)
		}
		if err := v.Set(uint64(d)); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// Closing mirrors ct_closing in bpf/include/conntrack.h: a TCP flow reset,
// or closed by both sides.
func Closing(v *bpf.XdplaneCtValue) bool {
	return v.Rst != 0 || (v.FinForward != 0 && v.FinReply != 0)
}

// Timeout mirrors ct_timeout: how long the flow of forward entry v, of
// protocol proto, may be idle.
func (t CTTimeouts) Timeout(v *bpf.XdplaneCtValue, proto uint8) time.Duration {
	if proto == 17 {
		if v.SeenReply != 0 {
			return t.UDPStream
		}
		return t.UDP
	}
	if Closing(v) {
		return t.TCPClosing
	}
	if v.SeenReply != 0 {
		return t.TCPEstablished
	}
	return t.TCPOpening
}
