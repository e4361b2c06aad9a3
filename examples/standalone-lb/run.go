package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
	"github.com/xdplane/xdplane/prefilter"
)

func cmdRun(args []string, log *slog.Logger, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	configPath := fs.String("config", "", "the services, as YAML (required)")
	var ifaces listFlag
	fs.Var(&ifaces, "interface", "an interface to load-balance on; repeat it for each (required)")
	hookName := fs.String("hook", "tc", "where to attach: tc (any interface) or xdp (a NIC's receive path)")
	dir := fs.String("bpffs", datapath.DefaultDir, "the bpffs directory for the pinned state")
	ct := addConntrackFlags(fs)
	maxConfig := byteSize(DefaultMaxConfigBytes)
	fs.Var(&maxConfig, "max-config-bytes", "the largest configuration file read, in bytes (or KiB, MiB, GiB); "+
		"with aliases expanded, the file may have a quarter as many YAML nodes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := ct.check(); err != nil {
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
	cfg, err := LoadConfigFor(context.Background(), *configPath, hook, int64(maxConfig))
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

	dp, err := datapath.Open(datapath.Options{Dir: *dir, Conntrack: ct.timeouts,
		Limits: datapath.Limits{ConntrackSize: uint32(ct.size)}})
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

	// Services and prefilter before attachments: an interface new to the
	// load balancer sees the whole configuration from its first packet.
	names := cfg.Names()
	res, change, err := apply(dp, mgr, *configPath, cfg)
	if err != nil {
		return err
	}
	logApplied(log, res, change, len(cfg.Prefilter), names, nil)

	// Attach replaces the programs in place where an earlier run attached
	// them, so a restart with a new binary is also an upgrade.
	logForeign(log, dp, ifaces)
	for _, name := range ifaces {
		if err := dp.Attach(name, datapath.AttachOptions{Hook: hook}); err != nil {
			return fmt.Errorf("attach to %s: %w", name, err)
		}
	}
	logAttachments(log, dp, ifaces)
	if hook == datapath.HookXDP {
		warnStrictRPFilter(log, ifaces)
		// Only XDP drops what xdplane-lb configures (the prefilter's
		// sources): at tc there is nothing of ours to log.
		if events, err := dp.Events(); err != nil {
			// The drops are still counted; status shows them.
			log.Warn("cannot read drop events; drops are not logged", "error", err)
		} else {
			done := make(chan struct{})
			go func() {
				defer close(done)
				logDrops(log, events, time.Now)
			}()
			defer func() {
				events.Close()
				<-done
			}()
		}
	}
	gcCtx, stopGC := context.WithCancel(context.Background())
	gcDone := make(chan struct{})
	go func() { defer close(gcDone); lb.RunConntrackCollector(gcCtx, dp, ct.every, conntrackReporter(log)) }()
	defer func() { stopGC(); <-gcDone }()
	log.Info("running", "services", len(cfg.Services), "prefilter", len(cfg.Prefilter),
		"interfaces", []string(ifaces), "hook", hook.String(), "bpffs", dp.Dir())

	verify := time.NewTicker(verifyEvery)
	defer verify.Stop()
	for {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-verify.C:
		}
		if sig != nil && sig != syscall.SIGHUP {
			log.Info("stopping; the datapath keeps forwarding (xdplane-lb cleanup removes it)", "signal", sig.String())
			return nil
		}
		if err := dp.Verify(); err != nil {
			return orphaned(log, dp, err)
		}
		if err := stillAttached(dp, ifaces); err != nil {
			log.Error("an interface no longer runs this datapath's programs (another xdplane took it over, or they were detached); "+
				"exiting without applying anything more", "error", err)
			return err
		}
		if sig == syscall.SIGHUP {
			var stop os.Signal
			names, stop = reload(log, dp, mgr, *configPath, hook, int64(maxConfig), names, sigs)
			if stop != nil {
				log.Info("stopping during a reload, which changed nothing; the datapath keeps forwarding (xdplane-lb cleanup removes it)",
					"signal", stop.String())
				return nil
			}
		}
	}
}

// verifyEvery is how often run checks that its datapath is still pinned,
// and still attached to its interfaces.
const verifyEvery = 5 * time.Second

