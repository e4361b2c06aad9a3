package apitest

import (
	"os/exec"
	"regexp"
	"testing"
)

// internalName matches a qualified identifier of one of the module's
// internal packages, as go doc prints it.
var internalName = regexp.MustCompile(`\b(bpf|kernel|enum|verr|endpoint|testutil|packets|benchrand|idalloc)\.[A-Z]\w*`)

// No exported identifier of a public package names an internal type:
// map layouts are xdplane's own and change between versions, and an
// importer could not use them anyway.
func TestPublicAPINamesNoInternals(t *testing.T) {
	for _, pkg := range []string{"datapath", "lb", "policy", "bandwidth", "prefilter"} {
		out, err := exec.Command("go", "doc", "-all", "github.com/xdplane/xdplane/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go doc %s: %v\n%s", pkg, err, out)
		}
		if m := internalName.FindAll(out, -1); len(m) > 0 {
			t.Errorf("go doc %s names internals: %q", pkg, m)
		}
	}
}
