package lb

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
)

// ReadStatus reports every setting of each service as the Manager
// installed it, the virtual IP flag among them.
func TestReadStatusSettings(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	vip := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	vip.VirtualIP = true
	vip.SessionAffinity = time.Hour
	vip.TrafficPolicy = Local
	vip.Backends[0].Local = true
	plain := svc("192.168.1.5:30080/udp", "10.0.1.2:8080")
	plain.Algorithm = Maglev
	plain.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if _, err := m.Sync([]Service{vip, plain}); err != nil {
		t.Fatal(err)
	}
	ro, err := datapath.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	st, err := ReadStatus(ro)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("ReadStatus = %+v, want 2 services", st)
	}
	for i, s := range []Service{vip.normalized(), plain.normalized()} {
		got := st[i]
		want := ServiceStatus{
			Frontend: s.Frontend, ID: got.ID, Algorithm: s.Algorithm, MaglevTableSize: s.MaglevTableSize,
			SessionAffinity: s.SessionAffinity, TrafficPolicy: s.TrafficPolicy, VirtualIP: s.VirtualIP,
			SourceRanges: s.SourceRanges,
		}
		for _, b := range s.Backends {
			want.Backends = append(want.Backends, BackendStatus{Backend: b})
		}
		for j := range got.Backends {
			if j < len(want.Backends) {
				want.Backends[j].ID = got.Backends[j].ID
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ReadStatus()[%d] =\n%+v\nwant\n%+v", i, got, want)
		}
	}
}
