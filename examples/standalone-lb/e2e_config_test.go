package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/xdplane/xdplane/datapath"
)

// buildTestBinary builds xdplane-lb with the tag xdplanetest, whose
// testhook.go stalls the reading of a file that contains stallMarker.
func buildTestBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xdplane-lb")
	out, err := exec.Command("go", "build", "-tags", "xdplanetest", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// A reload refused for its file (a FIFO, a device, aliases past the
// limit) changes nothing and blocks nothing; a reload still reading when
// SIGHUP comes starts over; SIGTERM during a reload ends the process at
// once, the datapath as it was.
func TestRunReloadBounded(t *testing.T) {
	e := newLBEnv(t, datapath.HookTC)
	e.bin = buildTestBinary(t)
	e.writeConfig(0, 1, 2)
	p := e.run(datapath.HookTC)
	e.reach(0, 1, 2)

	replace := func(make func(path string) error) {
		t.Helper()
		if err := os.Remove(e.cfgPath); err != nil {
			t.Fatal(err)
		}
		if err := make(e.cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []struct {
		name string
		put  func()
		want string
	}{
		{"a FIFO", func() { replace(func(p string) error { return syscall.Mkfifo(p, 0o600) }) },
			e.cfgPath + ": not a regular file but a FIFO"},
		{"/dev/zero", func() { replace(func(p string) error { return os.Symlink("/dev/zero", p) }) },
			e.cfgPath + ": not a regular file but a character device"},
		{"aliases", func() { replace(func(string) error { return nil }); e.writeRaw(aliasBomb(2000, 800)) },
			e.cfgPath + ":702: yaml: more than 4194304 nodes"},
	} {
		bad.put()
		p.signal(syscall.SIGHUP)
		line := p.waitLog(`msg="config rejected`)
		if !strings.Contains(line, bad.want) {
			t.Errorf("%s: rejection log %q does not contain %q", bad.name, line, bad.want)
		}
	}
	os.Remove(e.cfgPath)
	e.reach(0, 1, 2)
	e.checkStatus([]int{0, 1, 2})

	// A SIGHUP while a reload is stuck reading starts it over, on the
	// file as it is now.
	e.writeRaw(stalled(e, 0))
	p.signal(syscall.SIGHUP)
	p.waitLog("msg=reloading")
	e.writeConfig(0, 1)
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="SIGHUP during a reload: reading the file again"`)
	p.waitLog(`msg="config applied"`)
	e.reach(0, 1)

	// SIGTERM while a reload is stuck: the process ends, status 0, and
	// the datapath keeps the services it had.
	applied := strings.Count(p.log(), `msg="config applied"`)
	e.writeRaw(stalled(e, 0))
	p.signal(syscall.SIGHUP)
	p.waitLog("msg=reloading")
	p.stop(syscall.SIGTERM)
	if !p.logged(`msg="stopping during a reload, which changed nothing;`, "signal=terminated") {
		t.Errorf("the log does not say the reload was abandoned:\n%s", p.log())
	}
	if n := strings.Count(p.log(), `msg="config applied"`); n != applied {
		t.Errorf("the abandoned reload was applied:\n%s", p.log())
	}
	e.reach(0, 1)
	e.checkStatus([]int{0, 1})
}

// stallMarker is testhook.go's: a test binary's reload of a file that
// contains it waits until abandoned.
const stallMarker = "# xdplanetest: stall"

// stalled is the configuration of backends with the marker that makes a
// test binary's reload wait until abandoned.
func stalled(e *lbEnv, backends ...int) string {
	e.writeConfig(backends...)
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	return stallMarker + "\n" + string(b)
}