// stillAttached checks that each of ifaces still runs dp's programs.
func stillAttached(dp *datapath.Datapath, ifaces []string) error {
	for _, name := range ifaces {
		_, ok, err := dp.AttachedHook(name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !ok {
			return fmt.Errorf("%s: not attached to the datapath in %s any more", name, dp.Dir())
		}
	}
	return nil
}

// orphaned reports that the datapath run manages was removed under it: by
// a forced cleanup, or by unmounting its bpffs. Whatever run writes then
// reaches nothing a packet sees, and a new run would start a second
// datapath: exit, and say why.
func orphaned(log *slog.Logger, dp *datapath.Datapath, err error) error {
	log.Error("the datapath was removed under this process (xdplane-lb cleanup --force, or its bpffs unmounted); "+
		"exiting without applying anything more", "bpffs", dp.Dir(), "error", err)
	return fmt.Errorf("datapath in %s removed under xdplane-lb run: %w", dp.Dir(), err)
}

// apply makes the datapath hold cfg: the prefilter first, so that a
// source the file denies never reaches a service the file adds, then the
// services. When the services cannot be installed (lb.Manager.Sync then
// changes none), the prefilter is put back as it was, so that a refused
// configuration changes nothing. An error about one of cfg's services
// names it, and its line in the file at path.
func apply(dp *datapath.Datapath, mgr *lb.Manager, path string, cfg Config) (lb.SyncResult, prefilter.Change, error) {
	before, err := prefilter.List(dp)
	if err != nil {
		return lb.SyncResult{}, prefilter.Change{}, err
	}
	change, err := prefilter.Set(dp, cfg.Prefilter)
	if err != nil {
		return lb.SyncResult{}, prefilter.Change{}, fmt.Errorf("install prefilter: %w", err)
	}
	res, err := mgr.Sync(cfg.LBServices())
	if err != nil {
		if ce := cfg.installError(err); ce != nil {
			err = inFile(path, ce)
		} else {
			err = fmt.Errorf("install services: %w", err)
		}
		if _, rerr := prefilter.Set(dp, before); rerr != nil {
			err = errors.Join(err, fmt.Errorf("put the prefilter back: %w", rerr))
		}
		return lb.SyncResult{}, prefilter.Change{}, err
	}
	return res, change, nil
}

// reload applies the configuration file again and returns the names now
// in force. An invalid file, or one the datapath cannot hold, changes
// nothing.
//
// While it reads and checks the file it keeps reading sigs: SIGINT or
// SIGTERM abandons the reload, which has changed nothing yet, and is
// returned for the caller to stop; SIGHUP starts it again, on the file as
// it is now. Once the datapath is being written, signals wait until that
// is done (lb.Manager.Sync is all or nothing, and quick).
func reload(log *slog.Logger, dp *datapath.Datapath, mgr *lb.Manager, path string, hook datapath.Hook, maxBytes int64,
	old map[lb.Frontend]string, sigs <-chan os.Signal) (map[lb.Frontend]string, os.Signal) {
	const rejected = "config rejected; the running services and prefilter stay as they were"
	log.Info("reloading", "config", path)
	cfg, stop, err := loadInterruptibly(log, path, hook, maxBytes, sigs)
	if stop != nil {
		return old, stop
	}
	if err != nil {
		log.Error(rejected, "error", err)
		return old, nil
	}
	res, change, err := apply(dp, mgr, path, cfg)
	if err != nil {
		log.Error(rejected, "error", err)
		return old, nil
	}
	names := cfg.Names()
	logApplied(log, res, change, len(cfg.Prefilter), names, old)
	return names, nil
}

// loadInterruptibly is LoadConfigFor, in a goroutine, while sigs is read:
// SIGINT and SIGTERM end it (returned as stop: the goroutine's work is
// cancelled and its result dropped); SIGHUP starts it over.
func loadInterruptibly(log *slog.Logger, path string, hook datapath.Hook, maxBytes int64,
	sigs <-chan os.Signal) (Config, os.Signal, error) {
	type loaded struct {
		cfg Config
		err error
	}
	for {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan loaded, 1)
		go func() {
			cfg, err := LoadConfigFor(ctx, path, hook, maxBytes)
			done <- loaded{cfg, err}
		}()
		select {
		case l := <-done:
			cancel()
			return l.cfg, nil, l.err
		case sig := <-sigs:
			cancel()
			if sig != syscall.SIGHUP {
				return Config{}, sig, nil
			}
			log.Info("SIGHUP during a reload: reading the file again", "config", path)
		}
	}
}

// maxLoggedNames is how many services logApplied names for each of
// added, changed and removed; it counts them all. One line per reload
// stays short with 65,536 services; status lists every one.
const maxLoggedNames = 10

