// Package policy enforces network policy in xdplane's datapath: per
// endpoint (a pod's host-side interface) and direction, rules of peers
// (prefixes with except prefixes), protocols (TCP, UDP, SCTP, ICMP) and
// port ranges, with Kubernetes NetworkPolicy's meaning plus deny rules
// that win over any allow. (Bandwidth limits are package bandwidth's, the
// node-wide deny list package prefilter's.)
//
// # Endpoints and rules
//
// A Manager registers endpoints (AddEndpoint attaches the datapath's tc
// programs to the interface; the load balancer shares them, one program
// per hook) and installs their policies (SetPolicy). A direction is
// isolated when its Rules say so: then only what an Allow rule admits
// passes, the union of the rules, as for a pod a NetworkPolicy of that
// policy type selects. A direction that is not isolated passes everything
// that no Deny rule denies. A rule with no peers matches every peer, one
// with no ports every protocol and port. Callers resolve selectors to
// addresses; the package deals in prefixes.
//
// The datapath is stateful: once a flow passes, its later packets, its
// replies and the ICMP errors about it pass too, whatever the other
// direction's rules say. A flow is a TCP, UDP or SCTP 5-tuple, an ICMP
// echo's identifier, or for other protocols the address pair; other ICMP
// messages make no flow and are judged one by one. IPv6 neighbour
// discovery and multicast listener messages pass every policy, as ARP
// does. A policy change judges new flows by the new
// rules and leaves flows already let through alone, until they go idle
// (netfilter's default timeouts: 5 days for TCP and SCTP, 120 s for UDP,
// 30 s for ICMP, 600 s for the rest) or their entry is evicted.
//
// # Cost per packet
//
// Rules are compiled, not walked: the peer prefixes of a direction are
// partitioned so that each address's longest matching prefix decides
// which rules apply to it, and each such set of rules becomes a table of
// protocol and port blocks. A new flow takes one exact lookup per prefix
// length the policy uses (a trie walk past 31 lengths), and its verdict
// comes from the peer entry itself when the ruleset is small (six entries
// for every protocol, one protocol or one port), else from one or two more
// lookups: the cost does not grow with the number of rules, but for the
// cache. A packet of a known flow takes one hash lookup. Endpoints whose
// rules compile alike share one copy.
//
// # Guarantees
//
// Every change is all or nothing. SetPolicy writes the new rules under a
// fresh policy id and switches the endpoint to it with one map update:
// no packet is judged by a mix of old and new rules, and a change that
// fails (invalid input, full maps) leaves the old rules in force and the
// maps as they were. Invalid input is refused with a
// *datapath.ValidationError naming the field, wrapping ErrInvalid or
// ErrCapacity.
//
// A packet must not pass a rule by hiding its ports: where a direction is
// isolated or has deny rules, the datapath drops what it cannot parse
// (truncated headers, more than eight IPv6 extension headers, v4-mapped
// IPv6 addresses on the wire), and a later fragment passes only when its
// datagram's first fragment passed, from which it takes the ports. IPv4
// options and IPv6 extension headers are walked, never mistaken for the
// transport header.
//
// # Observing
//
// Manager.Counters gives an endpoint's allowed and denied packets per
// direction. The datapath's Datapath.DropCounters counts the drops by
// reason (datapath.DropDenyRule, DropNoRule, DropFragment, DropMalformed),
// and Datapath.Events reads the dropped packets themselves (one event per
// datapath.Options.EventSample drops, per CPU) with their addresses,
// ports, endpoint id and reason.
//
// # Endpoints shared
//
// An endpoint's entry in the datapath is shared with package bandwidth,
// whose Manager sets the same pods' bandwidth limits; each writes its own
// fields, and neither undoes the other's. Removing an endpoint's policy
// leaves its limits alone, and the other way round.
package policy
