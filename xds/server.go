package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Server is the xDS server: one go-control-plane snapshot per node, served
// over ADS (SotW and delta) and the per-type discovery services, with ACK and
// NACK tracking. Build it with New; Run serves until its context ends.
type Server struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	cache cache.SnapshotCache
	tr    *tracker

	consistent consistentMemo

	setMu   sync.Mutex // orders version bookkeeping with SetSnapshot
	running atomic.Bool
	ready   chan struct{}
	tcpAddr net.Addr // set before ready is closed
}

// New validates cfg (after applying defaults), registers the metrics on reg
// and returns a Server that is not serving yet.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate xds config: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", "xds")
	return &Server{
		cfg:   cfg,
		log:   logger,
		m:     m,
		cache: cache.NewSnapshotCache(true, cache.IDHash{}, cacheLogger{log: logger}),
		tr:    newTracker(cfg.Clock, logger, m, cfg.VersionHistory),
		ready: make(chan struct{}),
	}, nil
}

// Ready is closed once Run listens on all its addresses.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// TCPAddr is the bound TCP address once Ready is closed, nil without TCPAddr.
func (s *Server) TCPAddr() net.Addr {
	select {
	case <-s.ready:
		return s.tcpAddr
	default:
		return nil
	}
}

// Run listens on the unix socket (and the TCP address, if configured) and
// serves until ctx ends; it then stops the streams, removes the socket and
// returns nil. It returns an error if it cannot listen or a listener fails.
// Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("run xds server: already running")
	}
	var listeners []net.Listener
	unixLn, err := listenUnix(s.cfg.Socket)
	if err != nil {
		return err
	}
	listeners = append(listeners, unixLn)
	if s.cfg.TCPAddr != "" {
		tcpLn, err := net.Listen("tcp", s.cfg.TCPAddr)
		if err != nil {
			_ = unixLn.Close()
			return fmt.Errorf("listen on %s: %w", s.cfg.TCPAddr, err)
		}
		s.tcpAddr = tcpLn.Addr()
		listeners = append(listeners, tcpLn)
	}

	xdsCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	gs := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	register(gs, serverv3.NewServer(xdsCtx, s.cache, callbacks{t: s.tr}))

	eg, egCtx := errgroup.WithContext(ctx)
	for _, ln := range listeners {
		eg.Go(func() error {
			// ErrServerStopped: ctx ended before this Serve began (Serve
			// then closes ln itself); a normal end, like a later stop.
			if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("serve xds on %s: %w", ln.Addr(), err)
			}
			return nil
		})
	}
	eg.Go(func() error {
		<-egCtx.Done()
		cancel() // ends the streams' processing loops
		StopServer(gs, s.cfg.ShutdownGrace)
		return nil
	})
	s.log.Info("serving xDS", "socket", s.cfg.Socket, "tcp", s.tcpAddr)
	close(s.ready)
	return eg.Wait()
}

// StopServer stops a gRPC server gracefully, and forcibly once grace has
// passed (an open stream would otherwise hold GracefulStop forever). The
// agent stops its access-log server the same way.
func StopServer(gs *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		gs.Stop()
		<-done
	}
}

// register adds ADS and the per-type discovery services to gs.
func register(gs *grpc.Server, xs serverv3.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, xs)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, xs)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, xs)
}
