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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/k8s"
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

	alloc    policy.Allocator
	compiler *policy.Compiler
	xds      *xds.Server
	ring     *flow.Ring
	flows    *flow.Metrics
	als      *flow.AccessLogServer

	// The parts reconcile drives (see parts.go); Run sets them from
	// openNode's result.
	maps     policyMaps
	plumb    endpointPlumbing
	proxyCfg proxyConfig
	// openNode opens the kernel side (datapath, endpoint manager, proxy
	// routing); tests replace it with fakes.
	openNode func(ctx context.Context) (*nodeParts, error)
	// alsGrace bounds the access-log server's graceful stop.
	alsGrace time.Duration
	// lockDir holds the node lock (LockDir; tests use their own).
	lockDir string
	// uplinkRoutes says which destinations are routed through an uplink
	// (nil: no uplinks); set once the datapath is open.
	uplinkRoutes atomic.Pointer[datapath.UplinkRoutes]

	// src feeds the compiler: fileSource (policies, endpoints) or
	// kubeSource (source.go).
	src       source
	policies  *policySource
	endpoints endpointsSource
	// cni serves moat-cni (cni.go; nil unless Config.CNI).
	cni *cniServer
	// nodeRoutesNetns is the netns the node routes go to ("": the
	// agent's own; tests use a netns of their own).
	nodeRoutesNetns string
	// confirmedGen is the last Plan generation confirmed to the compiler
	// (policyLoop only).
	confirmedGen uint64

	// syncMu serialises map writes: reconcile's, proxyLoop's and the DNS
	// proxy's (dns.go). compMu guards the compiler (policyLoop and the DNS
	// proxy's learning); taken after syncMu when both are.
	syncMu    sync.Mutex
	compMu    sync.Mutex
	dns       *dnsState
	proxyKick chan struct{}
	// live finds learned addresses that tracked flows use (the datapath).
	live liveAddrs
	// svc is Service translation (services.go); nil when it is off.
	svc *serviceState

	mu               sync.RWMutex
	state            state
	proxy            proxyState
	sources          sourceReport
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
	// Kubernetes mode.
	remoteEndpoints int
	configError     string
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
		proxyCfg:  xsrv,
		ring:      ring,
		flows:     flows,
		alsGrace:  DefaultStopGrace,
		lockDir:   LockDir,
		proxyKick: make(chan struct{}, 1),
		policies:  newPolicySource(cfg.Policies),
		endpoints: endpointsSource{path: cfg.Endpoints},
	}
	a.src = fileSource{}
	if cfg.Kubernetes() {
		rc, err := cfg.RESTConfig()
		if err != nil {
			return nil, err
		}
		var atts k8s.PodAttachments
		if cfg.CNI {
			a.cni = newCNIServer(a)
			atts = a.cni
		}
		ks, err := newKubeSource(cfg, rc, atts, log)
		if err != nil {
			return nil, err
		}
		a.src = ks
		a.reg.MustRegister(ks.alloc.Collector()) // moat_identity_*
	}
	a.openNode = a.openKernel
	a.als = flow.NewAccessLogServer(flow.EnricherFunc(a.resolve), a.record, log.With("component", "accesslog"))
	return a, nil
}

// Registry returns the agent's metrics registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// DefaultStopGrace bounds how long a server of the agent waits for open
// streams and requests when it stops; then it closes them.
const DefaultStopGrace = 2 * time.Second

// nodeParts is what openNode opens: the parts reconcile drives, the
// goroutines that read from the kernel, and how to close it all.
type nodeParts struct {
	maps  policyMaps
	plumb endpointPlumbing
	// run are goroutines that live as long as the agent (event readers,
	// conntrack GC).
	run []func(ctx context.Context) error
	// close releases everything, in reverse order of opening.
	close func()
}

