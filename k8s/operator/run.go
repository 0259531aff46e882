package operator

// This file owns the operator's lifecycle: clients, the metrics server,
// leader election, and the controllers that run while this replica leads.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Operator is one moat-operator replica.
type Operator struct {
	cfg     Config
	log     *slog.Logger
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	metrics *metrics

	mu       sync.Mutex
	leading  bool
	metricsL net.Listener
}

// New builds an operator replica; Run runs it.
func New(cfg Config) (*Operator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc := rest.CopyConfig(cfg.REST)
	if rc.UserAgent == "" {
		rc.UserAgent = "moat-operator"
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("operator: kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("operator: dynamic client: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("operator: register metrics: %w", err)
	}
	return &Operator{cfg: cfg, log: cfg.Logger.With("component", "moat-operator", "replica", cfg.Identity), kube: kube, dyn: dyn, metrics: m}, nil
}

// Run is New followed by Operator.Run.
func Run(ctx context.Context, cfg Config) error {
	op, err := New(cfg)
	if err != nil {
		return err
	}
	return op.Run(ctx)
}

// Leading reports whether this replica currently leads.
func (o *Operator) Leading() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.leading
}

// MetricsAddr returns the address the metrics server listens on, once Run
// has started it (nil otherwise).
func (o *Operator) MetricsAddr() net.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.metricsL == nil {
		return nil
	}
	return o.metricsL.Addr()
}

// Run campaigns for the lease and, while leading, runs the controllers. It
// returns when ctx ends, after the lease is released and the controllers
// and the metrics server have stopped.
func (o *Operator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if o.cfg.MetricsAddress != "" {
		l, err := net.Listen("tcp", o.cfg.MetricsAddress)
		if err != nil {
			return fmt.Errorf("operator: listen for metrics on %s: %w", o.cfg.MetricsAddress, err)
		}
		o.mu.Lock()
		o.metricsL = l
		o.mu.Unlock()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(o.cfg.Registry, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.log.Error("metrics server stopped", "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: o.cfg.LeaseName, Namespace: o.cfg.Namespace},
		Client:     o.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.cfg.Identity},
	}
	for ctx.Err() == nil {
		if err := o.campaign(ctx, lock); err != nil {
			return err
		}
	}
	return nil
}

// campaign runs one leader election: it waits for the lease, leads until
// ctx ends or the lease is lost, and releases the lease only after the
// controllers have stopped, so two replicas never run them at once.
func (o *Operator) campaign(ctx context.Context, lock resourcelock.Interface) error {
	started := make(chan context.Context, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            o.cfg.LeaseName,
		LeaseDuration:   o.cfg.LeaseDuration,
		RenewDeadline:   o.cfg.RenewDeadline,
		RetryPeriod:     o.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) { started <- lctx },
			OnStoppedLeading: func() {},
			OnNewLeader:      func(id string) { o.log.Info("leader elected", "holder", id) },
		},
	})
	if err != nil {
		return fmt.Errorf("operator: leader election: %w", err)
	}
	// The elector's own context ends only after the controllers stopped:
	// cancelling it releases the lease.
	leCtx, leCancel := context.WithCancel(context.WithoutCancel(ctx))
	leDone := make(chan struct{})
	go func() { defer close(leDone); le.Run(leCtx) }()
	select {
	case lctx := <-started:
		runCtx, cancel := context.WithCancel(lctx)
		stop := context.AfterFunc(ctx, cancel)
		o.lead(runCtx)
		stop()
		cancel()
		if ctx.Err() == nil && lctx.Err() != nil {
			o.log.Warn("lost the leader-election lease; campaigning again")
		}
	case <-ctx.Done():
	case <-leDone:
	}
	leCancel()
	<-leDone
	return nil
}

// lead runs the controllers until lctx ends (lease lost or shutdown); the
// lease is released only after it returns.
func (o *Operator) lead(lctx context.Context) {
	o.setLeading(true)
	defer o.setLeading(false)
	o.log.Info("leading: starting identity GC and policy status")

	kf := informers.NewSharedInformerFactoryWithOptions(o.kube, 0, informers.WithTransform(slimPodsAndNamespaces))
	pods := kf.Core().V1().Pods().Informer()
	namespaces := kf.Core().V1().Namespaces().Informer()
	df := dynamicinformer.NewDynamicSharedInformerFactory(o.dyn, 0)
	gc := newGC(o, pods, namespaces, df)
	st, err := newStatusController(o, df)
	if err != nil {
		o.log.Error("policy status controller", "err", err)
		return
	}
	kf.Start(lctx.Done())
	df.Start(lctx.Done())
	defer kf.Shutdown()
	defer df.Shutdown()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); gc.run(lctx) }()
	go func() { defer wg.Done(); st.run(lctx) }()
	wg.Wait()
	o.log.Info("stopped leading")
}

func (o *Operator) setLeading(v bool) {
	o.mu.Lock()
	o.leading = v
	o.mu.Unlock()
	if v {
		o.metrics.leader.Set(1)
	} else {
		o.metrics.leader.Set(0)
	}
}

// slimPodsAndNamespaces keeps what the GC reads: names, labels, phase.
func slimPodsAndNamespaces(obj any) (any, error) {
	switch x := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: x.Name, Namespace: x.Namespace, UID: x.UID, ResourceVersion: x.ResourceVersion, Labels: x.Labels},
			Status:     corev1.PodStatus{Phase: x.Status.Phase},
		}, nil
	case *corev1.Namespace:
		return &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: x.Name, UID: x.UID, ResourceVersion: x.ResourceVersion, Labels: x.Labels},
		}, nil
	}
	return obj, nil
}
