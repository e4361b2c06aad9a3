package lb

import "net/netip"

// Exported to the golden tests of package lb_test, which work out what the
// datapath must do from the Go reference code.

// MaglevBackendFor is the backend that the Maglev table the Manager writes
// for s sends the first packet of a flow from src to: flowHash of the flow
// into maglevTable of the backends that take new flows.
func MaglevBackendFor(s Service, src netip.AddrPort) netip.AddrPort {
	n := s.normalized()
	eligible := n.eligible()
	table := maglevTable(eligible, n.MaglevTableSize)
	h := flowHash(src.Addr(), src.Port(), n.Frontend.Address.Port(), n.Frontend.Protocol)
	return eligible[table[h%n.MaglevTableSize]].Address
}

// RejectFrame builds an ICMP (ICMPv6) port unreachable with gopacket; see
// rejectFrame.
var RejectFrame = rejectFrame
