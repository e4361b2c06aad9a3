// Package prefilter keeps xdplane's node-wide deny list: source prefixes,
// IPv4 and IPv6, whose packets XDP drops on every interface where the
// datapath is attached at XDP (datapath.HookXDP), before load balancing
// and before anything else reads them. It is the tool for a DDoS source:
// a million prefixes and more (datapath.Limits.MaxPrefilterPrefixes), and
// per packet one trie lookup of the source address, whatever the list's
// size.
//
// Set replaces the whole list in one call, new prefixes before old ones
// go, so a prefix on both lists is never let through; List reads it back.
// The list lives in the datapath's maps, not in a Go value: it survives
// the process, and concurrent Set calls, in this process or others, take
// turns. IPv6 neighbour discovery from a listed source still passes: it
// stays on the link, and a listed neighbour may solicit for its
// link-mates.
//
// Drops are counted under datapath.DropPrefilter (Datapath.DropCounters)
// and reported as drop events (Datapath.Events) with Endpoint 0 and the
// interface the packet arrived on.
package prefilter
