package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/l7proxy"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// Socket names under Config.RunDir.
const (
	APISocket        = "agent.sock"
	XDSSocket        = "xds.sock"
	AccessLogSocket  = "accesslog.sock"
	ProxyAdminSocket = "proxy-admin.sock"
	EnvoyBootstrap   = "envoy-bootstrap.json"
)

// Agent is one node's moat agent in standalone mode.
type Agent struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry
	m   *agentMetrics

	alloc    *policy.FileAllocator
	compiler *policy.Compiler
	dp       *datapath.Datapath
	eps      *datapath.EndpointManager
	xds      *xds.Server
	ring     *flow.Ring
	flows    *flow.Metrics
	als      *flow.AccessLogServer

	policies  *policySource
	endpoints endpointsSource

	mu               sync.RWMutex
	state            state
	appliedPolicies  map[policyKey]policy.Policy
	appliedEndpoints map[datapath.EndpointKey]policy.Endpoint
	xdsSeq           uint64
	intended         *envoy.Resources
	intendedSum      [32]byte
}

// state is what the local API reports; guarded by Agent.mu.
type state struct {
	plan        *policy.Plan
	enricher    map[string]flow.Endpoint // IP string → endpoint
	ifaces      map[datapath.EndpointKey]int
	byIfindex   map[int]datapath.EndpointKey
	revision    uint64
	xdsVersion  string
	proxyReady  bool
	proxyError  string
	policyErrs  []string
	lastError   string
	lastSync    time.Time
	policyCount int
}

// New builds the agent's components. Nothing touches the kernel or the
// network before Run.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate agent config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mcfg, err := flow.ParseMetricsList(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	flows, err := flow.NewMetrics(mcfg, reg)
	if err != nil {
		return nil, fmt.Errorf("register flow metrics: %w", err)
	}
	ring, err := flow.NewRing(flow.RingConfig{Capacity: cfg.FlowBuffer})
	if err != nil {
		return nil, err
	}
	xsrv, err := xds.New(xds.Config{
		Socket:  filepath.Join(cfg.RunDir, XDSSocket),
		TCPAddr: cfg.XDSAddress,
	}, log, reg)
	if err != nil {
		return nil, fmt.Errorf("create xds server: %w", err)
	}
	a := &Agent{
		cfg:       cfg,
		log:       log,
		reg:       reg,
		m:         newAgentMetrics(reg),
		xds:       xsrv,
		ring:      ring,
		flows:     flows,
		policies:  newPolicySource(cfg.Policies),
		endpoints: endpointsSource{path: cfg.Endpoints},
	}
	a.als = flow.NewAccessLogServer(flow.EnricherFunc(a.resolve), a.record, log.With("component", "accesslog"))
	return a, nil
}

