package lb

import (
	"fmt"
	"net/netip"
	"time"
)

// maxSlotsPerService is the most slots one service can have: the
// datapath stores the count in 16 bits.
const maxSlotsPerService = 65535

// Validate checks s on its own, without looking at the datapath. Upsert and
// Sync call it; callers that build services from user input may call it
// early to report errors.
func (s Service) Validate() error {
	f := s.Frontend
	if err := validAddr(f, "frontend.address", f.Address.Addr()); err != nil {
		return err
	}
	if f.Address.Addr().IsLoopback() {
		// Packets to a loopback address never cross an interface the
		// datapath is attached to.
		return invalid(f, "frontend.address", f.Address.Addr(), "loopback address: the datapath never sees packets to it")
	}
	if f.Address.Port() == 0 {
		return invalid(f, "frontend.port", 0, "port 0 is not allowed")
	}
	if !f.Protocol.IsValid() {
		return invalid(f, "frontend.protocol", f.Protocol, "want "+protocols.Want())
	}
	seen := make(map[netip.AddrPort]int, len(s.Backends))
	slots := 0
	for i, b := range s.Backends {
		field := fmt.Sprintf("backends[%d]", i)
		if err := validAddr(f, field+".address", b.Address.Addr()); err != nil {
			return err
		}
		if b.Address.Addr().Is4() != f.Address.Addr().Is4() {
			return invalid(f, field+".address", b.Address, "not of the frontend's address family")
		}
		if b.Address.Port() == 0 {
			return invalid(f, field+".address", b.Address, "port 0 is not allowed")
		}
		if b.Address == f.Address {
			return invalid(f, field+".address", b.Address, "the frontend itself: its flows would loop")
		}
		if !b.State.IsValid() {
			return invalid(f, field+".state", b.State, "want "+backendStates.Want())
		}
		if b.Weight > MaxWeight {
			return invalid(f, field+".weight", b.Weight, fmt.Sprintf("weight above %d", MaxWeight))
		}
		if j, dup := seen[b.Address]; dup {
			return invalid(f, field+".address", b.Address, fmt.Sprintf("duplicate of backends[%d]", j))
		}
		seen[b.Address] = i
		slots += int(b.weight())
	}
	switch {
	case s.SessionAffinity < 0 || s.SessionAffinity > MaxSessionAffinity:
		return invalid(f, "sessionAffinity", s.SessionAffinity, fmt.Sprintf("want 0 (none) to %s", MaxSessionAffinity))
	case s.SessionAffinity%time.Second != 0:
		return invalid(f, "sessionAffinity", s.SessionAffinity, "want whole seconds")
	case !s.TrafficPolicy.IsValid():
		return invalid(f, "trafficPolicy", s.TrafficPolicy, "want "+trafficPolicies.Want())
	case !s.Algorithm.IsValid():
		return invalid(f, "algorithm", s.Algorithm, "want "+algorithms.Want())
	case s.MaglevTableSize != 0 && s.Algorithm != Maglev:
		return invalid(f, "maglevTableSize", s.MaglevTableSize, "only the maglev algorithm has a table")
	case s.MaglevTableSize != 0:
		if why := validMaglevTableSize(s.MaglevTableSize); why != "" {
			return invalid(f, "maglevTableSize", s.MaglevTableSize, why)
		}
	}
	for i, p := range s.SourceRanges {
		field := fmt.Sprintf("sourceRanges[%d]", i)
		switch {
		case !p.IsValid():
			return invalid(f, field, p, "not a prefix")
		case p.Addr().Zone() != "":
			return invalid(f, field, p, "prefixes with a zone are not supported")
		case p.Addr().Is4In6():
			return invalid(f, field, p, "write IPv4 prefixes in their IPv4 form")
		case p.Addr().Is4() != f.Address.Addr().Is4():
			// An IPv6 prefix such as ::/0 would cover IPv4 clients in
			// their v4-mapped form.
			return invalid(f, field, p, "not of the frontend's address family")
		}
	}
	if slots > maxSlotsPerService {
		return overCapacity(f, "backends", len(s.Backends),
			fmt.Sprintf("weights add up to %d, above the per-service limit of %d", slots, maxSlotsPerService))
	}
	return nil
}

func validAddr(f Frontend, field string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return invalid(f, field, "(none)", "address missing")
	case a.Zone() != "":
		return invalid(f, field, a, "addresses with a zone are not supported")
	case a.Is4In6():
		return invalid(f, field, a, "write IPv4 addresses in their IPv4 form")
	case a.IsUnspecified():
		return invalid(f, field, a, "unspecified address")
	case a.IsMulticast():
		return invalid(f, field, a, "multicast address")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return invalid(f, field, a, "broadcast address")
	}
	return nil
}
