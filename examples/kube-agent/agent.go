package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/xdplane/xdplane/lb"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// serviceIndex indexes EndpointSlices by the Service they belong to.
const serviceIndex = "service"

// installer is what the agent needs of lb.Manager.
type installer interface {
	Sync(desired []lb.Service) (lb.SyncResult, error)
}

// agent keeps the datapath's services equal to what the API says.
type agent struct {
	log      *slog.Logger
	nodeName string
	mgr      installer
	metrics  *metrics

	services corelisters.ServiceLister
	slices   cache.Indexer
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced
	start    func(stop <-chan struct{})

	// A change wakes the loop; it waits until changes stop coming for
	// debounce, or maxDelay after the first, and then syncs once.
	trigger  chan struct{}
	debounce time.Duration
	maxDelay time.Duration
	// retry is how long the loop waits after a failed sync.
	retry time.Duration

	mu     sync.Mutex
	status syncStatus
	// pendingSince is when the oldest change not yet synced came; zero
	// when there is none. /healthz fails once it is older than staleAfter.
	pendingSince time.Time
	staleAfter   time.Duration
	// node is this node's last known view, kept if the Node goes away.
	node nodeInfo
}

// syncStatus is what /healthz reports.
type syncStatus struct {
	InitialSyncDone bool      `json:"initialSyncDone"`
	LastSync        time.Time `json:"lastSync,omitzero"`
	LastError       string    `json:"lastError,omitempty"`
	Services        int       `json:"services"`
	Frontends       int       `json:"frontends"`
	Backends        int       `json:"backends"`
	PendingFor      string    `json:"pendingFor,omitempty"`
}

func newAgent(log *slog.Logger, client kubernetes.Interface, nodeName string, mgr installer, m *metrics) (*agent, error) {
	a := &agent{
		log:        log,
		nodeName:   nodeName,
		mgr:        mgr,
		metrics:    m,
		trigger:    make(chan struct{}, 1),
		debounce:   10 * time.Millisecond,
		maxDelay:   250 * time.Millisecond,
		retry:      time.Second,
		staleAfter: 30 * time.Second,
	}
	// As kube-proxy: services another proxy owns, and headless ones, are
	// not listed at all (their slices carry the same labels).
	all := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = proxiedSelector
	}))
	own := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
	}))
	svcInf := all.Core().V1().Services()
	sliceInf := all.Discovery().V1().EndpointSlices()
	nodeInf := own.Core().V1().Nodes()
	if err := sliceInf.Informer().AddIndexers(cache.Indexers{serviceIndex: sliceService}); err != nil {
		return nil, err
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.changed() },
		UpdateFunc: func(any, any) { a.changed() },
		DeleteFunc: func(any) { a.changed() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), sliceInf.Informer(), nodeInf.Informer()} {
		// The caches need no managed fields: dropping them saves memory.
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, err
		}
		a.synced = append(a.synced, inf.HasSynced)
	}
	a.services = svcInf.Lister()
	a.slices = sliceInf.Informer().GetIndexer()
	a.nodes = nodeInf.Lister()
	a.start = func(stop <-chan struct{}) {
		all.Start(stop)
		own.Start(stop)
	}
	return a, nil
}

// proxiedSelector is kube-proxy's: not a service another proxy
// implements (service.kubernetes.io/service-proxy-name), not headless.
const proxiedSelector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"

func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// sliceService is the "namespace/name" of the Service a slice belongs to.
func sliceService(obj any) ([]string, error) {
	sl, ok := obj.(*discovery.EndpointSlice)
	if !ok {
		return nil, nil
	}
	svc := sl.Labels[discovery.LabelServiceName]
	if svc == "" {
		return nil, nil
	}
	return []string{sl.Namespace + "/" + svc}, nil
}

// changed wakes the sync loop; it never blocks.
func (a *agent) changed() {
	a.mu.Lock()
	if a.pendingSince.IsZero() {
		a.pendingSince = time.Now()
	}
	a.mu.Unlock()
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// run syncs until ctx ends. Nothing is written before every informer has
// listed: until then the datapath keeps what it holds (the services of a
// previous run included), so that a restart neither drops nor prunes
// anything early.
func (a *agent) run(ctx context.Context) error {
	a.start(ctx.Done())
	a.log.Info("waiting for the informers to list services, endpoint slices and this node")
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return nil // stopped before the first sync
	}
	// Without its Node the agent knows neither the node port addresses
	// nor which endpoints are local: a sync now would remove the node
	// ports a previous run installed. Wait for it (a wrong
	// --hostname-override shows here).
	for tick := 0; ; tick++ {
		if _, err := a.nodes.Get(a.nodeName); err == nil {
			break
		}
		if tick%50 == 0 {
			a.log.Warn("waiting for this node's Node object before the first sync", "node", a.nodeName)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	a.log.Info("informers synced; first full sync")
	a.changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger:
		}
		a.wait(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := a.sync(); err != nil {
			// Try again later, unless a change comes first.
			time.AfterFunc(a.retry, a.changed)
		}
	}
}

// wait lets a burst of changes finish: it returns once no change has come
// for a.debounce, or a.maxDelay after it was called.
func (a *agent) wait(ctx context.Context) {
	deadline := time.NewTimer(a.maxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(a.debounce)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-quiet.C:
			return
		case <-a.trigger:
			quiet.Reset(a.debounce)
		}
	}
}

