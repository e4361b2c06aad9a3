package datapath

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

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

// Attach reports a feature cilium/ebpf finds missing (XDP links, TCX)
// through missingFeature: only an error that says "not supported" becomes
// ErrNotSupported, naming the feature once.
func TestMissingFeatureWrapsOnlyNotSupported(t *testing.T) {
	ours := missingFeature(ebpf.ErrNotSupported, featureTCX)
	for name, tc := range map[string]struct {
		err   error
		names string // the feature the result must name; "" for err unchanged
	}{
		"nil":                 {nil, ""},
		"not supported":       {fmt.Errorf("create link: %w", ebpf.ErrNotSupported), "XDP links (Linux 5.9)"},
		"EOPNOTSUPP":          {fmt.Errorf("create link: %w", unix.EOPNOTSUPP), ""},
		"EINVAL":              {fmt.Errorf("create link: %w", unix.EINVAL), ""},
		"ours, wrapped again": {fmt.Errorf("attach: %w", ours), "TCX (Linux 6.6)"},
	} {
		got := missingFeature(tc.err, featureXDPLink)
		if tc.names == "" {
			if got != tc.err {
				t.Errorf("%s: missingFeature(%v) = %v, want the error unchanged", name, tc.err, got)
			}
			continue
		}
		if !errors.Is(got, ErrNotSupported) || !errors.Is(got, ebpf.ErrNotSupported) {
			t.Errorf("%s: missingFeature(%v) = %v, want it to wrap ErrNotSupported and the cause", name, tc.err, got)
		}
		if n := strings.Count(got.Error(), ErrNotSupported.Error()); n != 1 || !strings.Contains(got.Error(), tc.names) {
			t.Errorf("%s: %q, want it to say %q once and name %s", name, got, ErrNotSupported, tc.names)
		}
	}
}

func TestRequiredFeaturesPresent(t *testing.T) {
	testutil.RequireRoot(t)
	if err := checkFeatures(required); err != nil {
		t.Fatalf("this kernel lacks a required feature: %v", err)
	}
}
