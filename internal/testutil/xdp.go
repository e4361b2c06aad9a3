package testutil

import (
	"fmt"
	"net"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// AttachXDPPass attaches to ifname, in native mode, an XDP program that
// passes every packet, until the test ends. A veth whose peer's XDP
// program sends frames back to it (XDP_TX) or redirects frames to it
// needs an XDP program of its own to take them: without one the kernel
// drops them, and with only GRO on (which also gives a veth a NAPI
// queue) they can sit in its queue for hundreds of milliseconds.
func (ns *NS) AttachXDPPass(ifname string) {
	ns.t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xdp_pass",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		ns.t.Fatalf("load an XDP pass program: %v", err)
	}
	ns.t.Cleanup(func() { prog.Close() })
	ns.MustDo(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("%s: %w", ns.Name, err)
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attach an XDP pass program to %s in %s: %w", ifname, ns.Name, err)
		}
		ns.t.Cleanup(func() { l.Close() })
		return nil
	})
}

// XDPLinearMax is the longest frame BPF_PROG_TEST_RUN gives an XDP program
// whole: a page less XDP's headroom (256 bytes) and the shared info at its
// end (320 on 64-bit). The rest of a longer frame goes into fragments that
// a program without XDP multi-buffer support never sees, and a driver never
// hands such a program a longer frame (it refuses that MTU). So the program
// rightly finds a longer frame truncated, where tc, which sees the whole
// skb, and a model that reads every byte do not.
var XDPLinearMax = os.Getpagesize() - 256 - 320
