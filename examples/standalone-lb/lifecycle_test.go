package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
)

// waitExit waits for the process to end on its own and returns its exit
// code.
func (p *lbProc) waitExit() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("xdplane-lb still running after 15s")
	}
	return p.cmd.ProcessState.ExitCode()
}

// cleanup while run runs is refused, naming run's pid, and changes
// nothing: connections new and old keep flowing. Forced, it removes the
// datapath, and run notices and exits rather than apply configurations
// to maps nothing reads.
func TestCleanupWhileRunning(t *testing.T) {
	e := newLBEnv(t, datapath.HookTC)
	e.writeConfig(0, 1, 2)
	p := e.run(datapath.HookTC)
	e.reach(0, 1, 2)
	conns := []*testutil.Conn{e.dialNot(webVIP, 2), e.dialNot(web6VIP, 2)}

	out, code := e.cli("cleanup", "--bpffs", e.dir)
	if code != exitError {
		t.Fatalf("cleanup while run runs exited %d, want %d:\n%s", code, exitError, out)
	}
	for _, want := range []string{
		"datapath has another writer",
		fmt.Sprintf("locked by pid %d (xdplane-lb)", p.cmd.Process.Pid),
		"stop xdplane-lb run first",
		"--force",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup's refusal does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(e.dir + "/services"); err != nil {
		t.Errorf("a refused cleanup removed pins: %v", err)
	}
	for _, ifname := range e.tp.NodeInterfaces {
		if n := e.tcxPrograms(ifname); n != 2 {
			t.Errorf("after a refused cleanup %s has %d TCX programs, want 2", ifname, n)
		}
	}
	e.reach(0, 1, 2)
	echo(t, conns, "after a refused cleanup")
	e.writeConfig(0, 1)
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config applied"`)
	e.reach(0, 1)

	out, code = e.cli("cleanup", "--force", "--bpffs", e.dir)
	if code != exitOK {
		t.Fatalf("cleanup --force exited %d:\n%s", code, out)
	}
	e.checkGone()
	// The next reload (or run's own periodic check, whichever comes
	// first) finds the pins gone.
	e.writeConfig(0)
	p.signal(syscall.SIGHUP)
	p.waitLog(`level=ERROR`, `removed under this process`)
	if code := p.waitExit(); code != exitError {
		t.Errorf("run exited %d after its datapath was removed, want %d", code, exitError)
	}
	if n := strings.Count(p.log(), `msg="config applied"`); n != 2 {
		t.Errorf("run logged %d config applied, want 2 (start, and the reload before cleanup):\n%s", n, p.log())
	}
}

// A run on a second bpffs, as after the first's bpffs was unmounted under
// it (other mount namespaces keeping its pins, and its programs,
// alive): the new run says it detaches the first's programs, new
// connections follow its configuration only, the first run (still
// running) notices and exits, and status of either
// datapath shows the other's programs apart from its own.
func TestRunTakesOverAnotherDatapath(t *testing.T) {
	e := newLBEnv(t, datapath.HookTC)
	e.writeConfig(0, 1)
	first := e.run(datapath.HookTC)
	e.reach(0, 1)

	// The second datapath, on a bpffs of its own, sends every service to
	// backend 2.
	dir2 := testutil.BPFFS(t)
	t.Cleanup(func() { e.tp.Node.Do(func() error { return datapath.Remove(dir2) }) })
	cfg2 := e.cfgPath + ".second"
	e.writeConfig(2)
	if err := os.Rename(e.cfgPath, cfg2); err != nil {
		t.Fatal(err)
	}
	args := []string{e.bin, "run", "--config", cfg2, "--bpffs", dir2}
	for _, ifname := range e.tp.NodeInterfaces {
		args = append(args, "--interface", ifname)
	}
	second := startProc(t, e.tp.Node.Command(args...))
	second.waitLog(`msg=running`)
	for _, ifname := range e.tp.NodeInterfaces {
		for _, point := range []string{"tc-ingress", "tc-egress"} {
			if !second.logged("detaching an xdplane program of another datapath", "interface="+ifname+" ", "point="+point) {
				t.Errorf("the second run did not log detaching the first's %s program on %s:\n%s", point, ifname, second.log())
			}
		}
		if n := e.tcxPrograms(ifname); n != 2 {
			t.Errorf("%s has %d TCX programs, want the second datapath's 2", ifname, n)
		}
	}
	e.reach(2)
	e.notReached(0, 10)
	e.notReached(1, 10)
	// The first run, still running, notices that its interfaces are
	// another's and exits rather than apply configurations that reach
	// nothing.
	first.waitLog(`level=ERROR`, `no longer runs this datapath's programs`)
	if code := first.waitExit(); code != exitError {
		t.Errorf("the first run exited %d once taken over, want %d", code, exitError)
	}

	out, code := e.cli("status", "--bpffs", e.dir)
	if code != exitOK || !strings.Contains(out, "Attached to no interface.") ||
		!strings.Contains(out, fmt.Sprintf("NOT THIS DATAPATH'S: %d xdplane programs of another datapath", 2*len(e.tp.NodeInterfaces))) {
		t.Errorf("status of the first datapath (exit %d) does not show it detached, and the second's programs as another's:\n%s", code, out)
	}
	out, code = e.cli("status", "--bpffs", dir2)
	if code != exitOK || strings.Contains(out, "NOT THIS DATAPATH'S") || !strings.Contains(out, "tc-ingress") {
		t.Errorf("status of the second datapath (exit %d) does not show it alone and attached:\n%s", code, out)
	}
	second.stop(syscall.SIGTERM)
}
