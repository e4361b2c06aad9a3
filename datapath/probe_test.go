package datapath

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/internal/testutil"
)

func TestCheckFeaturesNamesTheMissingOne(t *testing.T) {
	missing := ebpf.ErrNotSupported
	err := checkFeatures([]feature{
		{"present", func() error { return nil }},
		{"LRU hash maps", func() error { return missing }},
		{"never reached", func() error { t.Fatal("probed past the first missing feature"); return nil }},
	})
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("got %v, want it to wrap ErrNotSupported and the probe's error", err)
	}
	if !strings.Contains(err.Error(), "LRU hash maps") {
		t.Fatalf("%q does not name the feature", err)
	}
}

func TestRequiredFeaturesPresent(t *testing.T) {
	testutil.RequireRoot(t)
	if err := checkFeatures(required); err != nil {
		t.Fatalf("this kernel lacks a required feature: %v", err)
	}
}
