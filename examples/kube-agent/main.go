// Command xdplane-kube-agent replaces kube-proxy on one node: it watches
// Services, EndpointSlices and its own Node through client-go's shared
// informers and keeps xdplane's services equal to them (cluster IPs, node
// ports, load balancer ingress IPs and external IPs; ready, serving and
// terminating endpoints; node-local endpoints; session affinity; traffic
// policies; both families).
//
// Usage, as root on the node:
//
//	xdplane-kube-agent --kubeconfig FILE --interface eth0 [--interface eth1 ...]
//	    [--hostname-override NAME] [--bpffs DIR] [--hook tc|xdp]
//	    [--healthz-bind-address 0.0.0.0:10256] [--metrics-bind-address 127.0.0.1:10249]
//	    [--conntrack-size N] [--conntrack-tcp-timeout-established D] [--conntrack-udp-timeout D]
//	    [--conntrack-udp-timeout-stream D] [--conntrack-tcp-timeout-opening D]
//	    [--conntrack-tcp-timeout-closing D] [--conntrack-gc-interval D]
//	xdplane-kube-agent --cleanup [--bpffs DIR]
//
// --cleanup fails, changing nothing, while an agent (or any other writer)
// runs on the same --bpffs: stop the agent first.
//
// The datapath is pinned in --bpffs and outlives the agent: a restart
// adopts it, keeps every established connection, and prunes services only
// after its first full sync.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if err := realMain(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "xdplane-kube-agent:", err)
		os.Exit(1)
	}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

type options struct {
	kubeconfig, hostname, bpffs, hook string
	interfaces                        listFlag
	healthzAddr, metricsAddr          string
	debounce, maxDelay                time.Duration
	cleanup                           bool
	logLevel                          slog.Level
	conntrackSize                     uint
	conntrack                         datapath.ConntrackTimeouts
	conntrackGC                       time.Duration
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("xdplane-kube-agent", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster service account")
	fs.StringVar(&o.hostname, "hostname-override", "", "this node's name, if not the host name")
	fs.StringVar(&o.bpffs, "bpffs", datapath.DefaultDir, "bpffs directory the datapath is pinned in")
	fs.Var(&o.interfaces, "interface", "interface to attach to (repeat): every one service traffic arrives on and replies leave by")
	fs.StringVar(&o.hook, "hook", "tc", "tc or xdp")
	fs.StringVar(&o.healthzAddr, "healthz-bind-address", "0.0.0.0:10256", "address of /healthz; empty: none")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "127.0.0.1:10249", "address of /metrics; empty: none")
	fs.DurationVar(&o.debounce, "sync-debounce", 10*time.Millisecond, "sync once changes have stopped for this long")
	fs.DurationVar(&o.maxDelay, "max-sync-delay", 250*time.Millisecond, "sync at the latest this long after the first of a burst of changes")
	d := datapath.DefaultConntrackTimeouts
	fs.UintVar(&o.conntrackSize, "conntrack-size", 0, "conntrack entries, two a flow, fixed when first created (default: what is pinned, else 131072)")
	// kube-proxy's names, where kube-proxy has the setting.
	fs.DurationVar(&o.conntrack.TCPEstablished, "conntrack-tcp-timeout-established", d.TCPEstablished, "idle timeout of an established TCP flow")
	fs.DurationVar(&o.conntrack.UDP, "conntrack-udp-timeout", d.UDP, "idle timeout of a UDP flow the backend has not answered")
	fs.DurationVar(&o.conntrack.UDPStream, "conntrack-udp-timeout-stream", d.UDPStream, "idle timeout of a UDP flow the backend has answered")
	fs.DurationVar(&o.conntrack.TCPOpening, "conntrack-tcp-timeout-opening", d.TCPOpening, "idle timeout of a TCP flow the backend has not answered")
	fs.DurationVar(&o.conntrack.TCPClosing, "conntrack-tcp-timeout-closing", d.TCPClosing, "idle timeout of a TCP flow reset, or closed by both sides")
	fs.DurationVar(&o.conntrackGC, "conntrack-gc-interval", 30*time.Second, "how often expired and stale conntrack entries are removed")
	fs.BoolVar(&o.cleanup, "cleanup", false, "detach from every interface, remove the pinned datapath, and exit")
	v := fs.Int("v", 0, "log verbosity: 0 info, 1 and more debug")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *v > 0 {
		o.logLevel = slog.LevelDebug
	}
	if o.debounce <= 0 || o.maxDelay < o.debounce {
		return o, fmt.Errorf("--sync-debounce %v --max-sync-delay %v: want 0 < debounce <= max delay", o.debounce, o.maxDelay)
	}
	if _, err := datapath.ParseHook(o.hook); err != nil {
		return o, fmt.Errorf("--hook: %w", err)
	}
	if !o.cleanup && len(o.interfaces) == 0 {
		return o, errNoInterface
	}
	if o.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return o, err
		}
		o.hostname = h
	}
	o.hostname = strings.ToLower(strings.TrimSpace(o.hostname))
	return o, nil
}

