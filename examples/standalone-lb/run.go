package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

func cmdRun(args []string, log *slog.Logger, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	configPath := fs.String("config", "", "the services, as YAML (required)")
	var ifaces listFlag
	fs.Var(&ifaces, "interface", "an interface to load-balance on; repeat it for each (required)")
	hookName := fs.String("hook", "tc", "where to attach: tc (any interface) or xdp (a NIC's receive path)")
	dir := fs.String("bpffs", datapath.DefaultDir, "the bpffs directory for the pinned state")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return usagef("--config is required")
	}
	if len(ifaces) == 0 {
		return usagef("at least one --interface is required")
	}
	hook, err := datapath.ParseHook(*hookName)
	if err != nil {
		return usagef("--hook %q: want tc or xdp", *hookName)
	}

	// Everything that can be checked without touching the kernel is, so
	// that a mistake leaves a running datapath as it was.
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		return err
	}
	for _, name := range ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("interface %q: %w", name, err)
		}
	}

	// From here on a signal is queued, not fatal: a SIGHUP that arrives
	// while starting is a reload once running.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	dp, err := datapath.Open(datapath.Options{Dir: *dir})
	if errors.Is(err, datapath.ErrBPFFS) {
		// Typically `ip netns exec`, which hides /sys/fs/bpf.
		return fmt.Errorf("--bpffs %s: %w", *dir, err)
	}
	if err != nil {
		return fmt.Errorf("open datapath in %s: %w", *dir, err)
	}
	defer dp.Close()
	mgr, err := lb.NewManager(dp)
	if errors.Is(err, lb.ErrBusy) {
		return fmt.Errorf("another xdplane-lb (or another program) manages the services in %s: %w", dp.Dir(), err)
	}
	if err != nil {
		return fmt.Errorf("read installed services: %w", err)
	}
	defer mgr.Close()
	if recovered := mgr.List(); len(recovered) > 0 {
		log.Info("found services installed by an earlier run", "services", len(recovered), "bpffs", dp.Dir())
	}

	// Services before attachments: an interface new to the load balancer
	// sees the whole configuration from its first packet.
	names := cfg.Names()
	res, err := mgr.Sync(cfg.LBServices())
	if err != nil {
		return fmt.Errorf("install services: %w", err)
	}
	logSync(log, res, names, nil)

	// Attach replaces the programs in place where an earlier run attached
	// them, so a restart with a new binary is also an upgrade.
	for _, name := range ifaces {
		if err := dp.Attach(name, datapath.AttachOptions{Hook: hook}); err != nil {
			return fmt.Errorf("attach to %s: %w", name, err)
		}
	}
	logAttachments(log, dp, ifaces)
	if hook == datapath.HookXDP {
		warnStrictRPFilter(log, ifaces)
	}
	log.Info("running", "services", len(cfg.Services), "interfaces", []string(ifaces), "hook", hook.String(), "bpffs", dp.Dir())

	for sig := range sigs {
		if sig != syscall.SIGHUP {
			log.Info("stopping; the datapath keeps forwarding (xdplane-lb cleanup removes it)", "signal", sig.String())
			return nil
		}
		names = reload(log, mgr, *configPath, names)
	}
	return nil
}

// reload applies the configuration file again and returns the names now
// in force. An invalid file, or one the datapath cannot hold, changes
// nothing.
func reload(log *slog.Logger, mgr *lb.Manager, path string, old map[lb.Frontend]string) map[lb.Frontend]string {
	cfg, err := LoadConfig(path)
	if err != nil {
		log.Error("config rejected; the running services stay as they were", "error", err)
		return old
	}
	res, err := mgr.Sync(cfg.LBServices())
	if err != nil {
		log.Error("config rejected; the running services stay as they were", "error", fmt.Errorf("install services: %w", err))
		return old
	}
	names := cfg.Names()
	logSync(log, res, names, old)
	return names
}

func logSync(log *slog.Logger, res lb.SyncResult, names, old map[lb.Frontend]string) {
	label := func(fs []lb.Frontend, names map[lb.Frontend]string) []string {
		out := make([]string, 0, len(fs))
		for _, f := range fs {
			if n := names[f]; n != "" {
				out = append(out, n+"="+f.String())
			} else {
				out = append(out, f.String())
			}
		}
		return out
	}
	if len(res.Added)+len(res.Changed)+len(res.Removed) == 0 {
		log.Info("config applied: no change")
		return
	}
	log.Info("config applied",
		"added", label(res.Added, names),
		"changed", label(res.Changed, names),
		"removed", label(res.Removed, old))
}

// logAttachments logs what is attached, and warns about interfaces an
// earlier run attached that this one was not told about: they keep
// load-balancing until cleanup.
func logAttachments(log *slog.Logger, dp *datapath.Datapath, ifaces []string) {
	atts, err := dp.Attachments()
	if err != nil {
		log.Warn("cannot list attachments", "error", err)
		return
	}
	for _, a := range atts {
		name := a.Interface
		if name == "" {
			name = fmt.Sprintf("ifindex %d (gone)", a.Ifindex)
		}
		if !slices.Contains(ifaces, a.Interface) {
			log.Warn("still attached from an earlier run", "interface", name, "point", a.Point)
			continue
		}
		log.Info("attached", "interface", name, "point", a.Point, "mode", a.Mode.String(), "program", uint32(a.ProgramID))
	}
}

// warnStrictRPFilter warns about interfaces with strict reverse-path
// filtering: under XDP, replies carry the frontend's address while the
// kernel routes them, and strict filtering drops them where the route to
// the frontend leaves by another interface. (tc translates replies after
// routing and needs no such care.)
func warnStrictRPFilter(log *slog.Logger, ifaces []string) {
	read := func(name string) int {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/rp_filter")
		if err != nil {
			return 0
		}
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return v
	}
	all := read("all")
	for _, name := range ifaces {
		// The kernel applies the larger of "all" and the interface's
		// value: 1 is strict, 2 loose.
		if max(all, read(name)) == 1 {
			log.Warn("strict rp_filter on an XDP interface: replies arriving here may be dropped; "+
				"set net.ipv4.conf."+name+".rp_filter=2 (and net.ipv4.conf.all.rp_filter to 0 or 2), or use --hook tc",
				"interface", name)
		}
	}
}