// Run starts the agent and blocks until ctx ends or a component fails. The
// BPF programs and maps stay pinned when it returns: enforcement goes on
// while the agent is down.
//
// It first takes the node lock on its pin root (see NodeLock): a second
// agent fails here, naming the first one's pid, before it touches any pin.
// Everything that can fail is opened before any goroutine starts, and a
// failure after that stops and waits for every goroutine before the parts
// they use are closed: a failed start leaves nothing running.
func (a *Agent) Run(ctx context.Context) error {
	lock, err := LockNode(a.lockDir, a.pinRoot())
	if err != nil {
		return err
	}
	defer lock.Release()
	if err := os.MkdirAll(a.cfg.RunDir, 0o750); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	if ks, ok := a.src.(*kubeSource); ok {
		a.alloc = ks.alloc // cluster-wide, through the API
	} else {
		alloc, err := policy.NewFileAllocator(a.cfg.StateDir)
		if err != nil {
			return fmt.Errorf("open identity allocator: %w", err)
		}
		a.alloc = alloc
	}
	a.compiler = policy.NewCompiler(policy.Options{AllowHostIngress: a.cfg.AllowHostIngress}, a.alloc)

	runProxy, err := a.newProxy()
	if err != nil {
		return err
	}
	node, err := a.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.close()
	a.maps, a.plumb = node.maps, node.plumb
	a.adoptLocalIdentities() // before the first Plan: pinned prefixes keep their numbers
	if a.cni != nil {
		// Before the first Plan: attached pods keep their addresses.
		if err := a.cni.load(); err != nil {
			return err
		}
	}
	extra, err := a.kubeNodeParts(ctx)
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.xds.Run(ctx) })
	g.Go(func() error { return a.serveAccessLogs(ctx) })
	g.Go(func() error { return a.serveAPI(ctx) })
	if a.cfg.MetricsAddress != "" {
		g.Go(func() error { return a.serveMetrics(ctx) })
	}
	for _, run := range append(node.run, extra...) {
		g.Go(func() error { return run(ctx) })
	}
	g.Go(func() error { return a.src.run(ctx) })
	g.Go(func() error { return a.policyLoop(ctx) })
	g.Go(func() error { return a.proxyLoop(ctx) })
	if runProxy != nil {
		g.Go(func() error { return runProxy(ctx) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (a *Agent) pinRoot() string {
	if a.cfg.BPFRoot != "" {
		return a.cfg.BPFRoot
	}
	return datapath.DefaultPinRoot
}

// openKernel opens the real node: the datapath over the pinned maps, the
// optional sock_ops and XDP pieces, the endpoint manager and the proxy's
// policy routing. On failure it closes what it opened.
func (a *Agent) openKernel(ctx context.Context) (_ *nodeParts, err error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	dcfg := datapath.DefaultConfig()
	dcfg.PinRoot = a.pinRoot()
	dcfg.Attach = datapath.AttachMode(a.cfg.Attach)
	dcfg.EventsPerSecond = a.cfg.EventsPerSecond
	dcfg.VerdictEvents = a.cfg.VerdictEvents
	dcfg.CTMaxEntries = a.cfg.ConntrackMaxEntries
	dcfg.NoLocalDelivery = !*a.cfg.LocalDelivery
	dcfg.Logger = a.log.With("component", "datapath")
	dp, err := datapath.Open(dcfg)
	if err != nil {
		return nil, fmt.Errorf("open datapath: %w", err)
	}
	closers = append(closers, func() { dp.Close() })
	if err := a.setUplinks(dp); err != nil {
		return nil, err
	}
	ct := &ctCollector{dp: dp, log: a.log.With("component", "conntrack"), interval: time.Duration(a.cfg.ConntrackGCInterval)}
	a.reg.MustRegister(ct, &mapPressureCollector{dp: dp, ct: ct}, mapUpdatesCollector{dp})
	node := &nodeParts{maps: dp, close: closeAll}
	node.run = append(node.run,
		func(ctx context.Context) error { return dp.ReadEvents(ctx, a.onEvent) },
		ct.run)

	if *a.cfg.TCPHealth {
		run, closeTCP, err := a.startTCPHealth(dcfg.PinRoot)
		if err != nil {
			return nil, err
		}
		closers = append(closers, closeTCP)
		node.run = append(node.run, run)
	}
	if a.cfg.ServiceTranslation {
		run, closeSvc, err := a.startServices(dcfg.PinRoot)
		if err != nil {
			return nil, err
		}
		closers = append(closers, closeSvc)
		node.run = append(node.run, run)
	}
	if len(a.cfg.PrefilterDeny) > 0 {
		closePF, err := a.startPrefilter(dcfg.PinRoot)
		if err != nil {
			return nil, err
		}
		closers = append(closers, closePF)
	}

	ecfg := datapath.DefaultEndpointConfig()
	if a.cfg.NetnsPrefix != "" {
		ecfg.NetnsPrefix = a.cfg.NetnsPrefix
	}
	hostNs, hostNsPath, err := pinHostNetns()
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { hostNs.Close() })
	ecfg.HostNetns = hostNsPath
	eps, err := datapath.NewEndpointManager(ecfg, a.log.With("component", "endpoints"))
	if err != nil {
		return nil, fmt.Errorf("create endpoint manager: %w", err)
	}
	closers = append(closers, func() { eps.Close() })
	node.plumb = eps
	// A host-wide ip_forward change resets the veths' forwarding (datapath.KeepForwarding).
	node.run = append(node.run, func(ctx context.Context) error {
		return eps.KeepForwarding(ctx, a.log.With("component", "forwarding"))
	})
	if err := eps.EnsureProxyRouting(ctx); err != nil {
		return nil, fmt.Errorf("install proxy routing: %w", err)
	}
	// Last: nothing fails after its listeners are bound (dns.go).
	a.live = dp
	if err := a.newDNSProxy(ctx); err != nil {
		return nil, err
	}
	node.run = append(node.run, a.runDNSProxy)
	return node, nil
}

// policyLoop refreshes the source when it says it changed (Kubernetes) or
// every PollInterval (files), and reconciles on every change (and after a
// failed pass: the ticker retries). Nothing is reconciled before the source
// has its complete initial view: until then the maps keep what the pins
// hold. Waiting for the proxy is proxyLoop's job, never this one's.
func (a *Agent) policyLoop(ctx context.Context) error {
	t := time.NewTicker(time.Duration(a.cfg.PollInterval))
	defer t.Stop()
	full := true // the first pass, and a pass after a failed one
	for {
		a.compMu.Lock()
		a.confirmApplied()
		a.compMu.Unlock()
		if !a.src.synced() {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			case <-a.src.changed():
			}
			continue
		}
		a.compMu.Lock()
		changed := a.src.refresh(ctx, a)
		a.compMu.Unlock()
		if changed || full {
			err := a.reconcile(ctx)
			full = err != nil
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				a.log.Error("reconcile", "err", err)
				a.setLastError(err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.src.changed():
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

// newProxy builds the configured HTTP proxy, to run beside the agent (nil
// for an external one). Its listeners come from the agent's xDS server;
// until it ACKs them, redirected traffic is dropped.
func (a *Agent) newProxy() (func(context.Context) error, error) {
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
			// And towards destinations routed through an uplink.
			UplinkDestination: a.viaUplink,
		}, a.log.With("component", "l7proxy"), a.reg)
		if err != nil {
			return nil, fmt.Errorf("create embedded proxy: %w", err)
		}
		return p.Run, nil
	case ProxyEnvoy:
		b, err := envoy.Bootstrap(envoy.BootstrapConfig{
			NodeName:        a.cfg.NodeName,
			XDSSocket:       xdsSock,
			AccessLogSocket: alsSock,
			AdminSocket:     adminSock,
		})
		if err != nil {
			return nil, fmt.Errorf("build envoy bootstrap: %w", err)
		}
		js, err := envoy.BootstrapJSON(b)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(a.cfg.RunDir, EnvoyBootstrap)
		if err := os.WriteFile(path, js, 0o640); err != nil {
			return nil, fmt.Errorf("write envoy bootstrap: %w", err)
		}
		sup, err := envoy.NewSupervisor(envoy.SupervisorConfig{
			Binary:        a.cfg.EnvoyBinary,
			BootstrapPath: path,
			AdminAddr:     adminSock,
			Logger:        a.log.With("component", "envoy"),
			Registerer:    a.reg,
		})
		if err != nil {
			return nil, fmt.Errorf("create envoy supervisor: %w", err)
		}
		return sup.Run, nil
	}
	return nil, nil
}

func (a *Agent) serveAccessLogs(ctx context.Context) error {
	path := filepath.Join(a.cfg.RunDir, AccessLogSocket)
	ln, err := listenUnix(path)
	if err != nil {
		return fmt.Errorf("listen access-log socket: %w", err)
	}
	srv := grpc.NewServer()
	a.als.Register(srv)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		srv.Stop()
		return fmt.Errorf("serve access logs: %w", err)
	case <-ctx.Done():
	}
	// The proxies keep their access-log streams open: a graceful stop
	// alone would wait for them forever.
	xds.StopServer(srv, a.alsGrace)
	<-errc
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
