// Package bandwidth holds pods to bandwidth limits in xdplane's datapath:
// per endpoint (a pod's host-side interface), an ingress limit (what
// enters the pod) and an egress limit (what it sends), each a rate in bits
// per second and a burst in bits, the units of the CNI bandwidth
// capability (CNI) and of the kubernetes.io/ingress-bandwidth and
// kubernetes.io/egress-bandwidth annotations (FromAnnotations,
// ParseQuantity). A rate counts whole frames, as a qdisc does; TCP's
// payload gets about 95.6% of it over a 1500-byte MTU.
//
// # Shaping, not policing
//
// A limit shapes: packets wait for their turn in a queue instead of being
// dropped, which is what keeps TCP at the rate (a policer that drops
// collapses it at veth round-trip times). Limits apply at once to flows
// already running, and a refused one leaves the previous one in force.
//
// An ingress limit's queue is on the host side of the pod's link, and how
// packets wait there is the Manager's Mode, detected once and overridable
// (SetMode) while no limit is set:
//
//   - ModeEDT, where the kernel has the fq qdisc: the tc program stamps
//     each packet with its earliest departure time from a virtual clock per
//     endpoint, and an fq qdisc the library installs holds it until then;
//     a packet with more than 2 s queued ahead of it is dropped.
//   - ModeHTB, where there is no fq: the library installs an HTB qdisc
//     with a class for the endpoint, and the tc program puts the
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
// them. Manager.Counters gives the packets shaped and dropped per
// direction.
//
// # Endpoints and lifetimes
//
// Manager.Set attaches the datapath's tc programs to the interface where
// they are not yet (the load balancer and package policy share them, one
// program per hook), and marks the interface's entry in the datapath's
// endpoints map, which policy.Manager uses too: each package writes its
// own fields of it. An endpoint needs no network policy to have limits.
//
// The limits live in the datapath's maps, keyed by interface, and survive
// the process: a new Manager reads them back (Status, Recovered) with the
// mode they were set in. The pod's namespace is not kept: until a Set or
// Remove names it again, an egress limit can be neither changed nor
// removed (refused, naming egress.rate), unless the pod's link is gone.
// An endpoint whose interface was re-created under the same name takes
// the limits the next Set gives, on the new interface.
//
// Detecting fq and reaching a pod's namespace need CAP_SYS_ADMIN besides
// CAP_NET_ADMIN.
package bandwidth