// desired computes the services the datapath should hold.
func (a *agent) desired() (services []lb.Service, count int, errs []error) {
	// run saw the Node before the first sync; if it is gone since, its
	// last addresses stay.
	if n, err := a.nodes.Get(a.nodeName); err == nil {
		a.node = nodeInfo{Name: a.nodeName, Addresses: nodeAddresses(n)}
	} else {
		a.log.Warn("this node's Node object is gone; keeping its last addresses", "node", a.nodeName)
	}
	node := a.node
	svcs, err := a.services.List(everything)
	if err != nil {
		return nil, 0, []error{err}
	}
	slices.SortFunc(svcs, func(x, y *v1.Service) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	owner := map[lb.Frontend]string{}
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		objs, err := a.slices.ByIndex(serviceIndex, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sls := make([]*discovery.EndpointSlice, 0, len(objs))
		for _, o := range objs {
			sls = append(sls, o.(*discovery.EndpointSlice))
		}
		slices.SortFunc(sls, func(x, y *discovery.EndpointSlice) int { return cmp.Compare(x.Name, y.Name) })
		ks, ok, err := kubeService(svc, sls, node)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		expanded, err := ks.Expand()
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", key, err))
			continue
		}
		count++
		for _, s := range expanded {
			// Two services on one frontend (an external IP both name): the
			// first by namespace and name keeps it, as a Sync takes each
			// frontend once.
			if prev, dup := owner[s.Frontend]; dup {
				errs = append(errs, fmt.Errorf("service %s: frontend %s is service %s's already", key, s.Frontend, prev))
				continue
			}
			owner[s.Frontend] = key
			services = append(services, s)
		}
	}
	return services, count, errs
}

// sync makes the datapath hold the desired services.
func (a *agent) sync() error {
	a.mu.Lock()
	since := a.pendingSince
	a.pendingSince = time.Time{} // changes from now on are pending again
	a.mu.Unlock()
	desired, count, problems := a.desired()
	for _, p := range problems {
		a.log.Warn("service left out", "error", p)
	}
	a.metrics.serviceErrors.Set(float64(len(problems)))
	start := time.Now()
	res, err := a.mgr.Sync(desired)
	d := time.Since(start)
	a.metrics.syncDuration.Observe(d.Seconds())
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.metrics.syncs.WithLabelValues("error").Inc()
		a.status.LastError = err.Error()
		if a.pendingSince.IsZero() || (!since.IsZero() && since.Before(a.pendingSince)) {
			a.pendingSince = since // still not synced
		}
		a.log.Error("sync failed; the datapath keeps what it had", "error", err, "frontends", len(desired))
		return err
	}
	backends := 0
	for _, s := range desired {
		backends += len(s.Backends)
	}
	a.metrics.syncs.WithLabelValues("ok").Inc()
	a.metrics.services.Set(float64(count))
	a.metrics.frontends.Set(float64(len(desired)))
	a.metrics.backends.Set(float64(backends))
	a.metrics.lastSync.SetToCurrentTime()
	first := !a.status.InitialSyncDone
	a.status = syncStatus{InitialSyncDone: true, LastSync: time.Now(), Services: count, Frontends: len(desired), Backends: backends}
	level := slog.LevelDebug
	if first || len(res.Added)+len(res.Changed)+len(res.Removed) > 0 {
		level = slog.LevelInfo
	}
	a.log.Log(context.Background(), level, "synced", "duration", d, "services", count, "frontends", len(desired),
		"backends", backends, "added", len(res.Added), "changed", len(res.Changed), "removed", len(res.Removed), "initial", first)
	return nil
}

// healthz answers 200 once the first full sync is done, while the last
// sync succeeded and no change has waited longer than staleAfter (a
// wedged loop or a failing sync); 503 otherwise. The status is JSON
// either way.
func (a *agent) healthz(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	st := a.status
	pending := a.pendingSince
	a.mu.Unlock()
	if !pending.IsZero() {
		st.PendingFor = time.Since(pending).Round(time.Millisecond).String()
	}
	w.Header().Set("Content-Type", "application/json")
	if !st.InitialSyncDone || st.LastError != "" || (!pending.IsZero() && time.Since(pending) > a.staleAfter) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(st)
}

var everything = labels.Everything()

var errNoInterface = errors.New("no --interface given: name the interfaces service traffic arrives on and replies leave by")
