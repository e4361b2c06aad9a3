//go:build xdplanetest

package main

import (
	"bytes"
	"context"
)

// A binary built with the tag xdplanetest waits, after reading a
// configuration file that contains the line below, until the load is
// abandoned: a reload as slow as a test needs, whatever the machine's
// speed. e2e_config_test.go builds such a binary to signal it during a
// reload (its stallMarker is this line).
func init() {
	parseHook = func(ctx context.Context, data []byte) {
		if bytes.Contains(data, []byte("# xdplanetest: stall")) {
			<-ctx.Done()
		}
	}
}
