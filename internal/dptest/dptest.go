// Package dptest opens datapaths for tests, each on a bpffs of its own
// that goes with the test.
package dptest

import (
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
)

// Open opens a datapath with opts on a fresh bpffs (opts.Dir is
// replaced), in ns, or in the calling thread's namespace if ns is nil.
// When the test ends it is closed and removed, attachments and all, in
// the same namespace: after what the test registered later, such as a
// Manager's Close.
func Open(tb testing.TB, ns *testutil.NS, opts datapath.Options) *datapath.Datapath {
	tb.Helper()
	opts.Dir = testutil.BPFFS(tb)
	in := func(f func() error) error { return f() }
	if ns != nil {
		in = ns.Do
	}
	var dp *datapath.Datapath
	if err := in(func() (err error) { dp, err = datapath.Open(opts); return err }); err != nil {
		tb.Fatalf("open the datapath: %v", err)
	}
	tb.Cleanup(func() {
		dp.Close()
		if err := in(func() error { return datapath.Remove(opts.Dir) }); err != nil {
			tb.Errorf("remove the datapath: %v", err)
		}
	})
	return dp
}
