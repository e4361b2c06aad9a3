// Package policy will hold typed network policy (CIDR, protocol and port
// rules per endpoint, allow and deny) and per-endpoint bandwidth limits,
// written into the datapath's maps as package lb writes services.
//
// It is empty for now: the load-balancing foundation comes first.
package policy
