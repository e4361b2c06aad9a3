// Command xdplane-lb is a standalone L4 load balancer built on xdplane: a
// small, complete program that shows how the datapath and lb packages fit
// together. It uses only their public API, as your own code would.
//
// Build it with `make build` (or `go build -o bin/xdplane-lb
// ./examples/standalone-lb`) and run it as root. `make demo` runs it across
// network namespaces with real HTTP traffic (see demo.sh).
//
// # Configuration
//
// A YAML file lists the services:
//
//	services:
//	  - name: web
//	    frontend: 10.96.0.10:80
//	    protocol: tcp          # tcp or udp; default tcp
//	    backends:
//	      - address: 10.0.1.2:8080
//	        weight: 2          # 1 to 1000; default 1
//	      - address: 10.0.2.2:8080
//	  - name: dns
//	    frontend: 10.96.0.10:53
//	    protocol: udp
//	    backends:
//	      - address: 10.0.1.2:5353
//	  - name: web6
//	    frontend: "[fd00::10]:80"
//	    backends:
//	      - address: "[fd00:1::2]:8080"
//
// Services are IPv4 or IPv6, and one load balancer serves both (dual
// stack), on the same ports if you like. Within a service the backends
// are of the frontend's family: to serve one name over both, write an
// IPv4 service and an IPv6 one. An IPv6 address goes in brackets before
// its port, and the value must be quoted: YAML reads an unquoted [ as the
// start of a list.
//
// Decoding is strict: unknown fields, repeated fields, duplicate names and
// duplicate frontends are errors, and every error names the service (by
// index and name) and the field, for example
//
//	lb.yaml:13: services[1] "dns": backends[0].address "10.0.1.2": missing port
//	lb.yaml:17: services[2] "web6": backends[0].address "10.0.1.2:8080": not of the frontend's address family (an IPv4 backend for an IPv6 frontend; write one service per family)
//
// The services key must be present; `services: []` removes every service.
//
// # Commands
//
//	xdplane-lb run --config FILE --interface IF [--interface IF ...] [--hook tc|xdp] [--bpffs DIR]
//
// Opens the datapath (pinned in DIR, default /sys/fs/bpf/xdplane), installs
// the configured services, attaches to every listed interface and stays in
// the foreground. List every interface that frontend traffic may arrive on
// and every interface that replies from backends arrive on: on a node
// between clients and backends, that is both sides. --hook tc (the
// default) suits any interface, veths included; --hook xdp suits a
// physical NIC's receive path.
//
// SIGHUP re-reads the file and applies only the difference, logging what
// was added, changed and removed; connections to backends that stay keep
// their backend. A file that does not parse or validate on SIGHUP is
// logged and changes nothing. SIGINT or SIGTERM ends the process with
// status 0 and leaves the load balancer running in the kernel, conntrack
// included: a new run (of the same or a newer binary) adopts it, replacing
// the programs in place, and established connections carry on through the
// restart.
//
//	xdplane-lb status [--bpffs DIR] [--config FILE]
//
// Prints the attachments, the services with their backends and
// per-backend packet counters, and the datapath's global counters, read
// from the pinned maps: it works whether or not run is running. Services
// are known by frontend; --config adds the names a configuration gives
// them.
//
//	xdplane-lb cleanup [--bpffs DIR]
//
// Detaches from every interface and removes the pinned maps. Stop run
// first.
//
// # Network namespaces
//
// Run every command in the network namespace of the interfaces: attaching
// and listing attachments work on interfaces by index in the caller's
// namespace. `ip netns exec` remounts /sys and so hides /sys/fs/bpf; under
// it, mount a bpffs elsewhere first (mount -t bpf bpf DIR) and pass
// --bpffs DIR/xdplane. run refuses a --bpffs directory that is not on a
// bpffs when it finds itself in a mount namespace of its own: a bpffs it
// mounted there would vanish when it exits, and the load balancer with it.
package main
