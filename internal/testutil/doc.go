// Package testutil gives tests their own network namespaces, veth pairs,
// bpffs mounts and traffic endpoints, all removed when the test ends.
//
// Every helper that needs privileges calls RequireRoot first: without root
// the test is skipped with a message, except under CI=true, where it fails,
// because CI must exercise the kernel.
//
// Namespaces a test makes share a random prefix (Group), so tests running
// at the same time, and leftovers of a killed run, never collide; each is
// deleted, and each bpffs (BPFFS) unmounted, by t.Cleanup. LBTopology
// builds the client, node and backends most behavioural tests use;
// ServeTCP, ServeUDP and the Ask and Dial helpers send real traffic
// between them.
package testutil
