package l7proxy

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Proxy is the embedded L7 proxy. Create it with New and start it with Run.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	stats  *envoyStats
	node   *corev3.Node
	als    *accessLogger
	errLog *log.Logger

	// mu guards the xDS state, the validated resources, the upstreams and
	// the sockets; the data plane reads only snap.
	mu        sync.Mutex
	types     map[string]*typeState
	listeners map[string]*listenerSpec
	routes    map[string]*routeSpec
	clusters  map[string]*clusterSpec
	upstreams map[string]*upstream
	sockets   map[string]*boundListener
	routeSubs []string // route configuration names subscribed to
	serveCtx  context.Context
	group     *errgroup.Group

	snap atomic.Pointer[snapshot]
	live atomic.Bool
	// adminAddr is the bound admin address, once Run has bound it.
	adminAddr atomic.Pointer[net.Addr]
	started   chan struct{}
}

// New returns a proxy for cfg (defaults applied). logger may be nil; reg
// receives the moat_l7proxy_* metrics and may be nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Proxy, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:    cfg,
		log:    logger,
		m:      m,
		stats:  newEnvoyStats(),
		node:   &corev3.Node{Id: cfg.Node, Cluster: cfg.Cluster, UserAgentName: "moat-l7proxy"},
		errLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		types: map[string]*typeState{
			listenerType: newTypeState(), routeType: newTypeState(), clusterType: newTypeState(),
		},
		listeners: map[string]*listenerSpec{},
		routes:    map[string]*routeSpec{},
		clusters:  map[string]*clusterSpec{},
		upstreams: map[string]*upstream{},
		sockets:   map[string]*boundListener{},
		started:   make(chan struct{}),
	}
	if cfg.AccessLogTarget != "" {
		p.als = newAccessLogger(cfg.AccessLogTarget, p.node, cfg.AccessLogQueue, logger, m)
	}
	p.snap.Store(&snapshot{listeners: map[string]*listenerSpec{}, routes: map[string]*routeSpec{}, clusters: map[string]*upstream{}})
	return p, nil
}

// Run serves until ctx ends: the ADS client, the listeners the
// configuration asks for, the access-log stream and the admin interface.
// It returns nil on a clean stop.
func (p *Proxy) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	p.mu.Lock()
	p.serveCtx, p.group = gctx, g
	p.mu.Unlock()
	if p.cfg.AdminAddr != "" {
		ln, err := listenAdmin(p.cfg.AdminAddr)
		if err != nil {
			return err
		}
		a := ln.Addr()
		p.adminAddr.Store(&a)
		g.Go(func() error { return p.serveAdmin(gctx, ln) })
	}
	if p.als != nil {
		g.Go(func() error { return p.als.run(gctx) })
	}
	g.Go(func() error { return p.runXDS(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		p.closeSockets()
		return nil
	})
	close(p.started)
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Live reports whether the first listeners and clusters are applied.
func (p *Proxy) Live() bool { return p.live.Load() }

// AdminAddr returns the bound admin address, nil before Run binds it.
func (p *Proxy) AdminAddr() net.Addr {
	if a := p.adminAddr.Load(); a != nil {
		return *a
	}
	return nil
}

// ListenerAddrs returns the bound addresses of the named listener.
func (p *Proxy) ListenerAddrs(name string) []net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.sockets[name]
	if b == nil {
		return nil
	}
	out := make([]net.Addr, 0, len(b.lns))
	for _, ln := range b.lns {
		out = append(out, ln.Addr())
	}
	return out
}
