package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
	"github.com/xdplane/xdplane/prefilter"
)

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	dir := fs.String("bpffs", datapath.DefaultDir, "the bpffs directory run pinned its state in")
	configPath := fs.String("config", "", "a configuration to take service names from (optional)")
	maxConfig := byteSize(DefaultMaxConfigBytes)
	fs.Var(&maxConfig, "max-config-bytes", "the largest configuration file read, as for run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var known map[lb.Frontend]NamedService
	if *configPath != "" {
		cfg, err := loadConfig(context.Background(), *configPath, limitsFor(int64(maxConfig)))
		if err != nil {
			return err
		}
		known = cfg.ByFrontend()
	}

	dp, err := datapath.OpenPinned(*dir)
	if errors.Is(err, datapath.ErrNotPinned) {
		hint := ""
		if strings.HasPrefix(filepath.Clean(*dir), "/sys/fs/bpf") {
			hint = " (`ip netns exec` hides /sys/fs/bpf: there, use a bpffs mounted elsewhere)"
		}
		return fmt.Errorf("no load balancer is pinned in %s: is `xdplane-lb run` started with the same --bpffs?%s", *dir, hint)
	}
	if err != nil {
		return fmt.Errorf("open pinned datapath: %w", err)
	}
	defer dp.Close()
	services, err := lb.ReadStatus(dp)
	if err != nil {
		return fmt.Errorf("read services: %w", err)
	}
	counters, err := dp.Counters()
	if err != nil {
		return fmt.Errorf("read counters: %w", err)
	}
	var atts attachStatus
	if atts.own, err = dp.Attachments(); err != nil {
		return fmt.Errorf("list attachments: %w", err)
	}
	atts.foreign, atts.foreignErr = dp.ForeignAttachments()
	var pf prefilterStatus
	if pf.prefixes, err = prefilter.List(dp); err != nil {
		return err
	}
	drops, err := dp.DropCounters()
	if err != nil {
		return fmt.Errorf("read drop counters: %w", err)
	}
	pf.drops = datapath.Counter{Packets: drops.Packets[datapath.DropPrefilter], Bytes: drops.Bytes[datapath.DropPrefilter]}
	pf.eventsLost = drops.EventsLost
	if err := printStatus(stdout, dp.Dir(), services, known, counters, pf, atts); err != nil {
		return err
	}
	return printConntrack(stdout, dp)
}

// prefilterStatus is what status shows of the prefilter.
type prefilterStatus struct {
	prefixes   []netip.Prefix
	drops      datapath.Counter
	eventsLost uint64 // drop events the ring buffer had no room for
}

// attachStatus is what status shows of attachments: the datapath's own,
// and xdplane programs of another datapath on this namespace's
// interfaces.
type attachStatus struct {
	own        []datapath.Attachment
	foreign    []datapath.Attachment
	foreignErr error // why the foreign ones could not all be listed
}

// maxPrefixesShown is how many prefixes of the prefilter status lists.
const maxPrefixesShown = 10

