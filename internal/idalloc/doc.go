// Package idalloc hands out small nonzero ids, as the datapath's maps key
// services, backends, endpoints and rule sets by them.
//
// An Alloc lives as long as the manager (lb.Manager, policy.Manager) that
// owns the ids; a restarted manager rebuilds it from the ids it finds in
// the pinned maps (Take). Ids are handed out in a cycle through the range,
// so that a released id is not reused soon: state the kernel keeps under
// it (conntrack entries, counters) has time to expire first. An Alloc is
// not safe for concurrent use; Clone lets a caller roll back.
package idalloc
