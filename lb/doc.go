// Package lb installs load-balanced services into an xdplane datapath.
//
// A Service is a Frontend (address, port, protocol) and the Backends its
// flows are spread over. Manager writes services into the datapath's maps:
// Upsert and Delete one at a time, or Sync the whole desired set, which
// reports what it added, changed and removed. All input is validated
// before any map is touched; errors are *ValidationError values naming the
// field, wrapping ErrInvalid or ErrCapacity.
//
// # What the datapath does with a service
//
// The first packet of a flow to a frontend picks a backend, at random
// weighted by Backend.Weight or by Maglev consistent hashing
// (Service.Algorithm), among the backends that take new flows (their
// State, and Local under a Local TrafficPolicy), after the client passes
// the service's SourceRanges and unless SessionAffinity sends it to its
// previous backend. With no backend to pick, the flow is rejected with an
// ICMP port unreachable (dropped instead, as kube-proxy does, under a
// Local policy when only other nodes have backends); a flow to another
// port of a VirtualIP frontend's address is rejected too. The choice is
// kept in an LRU conntrack map: later packets of the flow go to the same
// backend for as long as that backend stays in the service, however the
// rest of the backend set changes, and as long as conntrack has room
// (datapath.Limits): an entry the LRU evicts is balanced afresh. Replies
// are translated back so the client sees the frontend's address and port.
// A flow whose backend is removed is balanced afresh on its next packet.
//
// Conntrack entries follow their flow's TCP state and expire when idle
// (datapath.ConntrackTimeouts): a new connection over a closed or expired
// entry of the same 5-tuple (a client whose ports wrap) is balanced afresh,
// while any other packet keeps its backend. CollectConntrack removes
// expired and stale entries; ReadConntrackStats reports the map's fill,
// the entries made, reopened, expired and evicted.
//
// KubeService expands a Kubernetes Service into one Service per frontend;
// Simulate tells which backend a flow would reach, through a copy of the
// datapath's XDP program that changes none of its maps. ReadStatus reads
// the services and their counters back, without a Manager.
//
// # Consistency
//
// Packets never see a half-written service: backends and slots are written
// before the service entry that publishes them, and a shrinking service
// lowers its count before the entries beyond it are deleted. A Maglev
// table of unchanged size is rewritten in place, only the entries that
// differ (none if none does): a packet meanwhile meets an entry either old
// or new, each naming one of the service's backends (removed backends go
// only after the switch), so a new flow goes where the old or the new
// table sends it. New tables go in together, in batches, because the
// kernel waits for a grace period after each write to a map of maps; they
// are built on GOMAXPROCS goroutines while the previous batch goes in;
// each table's file descriptor is closed as soon as the table is in, and a
// process out of descriptors gets an error wrapping EMFILE that names
// RLIMIT_NOFILE. A call that
// fails part-way is rolled back. Manager recovers its state from the maps
// when created, so a restarted process continues where the last one
// stopped, and holds the datapath's "lb" lock until Close, so that one
// Manager at a time, in this process or another, writes the services (a
// second one gets ErrBusy).
package lb
