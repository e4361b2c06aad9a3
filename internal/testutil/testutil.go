package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips t unless the process is root; under CI=true it fails
// instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN), and CI=true forbids skipping it")
	}
	t.Skip("skipped: needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN); run the tests as root")
}

// BPFFS mounts a fresh bpffs on a temporary directory and returns a
// directory inside it for a datapath's pins. The mount goes when t ends.
func BPFFS(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	mnt, err := os.MkdirTemp("", "xdplane-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(mnt)
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs %s: %v", mnt, err)
		}
		os.Remove(mnt)
	})
	return mnt + "/xdplane"
}

// uniquePrefix returns a short random prefix, so that tests running at the
// same time, or leftovers of a killed run, never collide.
func uniquePrefix() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "xt" + hex.EncodeToString(b[:])
}
