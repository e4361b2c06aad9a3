package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// ServiceStatus is a service as the datapath holds it, with counters.
type ServiceStatus struct {
	Frontend        Frontend
	ID              uint32
	Algorithm       Algorithm
	MaglevTableSize uint32 // for Maglev
	SessionAffinity time.Duration
	TrafficPolicy   TrafficPolicy
	VirtualIP       bool
	SourceRanges    []netip.Prefix
	Backends        []BackendStatus
}

// BackendStatus is one backend with the packets and bytes the datapath
// has sent it (client to backend direction) since it was installed.
type BackendStatus struct {
	Backend
	ID      uint32
	Packets uint64
	Bytes   uint64
}

// ReadStatus reads every service, its backends and their counters from
// dp's maps. It only reads, so it suits a Datapath from
// datapath.OpenPinned, while another process manages the services.
func ReadStatus(dp *datapath.Datapath) ([]ServiceStatus, error) {
	maps := kernel.Of(dp).Maps
	services, _, err := loadState(maps)
	if err != nil {
		return nil, err
	}
	out := make([]ServiceStatus, 0, len(services))
	for _, e := range services {
		st := ServiceStatus{Frontend: e.svc.Frontend, ID: e.id, Algorithm: e.svc.Algorithm, MaglevTableSize: e.svc.MaglevTableSize,
			SessionAffinity: e.svc.SessionAffinity, TrafficPolicy: e.svc.TrafficPolicy, VirtualIP: e.svc.VirtualIP,
			SourceRanges: e.svc.SourceRanges}
		for _, b := range e.svc.Backends {
			id := e.backendIDs[b.Address]
			var per []bpf.XdplaneCounter
			if err := maps.BackendStats.Lookup(id, &per); err != nil {
				return nil, fmt.Errorf("read counters of backend %d: %w", id, err)
			}
			bs := BackendStatus{Backend: b, ID: id}
			for _, c := range per {
				bs.Packets += c.Packets
				bs.Bytes += c.Bytes
			}
			st.Backends = append(st.Backends, bs)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ServiceStatus) int { return compareFrontends(a.Frontend, b.Frontend) })
	return out, nil
}
