package lb_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// vlanTagged is frame with an 802.1Q tag of VLAN id vid after its MAC
// addresses, which are set to src and dst.
func vlanTagged(frame []byte, src, dst net.HardwareAddr, vid uint16) []byte {
	out := append(append([]byte(nil), dst...), src...)
	out = binary.BigEndian.AppendUint16(out, 0x8100)
	out = binary.BigEndian.AppendUint16(out, vid)
	return append(out, frame[12:]...)
}

// A frame of a VLAN belongs to the VLAN device above the interface,
// which only the stack knows: the stack takes its tag out before tc
// ingress, and the programs on the parent pass it untouched, as XDP
// passes a frame whose tag is in it. (Before, tc translated it there, as
// a new flow, and the stack then had a DNATed packet for a VLAN device.)
// A priority-tagged frame (VLAN id 0) the stack delivers to the parent
// itself: it is balanced. This kernel has no VLAN devices; the client
// sends the tagged frames from a packet socket.
func TestBehaviourVLAN(t *testing.T) {
	n := newLBNode(t, 1, tcx)
	if _, err := n.mgr.Sync([]lb.Service{n.service(lb.TCP, vipTCP, servePort(lb.TCP), 0)}); err != nil {
		t.Fatal(err)
	}
	var src, dst net.HardwareAddr
	n.tp.Client.MustDo(func() error {
		ifi, err := net.InterfaceByName("eth0")
		src = ifi.HardwareAddr
		return err
	})
	n.tp.Node.MustDo(func() error {
		ifi, err := net.InterfaceByName("n-cli")
		dst = ifi.HardwareAddr
		return err
	})
	for i, c := range []struct {
		vid      uint16
		balanced bool
	}{{100, false}, {0, true}} {
		client := netip.AddrPortFrom(n.tp.ClientAddr, uint16(21000+i))
		frame := vlanTagged(packets.TCP4(client.String(), vipTCP.String()), src, dst, c.vid)
		before, err := n.dp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.tp.Client.SendFrame("eth0", frame); err != nil {
			t.Fatal(err)
		}
		var after datapath.Counters
		// The node handles the frame from its backlog, soon after
		// SendFrame returns.
		for range 100 {
			if after, err = n.dp.Counters(); err != nil {
				t.Fatal(err)
			}
			if after.ForwardNew.Packets+after.Passed.Packets > before.ForwardNew.Packets+before.Passed.Packets {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		got := after.ForwardNew.Packets - before.ForwardNew.Packets
		if want := map[bool]uint64{false: 0, true: 1}[c.balanced]; got != want {
			t.Errorf("VLAN id %d: %d new flows balanced on the parent, want %d", c.vid, got, want)
		}
		if !c.balanced && after.Passed.Packets == before.Passed.Packets {
			t.Errorf("VLAN id %d: the frame was not counted as passed", c.vid)
		}
	}
}