// logApplied logs what a configuration changed: how many services it
// added, changed and removed, the first few of each by name and frontend
// (in the frontends' order), and the prefilter's additions, removals and
// size.
func logApplied(log *slog.Logger, res lb.SyncResult, change prefilter.Change, prefilter int,
	names, old map[lb.Frontend]string) {
	group := func(key string, fs []lb.Frontend, names map[lb.Frontend]string) slog.Attr {
		if len(fs) == 0 {
			return slog.Group(key, "count", 0)
		}
		shown := make([]string, 0, min(len(fs), maxLoggedNames)+1)
		for _, f := range fs[:min(len(fs), maxLoggedNames)] {
			if n := names[f]; n != "" {
				shown = append(shown, n+"="+f.String())
			} else {
				shown = append(shown, f.String())
			}
		}
		if more := len(fs) - maxLoggedNames; more > 0 {
			shown = append(shown, fmt.Sprintf("(and %d more)", more))
		}
		return slog.Group(key, "count", len(fs), "names", shown)
	}
	if len(res.Added)+len(res.Changed)+len(res.Removed)+change.Added+change.Removed == 0 {
		log.Info("config applied: no change", "services", len(names))
		return
	}
	log.Info("config applied",
		"services", len(names),
		group("added", res.Added, names),
		group("changed", res.Changed, names),
		group("removed", res.Removed, old),
		slog.Group("prefilter", "added", change.Added, "removed", change.Removed, "size", prefilter))
}

// dropLogBurst is how many drops logDrops logs a second; it counts the
// others. A flood from a denied source must not flood the log too.
const dropLogBurst = 10

// dropReader is what logDrops reads: a *datapath.EventReader.
type dropReader interface {
	SetDeadline(time.Time)
	Read() (datapath.Event, error)
}

// logDrops logs the datapath's drop events until the reader is closed:
// each drop, up to dropLogBurst a second, then how many it left out. The
// events also keep the datapath's ring buffer from filling, which would
// lose the newest. clock is time.Now but in tests.
func logDrops(log *slog.Logger, events dropReader, clock func() time.Time) {
	var (
		window  time.Time // start of the current second
		logged  int
		skipped int
	)
	for {
		// Wake at least every second, to report what was left out.
		events.SetDeadline(clock().Add(time.Second))
		ev, err := events.Read()
		now := clock()
		if now.Sub(window) >= time.Second {
			if skipped > 0 {
				log.Warn("drops not logged (more than the log takes a second)", "drops", skipped)
			}
			window, logged, skipped = now, 0, 0
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case errors.Is(err, os.ErrClosed):
			return
		case err != nil:
			log.Warn("cannot read drop events; no more are logged", "error", err)
			return
		}
		if logged >= dropLogBurst {
			skipped++
			continue
		}
		logged++
		log.Info("dropped", dropAttrs(ev, now)...)
	}
}

// dropAttrs describes a drop event for the log.
func dropAttrs(ev datapath.Event, now time.Time) []any {
	ifname := ev.Interface
	if ifname == "" {
		ifname = fmt.Sprintf("ifindex %d", ev.Ifindex)
	}
	attrs := []any{"reason", ev.Reason.String(), "interface", ifname, "protocol", protocolName(ev.Protocol)}
	if ev.Reason == datapath.DropPrefilter {
		// The prefilter reads no ports.
		attrs = append(attrs, "source", ev.Source.Addr().String(), "destination", ev.Destination.Addr().String())
	} else {
		attrs = append(attrs, "source", ev.Source.String(), "destination", ev.Destination.String())
	}
	attrs = append(attrs, "bytes", ev.Length)
	if age := now.Sub(ev.Time); age > 2*time.Second {
		// Waiting in the ring buffer since before this process read it.
		attrs = append(attrs, "dropped_at", ev.Time.Format(time.RFC3339))
	}
	return attrs
}

func protocolName(p uint8) string {
	switch p {
	case syscall.IPPROTO_TCP:
		return "tcp"
	case syscall.IPPROTO_UDP:
		return "udp"
	case syscall.IPPROTO_ICMP:
		return "icmp"
	case syscall.IPPROTO_ICMPV6:
		return "icmpv6"
	case syscall.IPPROTO_SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
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

// logForeign warns about xdplane programs that another datapath attached
// to this namespace's interfaces (typically a run whose bpffs was
// unmounted): on the interfaces given, Attach detaches them; elsewhere
// they keep running with maps that nothing updates.
func logForeign(log *slog.Logger, dp *datapath.Datapath, ifaces []string) {
	foreign, err := dp.ForeignAttachments()
	if err != nil {
		log.Warn("cannot look for every program of another datapath", "error", err)
	}
	for _, f := range foreign {
		attrs := []any{"interface", f.Interface, "point", f.Point.String(), "mode", f.Mode.String(), "program", uint32(f.ProgramID)}
		if slices.Contains(ifaces, f.Interface) {
			log.Warn("detaching an xdplane program of another datapath (another bpffs, or its pins lost)", attrs...)
		} else {
			log.Warn("an xdplane program of another datapath runs on an interface not given to run; it is left alone", attrs...)
		}
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

// byteSize is a flag's size in bytes, written as a whole number, or with
// a suffix KiB, MiB or GiB.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	num, unit := s, int64(1)
	for suffix, u := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			num, unit = n, u
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || v < 1 || v > math.MaxInt64/unit {
		return errors.New("want a size in bytes, such as 16777216 or 16MiB")
	}
	*b = byteSize(v * unit)
	return nil
}
