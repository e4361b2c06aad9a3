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