// Registry returns the agent's metrics registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Run starts the agent and blocks until ctx ends or a component fails. The
// BPF programs and maps stay pinned when it returns: enforcement goes on
// while the agent is down.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.RunDir, 0o750); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	alloc, err := policy.NewFileAllocator(a.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("open identity allocator: %w", err)
	}
	a.alloc = alloc
	a.compiler = policy.NewCompiler(policy.Options{AllowHostIngress: a.cfg.AllowHostIngress}, alloc)

	dcfg := datapath.DefaultConfig()
	if a.cfg.BPFRoot != "" {
		dcfg.PinRoot = a.cfg.BPFRoot
	}
	dcfg.Attach = datapath.AttachMode(a.cfg.Attach)
	dcfg.EventsPerSecond = a.cfg.EventsPerSecond
	dcfg.VerdictEvents = a.cfg.VerdictEvents
	dcfg.CTMaxEntries = a.cfg.ConntrackMaxEntries
	dcfg.NoLocalDelivery = !*a.cfg.LocalDelivery
	dcfg.Logger = a.log.With("component", "datapath")
	dp, err := datapath.Open(dcfg)
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	defer dp.Close()
	a.dp = dp
	ct := &ctCollector{dp: dp, log: a.log.With("component", "conntrack"), interval: time.Duration(a.cfg.ConntrackGCInterval)}
	a.reg.MustRegister(ct, &mapPressureCollector{dp: dp, ct: ct})

	var readTCP func(context.Context) error
	if *a.cfg.TCPHealth {
		run, closeTCP, err := a.startTCPHealth(dcfg.PinRoot)
		if err != nil {
			return err
		}
		defer closeTCP()
		readTCP = run
	}
	if len(a.cfg.PrefilterDeny) > 0 {
		closePF, err := a.startPrefilter(dcfg.PinRoot)
		if err != nil {
			return err
		}
		defer closePF()
	}

	ecfg := datapath.DefaultEndpointConfig()
	if a.cfg.NetnsPrefix != "" {
		ecfg.NetnsPrefix = a.cfg.NetnsPrefix
	}
	hostNs, hostNsPath, err := pinHostNetns()
	if err != nil {
		return err
	}
	defer hostNs.Close()
	ecfg.HostNetns = hostNsPath
	eps, err := datapath.NewEndpointManager(ecfg, a.log.With("component", "endpoints"))
	if err != nil {
		return fmt.Errorf("create endpoint manager: %w", err)
	}
	defer eps.Close()
	a.eps = eps
	if err := eps.EnsureProxyRouting(ctx); err != nil {
		return fmt.Errorf("install proxy routing: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.xds.Run(ctx) })
	g.Go(func() error { return a.serveAccessLogs(ctx) })
	g.Go(func() error { return a.serveAPI(ctx) })
	if a.cfg.MetricsAddress != "" {
		g.Go(func() error { return a.serveMetrics(ctx) })
	}
	g.Go(func() error {
		return dp.ReadEvents(ctx, a.onEvent)
	})
	g.Go(func() error { return a.policyLoop(ctx) })
	g.Go(func() error { return ct.run(ctx) })
	// A host-wide ip_forward change resets the veths' forwarding (datapath.KeepForwarding).
	g.Go(func() error { return eps.KeepForwarding(ctx, a.log.With("component", "forwarding")) })
	if readTCP != nil {
		g.Go(func() error { return readTCP(ctx) })
	}
	if err := a.startProxy(ctx, g); err != nil {
		return err
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// policyLoop polls the sources and reconciles on every change, and
// periodically so that a proxy that connects late gets its redirects.
func (a *Agent) policyLoop(ctx context.Context) error {
	t := time.NewTicker(time.Duration(a.cfg.PollInterval))
	defer t.Stop()
	full := true // the first pass, and a pass after a failed one
	for {
		var err error
		switch changed := a.refreshSources(ctx); {
		case changed || full:
			err = a.reconcile(ctx)
			full = err != nil
		case a.proxyPending():
			// Nothing changed but the proxy has not ACKed yet: retry only
			// the proxy push, not the endpoints.
			err = a.retryProxy(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.log.Error("reconcile", "err", err)
			a.setLastError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) setLastError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.state.lastError = ""
		return
	}
	a.state.lastError = err.Error()
}

// startProxy runs the configured HTTP proxy beside the agent. Its listeners
// come from the agent's xDS server; until it ACKs them, redirected traffic is
// dropped.
func (a *Agent) startProxy(ctx context.Context, g *errgroup.Group) error {
	xdsSock := filepath.Join(a.cfg.RunDir, XDSSocket)
	alsSock := filepath.Join(a.cfg.RunDir, AccessLogSocket)
	adminSock := filepath.Join(a.cfg.RunDir, ProxyAdminSocket)
	switch a.cfg.Proxy {
	case ProxyEmbedded:
		p, err := l7proxy.New(l7proxy.Config{
			Node:            a.cfg.NodeName,
			XDSTarget:       xdsSock,
			AccessLogTarget: alsSock,
			AdminAddr:       adminSock,
			// The egress proxy keeps the client's address towards local endpoints.
			LocalDestination: a.isLocalEndpoint,
		}, a.log.With("component", "l7proxy"), a.reg)
		if err != nil {
			return fmt.Errorf("create embedded proxy: %w", err)
		}
		g.Go(func() error { return p.Run(ctx) })
	case ProxyEnvoy:
		b, err := envoy.Bootstrap(envoy.BootstrapConfig{
			NodeName:        a.cfg.NodeName,
			XDSSocket:       xdsSock,
			AccessLogSocket: alsSock,
			AdminSocket:     adminSock,
		})
		if err != nil {
			return fmt.Errorf("build envoy bootstrap: %w", err)
		}
		js, err := envoy.BootstrapJSON(b)
		if err != nil {
			return err
		}
		path := filepath.Join(a.cfg.RunDir, EnvoyBootstrap)
		if err := os.WriteFile(path, js, 0o640); err != nil {
			return fmt.Errorf("write envoy bootstrap: %w", err)
		}
		sup, err := envoy.NewSupervisor(envoy.SupervisorConfig{
			Binary:        a.cfg.EnvoyBinary,
			BootstrapPath: path,
			AdminAddr:     adminSock,
			Logger:        a.log.With("component", "envoy"),
			Registerer:    a.reg,
		})
		if err != nil {
			return fmt.Errorf("create envoy supervisor: %w", err)
		}
		g.Go(func() error { return sup.Run(ctx) })
	}
	return nil
}

func (a *Agent) serveAccessLogs(ctx context.Context) error {
	path := filepath.Join(a.cfg.RunDir, AccessLogSocket)
	ln, err := listenUnix(path)
	if err != nil {
		return fmt.Errorf("listen access-log socket: %w", err)
	}
	srv := grpc.NewServer()
	a.als.Register(srv)
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		return fmt.Errorf("serve access logs: %w", err)
	}
	return nil
}

func (a *Agent) serveMetrics(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	ln, err := net.Listen("tcp", a.cfg.MetricsAddress)
	if err != nil {
		return fmt.Errorf("listen metrics on %s: %w", a.cfg.MetricsAddress, err)
	}
	return serveHTTP(ctx, ln, mux)
}

// serveHTTP serves until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		return err
	}
}

// listenUnix listens on a unix socket, replacing a stale one, mode 0660.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use by another process", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// isLocalEndpoint says whether ip is a local endpoint's address.
func (a *Agent) isLocalEndpoint(ip netip.Addr) bool {
	_, ok := a.resolve(ip)
	return ok
}