// printStatus prints what the datapath holds. known, from --config, adds
// what the datapath's status does not report: names, frontend types,
// traffic policies and source ranges; nil without --config.
func printStatus(w io.Writer, dir string, services []lb.ServiceStatus, known map[lb.Frontend]NamedService,
	c datapath.Counters, pf prefilterStatus, atts attachStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)

	fmt.Fprintf(tw, "Datapath pinned in %s\n\n", dir)

	if len(atts.own) == 0 {
		fmt.Fprintln(tw, "Attached to no interface.")
	} else {
		fmt.Fprintln(tw, "INTERFACE\tPOINT\tMODE\tPROGRAM")
		for _, a := range atts.own {
			name := a.Interface
			if name == "" {
				name = fmt.Sprintf("(ifindex %d, not here)", a.Ifindex)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", name, a.Point, a.Mode, a.ProgramID)
		}
	}
	fmt.Fprintln(tw)
	if len(atts.foreign) > 0 {
		// Typically left by a run whose bpffs was unmounted: they run
		// before or instead of this datapath's, with maps nothing
		// updates.
		fmt.Fprintf(tw, "NOT THIS DATAPATH'S: %d xdplane %s of another datapath (another bpffs, or pins lost); "+
			"xdplane-lb run detaches them from the interfaces it runs on:\n",
			len(atts.foreign), plural(len(atts.foreign), "program", "programs"))
		fmt.Fprintln(tw, "INTERFACE\tPOINT\tMODE\tPROGRAM")
		for _, a := range atts.foreign {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", a.Interface, a.Point, a.Mode, a.ProgramID)
		}
		fmt.Fprintln(tw)
	}
	if atts.foreignErr != nil {
		fmt.Fprintf(tw, "Other datapaths' programs: not all could be looked for: %v\n\n", atts.foreignErr)
	}

	if len(services) == 0 {
		fmt.Fprintln(tw, "No services.")
	} else {
		unknown := false
		fmt.Fprintln(tw, "SERVICE\tNAME\tTYPE\tALGORITHM\tAFFINITY\tPOLICY\tSOURCES")
		for _, s := range services {
			name, typ, policy, sources := "-", "?", "?", "?"
			if ns, ok := known[s.Frontend]; ok {
				name, typ, policy, sources = ns.Label(), string(ns.Type), ns.Service.TrafficPolicy.String(), "all"
				if ns.Type == TypeFrontend {
					typ = "-"
				}
				if rs := ns.Service.SourceRanges; len(rs) > 0 {
					texts := make([]string, len(rs))
					for i, p := range rs {
						texts[i] = p.Masked().String()
					}
					sources = strings.Join(texts, ",")
				}
			} else {
				unknown = true
			}
			alg := s.Algorithm.String()
			if s.Algorithm == lb.Maglev {
				alg += fmt.Sprintf("(%d)", s.MaglevTableSize)
			}
			affinity := "none"
			if s.SessionAffinity > 0 {
				affinity = s.SessionAffinity.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Frontend, name, typ, alg, affinity, policy, sources)
		}
		if unknown {
			// The datapath holds policies and source ranges, but
			// lb.ReadStatus does not return them.
			if known == nil {
				fmt.Fprintln(tw, "?: pass --config FILE to show names, types, policies and source ranges")
			} else {
				fmt.Fprintln(tw, "?: not a service of the configuration given")
			}
		}
		fmt.Fprintln(tw)

		fmt.Fprintln(tw, "SERVICE\tBACKEND\tWEIGHT\tSTATE\tLOCAL\tPACKETS\tBYTES")
		for _, s := range services {
			if len(s.Backends) == 0 {
				// New flows are rejected, under "rejected, no backend".
				fmt.Fprintf(tw, "%s\t(none)\t-\t-\t-\t-\t-\n", s.Frontend)
				continue
			}
			for i, b := range s.Backends {
				svc := s.Frontend.String()
				if i > 0 {
					svc = ""
				}
				local := "no"
				if b.Local {
					local = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\n", svc, b.Address, b.Weight, b.State, local, b.Packets, b.Bytes)
			}
		}
	}
	fmt.Fprintln(tw)

	switch n := len(pf.prefixes); n {
	case 0:
		fmt.Fprintln(tw, "Prefilter: empty.")
	default:
		fmt.Fprintf(tw, "Prefilter: %d %s, whose packets XDP drops before load balancing:\n", n, plural(n, "source prefix", "source prefixes"))
		shown := pf.prefixes[:min(n, maxPrefixesShown)]
		for _, p := range shown {
			fmt.Fprintf(tw, "  %s\n", p)
		}
		if n > len(shown) {
			fmt.Fprintf(tw, "  and %d more\n", n-len(shown))
		}
		if !slices.ContainsFunc(atts.own, func(a datapath.Attachment) bool { return a.Point == datapath.PointXDP }) {
			fmt.Fprintln(tw, "  (attached at XDP on no interface: the prefilter drops nothing)")
		}
	}
	fmt.Fprintln(tw)

	fmt.Fprintln(tw, "COUNTER\tPACKETS\tBYTES")
	for _, r := range []struct {
		name string
		c    datapath.Counter
	}{
		{"forwarded, new flow", c.ForwardNew},
		{"forwarded, established", c.ForwardEstablished},
		{"replies translated", c.Replies},
		{"passed, not for a service", c.Passed},
		{"rejected, no backend", c.NoBackend},
		{"dropped, prefilter", pf.drops},
		{"dropped, source not allowed", c.SourceDenied},
		{"dropped, conntrack full", c.ConntrackFull},
		{"passed, malformed", c.Malformed},
		{"passed, fragment", c.Fragments},
	} {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", r.name, r.c.Packets, r.c.Bytes)
	}
	// run reads the drop events and logs them; with no run reading, the
	// ring buffer fills and the newest are lost.
	fmt.Fprintf(tw, "drop events lost\t%d\t-\n", pf.eventsLost)
	return tw.Flush()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func cmdCleanup(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cleanup", stderr)
	dir := fs.String("bpffs", datapath.DefaultDir, "the bpffs directory run pinned its state in")
	force := fs.Bool("force", false, "remove the datapath even while xdplane-lb run (or another writer) holds it; that run then exits")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "Nothing to remove: %s does not exist.\n", abs)
		return nil
	}
	err = datapath.RemoveWithOptions(abs, datapath.RemoveOptions{Force: *force})
	if errors.Is(err, datapath.ErrBusy) {
		return fmt.Errorf("%w\nnothing was removed: stop xdplane-lb run first (SIGTERM), or pass --force to remove the datapath under it", err)
	}
	if err != nil {
		return fmt.Errorf("remove the datapath in %s: %w", abs, err)
	}
	fmt.Fprintf(stdout, "Detached from every interface and removed %s.\n", abs)
	return nil
}
