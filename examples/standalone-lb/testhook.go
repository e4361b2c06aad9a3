//go:build xdplanetest

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
)

// A binary built with the tag xdplanetest waits, after reading a
// configuration file that contains the line below, until the load is
// abandoned: a reload as slow as a test needs, whatever the machine's
// speed. e2e_config_test.go builds such a binary to signal it during a
// reload (its stallMarker is this line), once it has said so on stderr.
func init() {
	parseHook = func(ctx context.Context, data []byte) {
		if bytes.Contains(data, []byte("# xdplanetest: stall")) {
			// Read: the test may change the file now.
			fmt.Fprintln(os.Stderr, "xdplanetest: stalled")
			<-ctx.Done()
		}
	}
}