func realMain(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel}))
	if o.cleanup {
		if err := datapath.Remove(o.bpffs); err != nil {
			return err
		}
		log.Info("removed the datapath", "bpffs", o.bpffs)
		return nil
	}

	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	hook, _ := datapath.ParseHook(o.hook)
	if o.conntrackSize > 1<<26 || o.conntrackGC < time.Second {
		return fmt.Errorf("--conntrack-size %d (at most %d) or --conntrack-gc-interval %s (at least 1s) out of range", o.conntrackSize, 1<<26, o.conntrackGC)
	}
	dp, err := datapath.Open(datapath.Options{Dir: o.bpffs, Conntrack: o.conntrack,
		Limits: datapath.Limits{ConntrackSize: uint32(o.conntrackSize)}})
	if err != nil {
		return err
	}
	defer dp.Close() // the datapath stays in the kernel
	for _, ifname := range o.interfaces {
		if err := dp.Attach(ifname, datapath.AttachOptions{Hook: hook}); err != nil {
			return err
		}
	}
	atts, err := dp.Attachments()
	if err != nil {
		return err
	}
	for _, at := range atts {
		log.Info("attached", "interface", at.Interface, "point", at.Point, "mode", at.Mode.String())
	}
	mgr, err := lb.NewManager(dp) // adopts what a previous run installed
	if err != nil {
		return err
	}
	defer mgr.Close()
	log.Info("adopted the pinned services", "frontends", len(mgr.List()), "bpffs", o.bpffs)

	m := newMetrics()
	a, err := newAgent(log, client, o.hostname, mgr, m)
	if err != nil {
		return err
	}
	a.debounce, a.maxDelay = o.debounce, o.maxDelay

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	servers := []*http.Server{}
	if o.healthzAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", a.healthz)
		servers = append(servers, &http.Server{Addr: o.healthzAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second})
	}
	if o.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
		servers = append(servers, &http.Server{Addr: o.metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second})
	}
	serveErr := make(chan error, len(servers))
	for _, srv := range servers {
		go func() {
			log.Info("serving", "address", srv.Addr)
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve %s: %w", srv.Addr, err)
			}
		}()
	}
	log.Info("starting", "node", o.hostname, "interfaces", []string(o.interfaces), "hook", o.hook)
	ctm := newConntrackMetrics(m.registry)
	gcDone := make(chan struct{})
	go func() { defer close(gcDone); lb.RunConntrackCollector(ctx, dp, o.conntrackGC, ctm.report(log)) }()
	defer func() { stop(); <-gcDone }()
	runErr := make(chan error, 1)
	go func() { runErr <- a.run(ctx) }()
	select {
	case err = <-runErr:
	case err = <-serveErr:
		stop() // a server failed: end the loop too, and wait for it
		if rerr := <-runErr; rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	stop()
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdown)
	}
	log.Info("stopped; the datapath keeps running", "bpffs", o.bpffs)
	return err
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
