// Command xdplane-lb is a standalone L4 load balancer built on xdplane: a
// small, complete program that shows how the datapath and lb packages fit
// together. It uses only their public API, as your own code would.
//
// It is a Go module of its own, so that its YAML parser stays out of the
// library's go.mod. Build it with `make build` (or, in this directory,
// `go build -o xdplane-lb .`) and run it as root, or with exactly
// CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (run, status and cleanup alike;
// CAP_SYS_ADMIN besides if run has to mount a bpffs). `make demo` runs it
// across network namespaces with real HTTP traffic (see demo.sh).
//
// # Configuration
//
// A YAML file lists the services, and the sources to drop before any of
// them (the prefilter). Each service is written in one of two forms:
// the plain form, one frontend and its backends, or the Kubernetes form,
// a Service and its endpoints as kube-proxy sees them, which expands
// (through lb.KubeService.Expand) to one frontend per address and port.
//
//	nodeAddresses: [192.168.1.10, "fd01::10"]
//	prefilter: [203.0.113.66, 198.51.100.0/24, "2001:db8:bad::/48"]
//	services:
//	  - name: web
//	    frontend: 10.96.0.10:80
//	    protocol: tcp
//	    algorithm: maglev
//	    maglevTableSize: 16381
//	    sessionAffinity: 3h
//	    trafficPolicy: local
//	    sourceRanges: [10.0.0.0/8, 192.168.0.0/16]
//	    backends:
//	      - address: 10.0.1.2:8080
//	        weight: 2
//	        local: true
//	      - address: 10.0.2.2:8080
//	        state: terminating
//	        local: true
//	      - {address: 10.0.3.2:8080, state: maintenance}
//	  - name: dns
//	    frontend: 10.96.0.10:53
//	    protocol: udp
//	    backends:
//	      - address: 10.0.1.2:5353
//	  - name: web6
//	    frontend: "[fd00::10]:80"
//	    backends:
//	      - address: "[fd00:1::2]:8080"
//	  - name: shop
//	    clusterIPs: [10.96.0.20, "fd00::20"]
//	    externalIPs: [192.0.2.20]
//	    loadBalancerIPs: [198.51.100.20]
//	    ports:
//	      - name: http
//	        protocol: TCP
//	        port: 80
//	        targetPort: 8080
//	        nodePort: 30080
//	      - {name: dns, protocol: UDP, port: 53, targetPort: 5353}
//	    externalTrafficPolicy: Local
//	    internalTrafficPolicy: Cluster
//	    loadBalancerSourceRanges: [203.0.113.0/24]
//	    sessionAffinity: ClientIP
//	    algorithm: maglev
//	    endpoints:
//	      - {address: 10.0.1.2, local: true, weight: 2}
//	      - {address: 10.0.2.2, state: terminating}
//	      - {address: "fd00:1::2"}
//
// Top-level fields:
//
//   - services (required): the list of services; `services: []` removes
//     every service. A missing or empty key is refused, so that a
//     truncated file does not remove them by accident.
//   - nodeAddresses: this node's own addresses, on which the node ports of
//     Kubernetes-shaped services listen. Addresses, not prefixes (unlike
//     kube-proxy's --nodeport-addresses): list each one. Required when a
//     service has a nodePort.
//   - prefilter: the node-wide deny list: source prefixes, IPv4 and IPv6
//     (192.0.2.0/24, "2001:db8::/32"), or addresses, each meaning itself
//     alone (/32 or /128). The XDP program drops every IP packet from
//     them that arrives on an interface run attaches to, before anything
//     else and whatever its destination: the node's own addresses too,
//     not only the services. A source added to the list loses its
//     established connections as well (sourceRanges, by contrast, refuse
//     only new flows, to one service), and its IPv6 neighbour discovery:
//     a host on the node's link that solicits the node from a denied
//     IPv6 address loses the node as a neighbour for its other addresses
//     too. The prefilter acts at XDP only: run refuses a non-empty one
//     with --hook tc, where nothing would drop. Refused: a prefix that
//     contains a backend's or endpoint's address (its replies arrive on
//     an attached interface, and would be dropped); a prefix with bits
//     set past its length (write 10.1.0.0/16, not 10.1.2.3/16: masking it
//     silently would deny a whole range for a slip of the length); an
//     IPv4-mapped IPv6 prefix, which no IPv4 packet matches; duplicates.
//     Absent, empty (~) or [] means no prefilter, and run removes the one
//     an earlier run installed. Top level only, for both forms of
//     service: the list is the node's, not a service's, and a Kubernetes
//     Service has no field for it (loadBalancerSourceRanges is a
//     service's allow list). The datapath holds up to 2097152 prefixes
//     (datapath.DefaultMaxPrefilterPrefixes).
//
// Fields of both forms:
//
//   - name (required): unique in the file, printable text (no control
//     characters or other unprintable runes; the space is the one blank
//     allowed). Logs and status call a frontend by it, and for a
//     Kubernetes-shaped service with named ports by name:port, as
//     kube-proxy does ("shop:http").
//   - algorithm: how a new flow picks its backend: random (the default),
//     weighted, or maglev, a consistent hash of the client's address and
//     port and the protocol, so that every node with the same backends
//     picks the same one and a change of backends moves few flows.
//   - maglevTableSize: maglev only: the lookup table's size, a prime from
//     251 to 131071. Default 16381, or larger for a service of more than
//     32 backends.
//   - sessionAffinity: a client's new flows go to the backend of its
//     previous one if that started within this time, as Kubernetes'
//     sessionAffinity ClientIP does. A Go duration in whole seconds up to
//     24h (3h, 90m, 10800s), clientIP (Kubernetes' default timeout,
//     10800s, so that `sessionAffinity: ClientIP` reads as in a Service),
//     or none, the default. A bare number is refused: write 10800s.
//
// Fields of the plain form:
//
//   - frontend (required): address:port where clients reach the service.
//     An IPv6 address goes in brackets and the value must be quoted:
//     YAML reads an unquoted [ as the start of a list.
//   - protocol: tcp (the default) or udp.
//   - trafficPolicy: cluster (the default): every backend; or local:
//     only backends with local: true; with none here but some elsewhere,
//     new flows are dropped (as kube-proxy does), and with none at all,
//     refused.
//   - sourceRanges: prefixes of the frontend's address family; when
//     given, only clients in them may start flows (established flows
//     continue). Default: every client.
//   - backends: the list of backends (below). None is valid.
//
// Fields of a backend (and of an endpoint, whose address has no port):
//
//   - address (required): address:port, of the frontend's family.
//   - weight: 1 to 1000, the backend's share of new flows; default 1.
//   - state: active (the default); terminating, which takes new flows
//     only when no active backend is left (kube-proxy's fallback); or
//     maintenance, which takes none. In every state, flows the backend
//     has keep going to it; only removing a backend ends them.
//   - local: true for a backend on this node (for trafficPolicy local);
//     default false.
//
// Fields of the Kubernetes form (a service with ports; the field names
// are the Service's, and values are accepted in any case, so TCP, Local,
// ClientIP read as in Kubernetes). There is no type: the frontends
// follow from the fields, one per port on each address:
//
//   - clusterIPs: the service's cluster IPs (ClusterIP), one per family.
//   - externalIPs: reached on the service ports too (ExternalIP).
//   - loadBalancerIPs: the load balancer ingress IPs
//     (status.loadBalancer.ingress; LoadBalancer).
//   - ports (required): at least one port (below).
//   - externalTrafficPolicy: cluster (the default) or local, for
//     external IPs, load balancer IPs and node ports.
//   - internalTrafficPolicy: cluster (the default) or local, for cluster
//     IPs.
//   - loadBalancerSourceRanges: prefixes that may reach the load balancer
//     IPs (not the node ports or external IPs, as in kube-proxy). As
//     kube-proxy does, each family's load balancer IPs take the ranges of
//     their family, and a family with none admits every client. Refused
//     without loadBalancerIPs.
//   - endpoints: the pods, each with address (an address without a port:
//     each port reaches it on its targetPort), weight, state and local as
//     for backends. An endpoint serves the frontends of its family, so
//     one service is dual stack; an endpoint of a family without a
//     frontend is refused. An endpoint in maintenance stays in the
//     service, taking no new flows, as in the plain form.
//
// Fields of a port:
//
//   - name: required and unique when there are several; printable text,
//     as a service's name.
//   - protocol: TCP (the default) or UDP.
//   - port (required): the port on cluster, external and load balancer
//     IPs.
//   - targetPort: the endpoints' port, a number (named ports are not
//     resolved); default: port.
//   - nodePort: when given, the port also listens on every node address
//     (NodePort) of the service's families: those of its clusterIPs, or
//     every node address when it has none.
//
// A service with no backends, or none that takes new flows, is installed
// all the same, and the datapath refuses its new flows.
//
// Services are IPv4 or IPv6, and one load balancer serves both (dual
// stack), on the same ports if you like. Within a plain service the
// backends are of the frontend's family: to serve one name over both,
// write an IPv4 service and an IPv6 one, or one Kubernetes-shaped service.
//
// Decoding is strict: unknown fields, repeated fields, duplicate names and
// duplicate frontends (across all services, whichever form made them) are
// errors, and every error names the service (by index and name), the
// field and the value as written, with the line, for example
//
//	lb.yaml:24: services[1] "dns": backends[0].address "10.0.1.2": missing port
//	lb.yaml:28: services[2] "web6": backends[0].address "10.0.1.2:8080": not of the frontend's address family (an IPv4 backend for an IPv6 frontend; write one service per family)
//	lb.yaml:8: services[0] "web": maglevTableSize "16380": not a prime
//	lb.yaml:39: services[3] "shop": ports[1].name: missing: a service with several ports names each, as Kubernetes does
//	lb.yaml:2: prefilter[0] "203.0.113.266": want a prefix such as 192.0.2.0/24 or 2001:db8::/32, or an address
//	lb.yaml:2: prefilter[1] "10.0.0.0/8": contains 10.0.1.2, a backend of services[0] "web": the prefilter would drop its replies
//
// An error found only when the services are installed, such as a
// datapath too small for them, names the service and line the same way:
//
//	lb.yaml:10: services[2] "c": frontend "10.96.0.3:80": the datapath holds at most 2 services
//
// The file must be a regular file (a FIFO or a device is refused without
// being read) of at most --max-config-bytes, 16 MiB by default: room for
// a file that fills the default datapath, 65,536 services with 262,144
// backends, written as above. Anchors and aliases (&pool, *pool) may share
// a list between services, but the file may not have more than a quarter
// as many YAML nodes (keys, values, lists, mappings) as its size limit
// has bytes, counting each alias as the nodes it stands for: 4,194,304
// by default. A handful of aliases to long lists would otherwise take
// minutes and gigabytes to parse.
//
// # Commands
//
//	xdplane-lb run --config FILE --interface IF [--interface IF ...] [--hook tc|xdp] [--bpffs DIR] [--max-config-bytes N]
//	    [--conntrack-size N] [--conntrack-tcp-established D] [--conntrack-tcp-opening D] [--conntrack-tcp-closing D]
//	    [--conntrack-udp D] [--conntrack-udp-stream D] [--conntrack-gc-interval D]
//
// Opens the datapath (pinned in DIR, default /sys/fs/bpf/xdplane), installs
// the configured services, attaches to every listed interface and stays in
// the foreground. List every interface that frontend traffic may arrive on
// and every interface that replies from backends arrive on: on a node
// between clients and backends, that is both sides. --hook tc (the
// default) suits any interface, veths included; --hook xdp suits a
// physical NIC's receive path, and is the one that applies a prefilter.
//
// --max-config-bytes (a number of bytes, or with KiB, MiB or GiB) sets the
// largest configuration file read, and with it the limit on aliases (see
// Configuration).
//
// The --conntrack flags size the load balancer's conntrack (two entries a
// flow; fixed when the maps are first made) and set its idle timeouts
// (datapath.ConntrackTimeouts: 24h, 60s, 10s, 30s and 120s by default).
// Every --conntrack-gc-interval (30s) run removes expired and stale
// entries (lb.CollectConntrack), and logs a warning when the kernel had
// to evict live flows for want of room.
//
// SIGHUP re-reads the file and applies only the difference, logging, in
// one line, how many services were added, changed and removed, the first
// ten of each by name and frontend, and the prefilter's changes as
// counts; connections to backends that stay keep their backend. On start
// and on every SIGHUP the prefilter is written before the services, so
// that a source the file denies never reaches a service it adds; when the
// services cannot be installed, the prefilter is put back. A file that
// does not parse or validate on SIGHUP is logged and changes nothing.
// While a reload reads and checks the file, a SIGHUP starts it over on
// the file as it is then, and SIGINT or SIGTERM abandons it, changing
// nothing, and ends the process; signals that come while the datapath is
// written wait until it is done. SIGINT or SIGTERM ends the process with
// status 0 and leaves the load balancer running in the kernel, conntrack
// and prefilter included: a new run (of the same or a newer binary)
// adopts it, replacing the programs in place, and established connections
// carry on through the restart.
//
// With --hook xdp, run logs each packet the datapath drops (the
// prefilter's: reason, interface, protocol, source, destination, bytes),
// up to 10 a second, and then how many more it left out. It is the
// datapath's one reader of drop events: while no run reads them, they
// wait in a ring buffer, and once it is full the newest are lost
// (counted in status).
//
//	xdplane-lb status [--bpffs DIR] [--config FILE [--max-config-bytes N]]
//
// Prints the attachments; xdplane programs of another datapath attached
// to this namespace's interfaces (on another bpffs, or one whose bpffs
// was unmounted while other mount namespaces kept it), in a table of
// their own, under NOT THIS DATAPATH'S; the services, one row per frontend, with their
// algorithm (maglev with its table size), session affinity, traffic
// policy and source ranges; their backends with weight, state, locality
// and per-backend packet counters; the prefilter's size and first
// prefixes; and the datapath's global counters, the prefilter's drops and
// the lost drop events included, and conntrack's fill with its counts of
// entries made, reopened, expired, stale and evicted, read from the
// pinned maps: it works
// whether or not run is running. Services are known by frontend; --config adds the name and type (the
// Kubernetes service type, or - for a plain service) a configuration
// gives each, and the policy and source ranges, which the datapath's
// status does not report: without it, those show as ?.
//
//	xdplane-lb cleanup [--bpffs DIR] [--force]
//
// Detaches from every interface and removes the pinned maps. While run
// runs on the same --bpffs, cleanup changes nothing and fails, naming
// run's pid: stop run first (SIGTERM). --force removes the datapath all
// the same; run notices within 5 s, or at its next SIGHUP, logs an error
// and exits with status 1, rather than apply configurations to maps that
// nothing reads.
//
// run detaches xdplane programs of another datapath from the interfaces
// it is given, and logs each (see status); run checks every 5 s that its
// pins are still in place and that its interfaces still run its
// programs, and exits with status 1 if not (another run taking the
// interfaces over, say).
//
// # Network namespaces
//
// Run every command in the network namespace of the interfaces: attaching
// and listing attachments work on interfaces by index in the caller's
// namespace. `ip netns exec` remounts /sys and so hides /sys/fs/bpf; under
// it, mount a bpffs elsewhere first (mount -t bpf -o mode=0700 bpf DIR, so
// that only root may write in it) and pass --bpffs DIR/xdplane. run
// refuses a --bpffs directory that is not on a bpffs when it finds itself
// in a mount namespace of its own: a bpffs it mounted there would vanish
// when it exits, and the load balancer with it. Every command refuses a
// --bpffs directory another user owns or could write.
package main
