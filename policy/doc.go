// Package policy enforces network policy in xdplane's datapath: per
// endpoint (a pod's host-side interface) and direction, rules of peers
// (prefixes with except prefixes), protocols (TCP, UDP, SCTP, ICMP) and
// port ranges, with Kubernetes NetworkPolicy's meaning plus deny rules
// that win over any allow; per-endpoint bandwidth limits that shape
// rather than drop; and a node-wide prefilter, a deny list of source
// prefixes that XDP drops before anything else.
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
// maps as they were. Invalid input is refused with a *ValidationError
// naming the field, wrapping ErrInvalid or ErrCapacity.
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
// direction, ReadDropCounters the drops by Reason, and an EventReader the
// dropped packets themselves (one event per datapath.Options.EventSample
// drops, per CPU) with their addresses, ports, endpoint and reason.
//
// # Bandwidth
//
// Manager.SetBandwidth gives an endpoint an ingress limit (what enters the
// pod) and an egress limit (what it sends), each a rate in bits per second
// and a burst in bits, the units of the CNI bandwidth capability
// (CNIBandwidth) and of the kubernetes.io/ingress-bandwidth and
// kubernetes.io/egress-bandwidth annotations (BandwidthFromAnnotations,
// ParseBandwidthQuantity). A rate counts whole frames, as a qdisc does;
// TCP's payload gets about 95.6% of it over a 1500-byte MTU. A limit
// shapes: packets wait for their turn in a queue instead of being dropped,
// which is what keeps TCP at the rate (a policer that drops collapses it
// at veth round-trip times). Limits apply at once to flows already
// running, and a refused one leaves the previous one in force.
//
// An ingress limit's queue is on the host side of the pod's link, and how
// packets wait there is the Manager's BandwidthMode, detected once and
// overridable (SetBandwidthMode) while no limit is set:
//
//   - BandwidthEDT, where the kernel has the fq qdisc: the tc program
//     stamps each packet with its earliest departure time from a virtual
//     clock per endpoint, and an fq qdisc the library installs holds it
//     until then; a packet with more than 2 s queued ahead of it is
//     dropped.
//   - BandwidthHTB, where there is no fq: the library installs an HTB
//     qdisc with a class for the endpoint, and the tc program puts the
//     endpoint's packets in it (skb->priority); other packets leave
//     unshaped.
//
// An egress limit's queue is an HTB class on the pod's side of its link,
// in the pod's namespace (Endpoint.NetNS), in either mode: it takes all
// the pod sends, to the node, other pods or beyond, and the pod's own TCP
// feels the queue and slows down without a drop. (Stamping at the host
// side and pacing in the uplinks' fq, as Cilium does, would leave traffic
// between pods of one node unshaped, and shape nothing where the uplinks
// have no fq.) A pod with CAP_NET_ADMIN could remove that qdisc: give
// egress limits to pods without it.
//
// A packet-rate limit (Limit.PacketRate), for UDP floods, polices: packets
// beyond the rate and its burst are dropped, a GSO packet counting its
// segments. No limit holds ARP or IPv6 neighbour discovery from the link:
// queued or policed, they would fail, and every flow to the neighbour with
// them. Manager.BandwidthCounters gives the packets shaped and
// dropped per direction.
//
// The limits live in the datapath's maps, keyed by interface, and survive
// the agent: a new Manager reads them back and reports them in
// EndpointStatus.Bandwidth, and the mode with them. The pod's namespace
// is not kept: until the endpoint is added again with its NetNS, its
// egress limit can be neither changed nor removed (SetBandwidth and
// RemoveEndpoint refuse, naming egress.rate), unless the pod's link is
// gone. An endpoint moved to a re-created interface of the same name
// takes its limits along, into the namespace AddEndpoint names.
//
// Detecting fq and reaching a pod's namespace need CAP_SYS_ADMIN besides
// CAP_NET_ADMIN.
//
// # Prefilter
//
// SetPrefilter installs the node-wide deny list (a million prefixes and
// more; datapath.Limits.MaxPrefilterPrefixes), for DDoS sources. It acts on
// interfaces where xdplane is attached at XDP, before load balancing,
// reading the source address alone.
package policy
