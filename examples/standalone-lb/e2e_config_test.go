package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
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
	p.waitLog("xdplanetest: stalled")
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
	p.waitLog("xdplanetest: stalled")
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

// An error of capacity, found when the services are installed, names the
// service and its line, at start and on a reload, and changes nothing.
func TestRunCapacityNamesService(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildBinary(t)
	g := testutil.NewGroup(t)
	ns := g.NS("node")
	testutil.Veth(t, ns, "eth0", g.NS("peer"), "eth0")
	dir := testutil.BPFFS(t)
	// A datapath pinned with room for 2 services and 3 backends: run
	// adopts its size.
	if err := ns.Do(func() error {
		dp, err := datapath.Open(datapath.Options{Dir: dir, Limits: datapath.Limits{MaxServices: 2, MaxBackends: 3}})
		if err != nil {
			return err
		}
		return dp.Close()
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	cfg := filepath.Join(t.TempDir(), "lb.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const two = `services:
  - name: a
    frontend: 10.96.0.1:80
    backends: [{address: 10.0.1.1:80}]
  - name: b
    frontend: 10.96.0.2:80
    backends:
      - address: 10.0.1.2:80
`
	tooMany := map[string]string{
		"services": two + "  - name: c\n    frontend: 10.96.0.3:80\n",
		"backends": two + "      - address: 10.0.1.3:80\n      - address: 10.0.1.4:80\n",
	}
	want := map[string]string{
		"services": cfg + `:10: services[2] "c": frontend "10.96.0.3:80": the datapath holds at most 2 services`,
		"backends": cfg + `:8: services[1] "b": backends: 3 of them for 10.96.0.2:80/tcp: the datapath holds at most 3 backends in all`,
	}
	for _, what := range []string{"services", "backends"} {
		write(tooMany[what])
		out, err := ns.Command(bin, "run", "--config", cfg, "--interface", "eth0", "--bpffs", dir).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitError {
			t.Fatalf("run with too many %s: %v, want exit status %d\n%s", what, err, exitError, out)
		}
		if !strings.Contains(string(out), want[what]) {
			t.Errorf("run with too many %s: output %q does not contain %q", what, out, want[what])
		}
	}

	write(two)
	p := startProc(t, ns.Command(bin, "run", "--config", cfg, "--interface", "eth0", "--bpffs", dir))
	p.waitLog("msg=running")
	for _, what := range []string{"services", "backends"} {
		write(tooMany[what])
		p.signal(syscall.SIGHUP)
		line := p.waitLog(`msg="config rejected`)
		if w := strings.ReplaceAll(want[what], `"`, `\"`); !strings.Contains(line, w) {
			t.Errorf("reload with too many %s: log %q does not contain %q", what, line, w)
		}
	}
	p.stop(syscall.SIGTERM)
	out, err := ns.Command(bin, "status", "--bpffs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, s := range []string{"10.96.0.1:80/tcp", "10.96.0.2:80/tcp", "10.0.1.1:80", "10.0.1.2:80"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("status after refused reloads does not show %s:\n%s", s, out)
		}
	}
	for _, s := range []string{"10.96.0.3:80", "10.0.1.3:80"} {
		if strings.Contains(string(out), s) {
			t.Errorf("status after refused reloads shows %s:\n%s", s, out)
		}
	}
}
