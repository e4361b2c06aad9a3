package lb

import (
	"errors"
	"net/netip"
	"testing"
)

func TestValidate(t *testing.T) {
	fe := Frontend{Address: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: TCP}
	be := func(s string, w uint16) Backend { return Backend{Address: netip.MustParseAddrPort(s), Weight: w} }
	tests := []struct {
		name  string
		svc   Service
		field string
		is    error
	}{
		{"zero frontend", Service{}, "frontend.address", ErrInvalid},
		{"unspecified frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("0.0.0.0:80"), TCP}}, "frontend.address", ErrInvalid},
		{"multicast frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("224.0.0.1:80"), TCP}}, "frontend.address", ErrInvalid},
		{"broadcast frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("255.255.255.255:80"), UDP}}, "frontend.address", ErrInvalid},
		{"ipv6 frontend with a zone", Service{Frontend: Frontend{netip.MustParseAddrPort("[fe80::1%eth0]:80"), TCP}}, "frontend.address", ErrInvalid},
		{"ipv6 multicast frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("[ff02::1]:80"), TCP}}, "frontend.address", ErrInvalid},
		{"ipv6 unspecified frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("[::]:80"), TCP}}, "frontend.address", ErrInvalid},
		{"v4-mapped frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), TCP}}, "frontend.address", ErrInvalid},
		{"loopback frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("127.0.0.1:80"), TCP}}, "frontend.address", ErrInvalid},
		{"loopback frontend, not 127.0.0.1", Service{Frontend: Frontend{netip.MustParseAddrPort("127.3.2.1:80"), UDP}}, "frontend.address", ErrInvalid},
		{"ipv6 loopback frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("[::1]:80"), TCP}}, "frontend.address", ErrInvalid},
		{"backend equal to the frontend", Service{Frontend: fe, Backends: []Backend{be("10.0.1.2:8080", 1), be(fe.Address.String(), 1)}}, "backends[1].address", ErrInvalid},
		{"ipv6 backend equal to the frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("[fd00::10]:80"), TCP},
			Backends: []Backend{be("[fd00::10]:80", 1)}}, "backends[0].address", ErrInvalid},
		{"port 0", Service{Frontend: Frontend{netip.MustParseAddrPort("10.96.0.10:0"), TCP}}, "frontend.port", ErrInvalid},
		{"no protocol", Service{Frontend: Frontend{Address: fe.Address}}, "frontend.protocol", ErrInvalid},
		{"sctp", Service{Frontend: Frontend{fe.Address, 132}}, "frontend.protocol", ErrInvalid},
		{"backend zero address", Service{Frontend: fe, Backends: []Backend{{}}}, "backends[0].address", ErrInvalid},
		{"backend port 0", Service{Frontend: fe, Backends: []Backend{be("10.0.1.2:8080", 1), be("10.0.1.3:0", 1)}}, "backends[1].address", ErrInvalid},
		{"backend unspecified", Service{Frontend: fe, Backends: []Backend{be("0.0.0.0:8080", 1)}}, "backends[0].address", ErrInvalid},
		{"ipv6 backend of an ipv4 frontend", Service{Frontend: fe, Backends: []Backend{be("[fd00::2]:8080", 1)}}, "backends[0].address", ErrInvalid},
		{"ipv4 backend of an ipv6 frontend", Service{Frontend: Frontend{netip.MustParseAddrPort("[fd00::10]:80"), TCP},
			Backends: []Backend{be("[fd00::2]:8080", 1), be("10.0.1.2:8080", 1)}}, "backends[1].address", ErrInvalid},
		{"duplicate backend", Service{Frontend: fe, Backends: []Backend{be("10.0.1.2:8080", 1), be("10.0.1.2:8080", 2)}}, "backends[1].address", ErrInvalid},
		{"weight too high", Service{Frontend: fe, Backends: []Backend{be("10.0.1.2:8080", MaxWeight+1)}}, "backends[0].weight", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.svc.Validate()
			if !errors.Is(err, tt.is) {
				t.Fatalf("Validate() = %v, want an error wrapping %v", err, tt.is)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Validate() = %v, want field %q", err, tt.field)
			}
		})
	}

	ok := Service{Frontend: fe, Backends: []Backend{be("10.0.1.2:8080", 0), be("10.0.1.3:8080", MaxWeight)}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid service: %v", err)
	}
	ok6 := Service{Frontend: Frontend{netip.MustParseAddrPort("[fd00::10]:53"), UDP},
		Backends: []Backend{be("[fd00:1::2]:5353", 2), be("[2001:db8::2]:5353", 0)}}
	if err := ok6.Validate(); err != nil {
		t.Fatalf("valid IPv6 service: %v", err)
	}
	if err := (Service{Frontend: fe}).Validate(); err != nil {
		t.Fatalf("a service without backends is valid: %v", err)
	}
	// The frontend's address at another port (a host-network backend on
	// the node whose address is the frontend) is no loop; a link-local
	// frontend is on the wire like any other.
	for _, s := range []Service{
		{Frontend: fe, Backends: []Backend{be("10.96.0.10:8080", 1)}},
		{Frontend: Frontend{netip.MustParseAddrPort("169.254.20.10:53"), UDP}, Backends: []Backend{be("10.0.1.2:53", 1)}},
		{Frontend: Frontend{netip.MustParseAddrPort("[fe80::10]:53"), UDP}, Backends: []Backend{be("[fe80::2]:53", 1)}},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("valid service %s: %v", s.Frontend, err)
		}
	}
	// The errors name the value.
	for s, want := range map[*Service]string{
		{Frontend: Frontend{netip.MustParseAddrPort("127.0.0.1:80"), TCP}}: "service 127.0.0.1:80/tcp: frontend.address 127.0.0.1: loopback address: the datapath never sees packets to it",
		{Frontend: fe, Backends: []Backend{be("10.96.0.10:80", 1)}}:        "service 10.96.0.10:80/tcp: backends[0].address 10.96.0.10:80: the frontend itself: its flows would loop",
	} {
		if err := s.Validate(); err == nil || err.Error() != want {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

func TestValidateTooManySlots(t *testing.T) {
	s := Service{Frontend: Frontend{netip.MustParseAddrPort("10.96.0.10:80"), TCP}}
	for i := range 66 {
		s.Backends = append(s.Backends, Backend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 1}), 80), Weight: MaxWeight})
	}
	err := s.Validate()
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("66 backends of weight %d: got %v, want ErrCapacity", MaxWeight, err)
	}
}

func TestValidationErrorMessage(t *testing.T) {
	s := Service{Frontend: Frontend{netip.MustParseAddrPort("10.96.0.10:80"), TCP},
		Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.1.2:0")}}}
	want := "service 10.96.0.10:80/tcp: backends[0].address 10.0.1.2:0: port 0 is not allowed"
	if err := s.Validate(); err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func TestProtocolText(t *testing.T) {
	for _, p := range []Protocol{TCP, UDP} {
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var q Protocol
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Fatalf("round trip of %v: got %v, %v", p, q, err)
		}
	}
	if p, err := ParseProtocol("TCP"); err != nil || p != TCP {
		t.Fatalf("ParseProtocol(TCP) = %v, %v", p, err)
	}
	if _, err := ParseProtocol("sctp"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ParseProtocol(sctp) = %v, want ErrInvalid", err)
	}
	if _, err := Protocol(1).MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MarshalText(icmp) = %v, want ErrInvalid", err)
	}
}

func TestParseFrontend(t *testing.T) {
	f, err := ParseFrontend("10.96.0.10:53/udp")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Frontend{netip.MustParseAddrPort("10.96.0.10:53"), UDP}); f != want {
		t.Fatalf("got %v, want %v", f, want)
	}
	if g, err := ParseFrontend(f.String()); err != nil || g != f {
		t.Fatalf("round trip: %v, %v", g, err)
	}
	f6, err := ParseFrontend("[fd00::10]:80/tcp")
	if err != nil || f6.String() != "[fd00::10]:80/tcp" {
		t.Fatalf("ParseFrontend(IPv6) = %v, %v", f6, err)
	}
	for _, bad := range []string{"", "10.96.0.10:53", "10.96.0.10/udp", "10.96.0.10:53/icmp", "fd00::10:80/tcp"} {
		if _, err := ParseFrontend(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseFrontend(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestNormalizedSortsAndDefaults(t *testing.T) {
	s := Service{Backends: []Backend{
		{Address: netip.MustParseAddrPort("10.0.0.3:80")},
		{Address: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 5},
	}}
	n := s.normalized()
	if n.Backends[0].Address.Addr() != netip.MustParseAddr("10.0.0.1") || n.Backends[1].Weight != 1 {
		t.Fatalf("normalized = %+v", n.Backends)
	}
	if s.Backends[0].Weight != 0 {
		t.Fatal("normalized modified its receiver's backends")
	}
}
