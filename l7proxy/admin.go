package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Envoy's /ready answers.
const (
	stateLive            = "LIVE"
	statePreInitializing = "PRE_INITIALIZING"
)

func listenAdmin(addr string) (net.Listener, error) {
	if isUnixPath(addr) {
		path := strings.TrimPrefix(addr, "unix:")
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale admin socket %s: %w", path, err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen on admin socket %s: %w", path, err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("restrict admin socket %s: %w", path, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on admin address %s: %w", addr, err)
	}
	return ln, nil
}

// adminHandler answers the admin endpoints `moat envoy` reads.
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if p.live.Load() {
			fmt.Fprintln(w, stateLive)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, statePreInitializing)
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		dump, err := p.configDump(r.URL.Query().Get("resource"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(dump)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	startedAt := p.cfg.Clock()
	mux.HandleFunc("GET /server_info", func(w http.ResponseWriter, _ *http.Request) {
		state := adminv3.ServerInfo_PRE_INITIALIZING
		if p.live.Load() {
			state = adminv3.ServerInfo_LIVE
		}
		up := durationpb.New(p.cfg.Clock().Sub(startedAt).Truncate(time.Second))
		info := &adminv3.ServerInfo{
			Version:            "moat-l7proxy",
			State:              state,
			UptimeCurrentEpoch: up,
			UptimeAllEpochs:    up,
			Node:               &corev3.Node{Id: p.cfg.Node, Cluster: p.cfg.Cluster},
		}
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(info)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.Handle("GET /stats/prometheus", promhttp.HandlerFor(p.stats.reg, promhttp.HandlerOpts{}))
	return mux
}

func (p *Proxy) serveAdmin(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: p.errLog}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve admin interface: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-errc
	if isUnixPath(p.cfg.AdminAddr) {
		_ = os.Remove(strings.TrimPrefix(p.cfg.AdminAddr, "unix:"))
	}
	return nil
}

// configDump renders the dynamic resources like Envoy's /config_dump; with
// resource set (dynamic_listeners, dynamic_active_clusters,
// dynamic_route_configs), one config per resource of that field.
func (p *Proxy) configDump(resource string) (*adminv3.ConfigDump, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lds, rds, cds := p.types[listenerType], p.types[routeType], p.types[clusterType]

	ld := &adminv3.ListenersConfigDump{VersionInfo: lds.version}
	for _, name := range names(lds) {
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: name, ErrorState: lds.errors[name]}
		if r, ok := lds.resources[name]; ok {
			dl.ActiveState = &adminv3.ListenersConfigDump_DynamicListenerState{
				VersionInfo: r.version, Listener: r.raw, LastUpdated: timestamppb.New(r.updated),
			}
		}
		ld.DynamicListeners = append(ld.DynamicListeners, dl)
	}
	cd := &adminv3.ClustersConfigDump{VersionInfo: cds.version}
	for _, name := range names(cds) {
		dc := &adminv3.ClustersConfigDump_DynamicCluster{ErrorState: cds.errors[name]}
		if r, ok := cds.resources[name]; ok {
			dc.VersionInfo, dc.Cluster, dc.LastUpdated = r.version, r.raw, timestamppb.New(r.updated)
		}
		cd.DynamicActiveClusters = append(cd.DynamicActiveClusters, dc)
	}
	rd := &adminv3.RoutesConfigDump{}
	for _, name := range names(rds) {
		dr := &adminv3.RoutesConfigDump_DynamicRouteConfig{ErrorState: rds.errors[name]}
		if r, ok := rds.resources[name]; ok {
			dr.VersionInfo, dr.RouteConfig, dr.LastUpdated = r.version, r.raw, timestamppb.New(r.updated)
		}
		rd.DynamicRouteConfigs = append(rd.DynamicRouteConfigs, dr)
	}

	var msgs []proto.Message
	switch resource {
	case "":
		msgs = []proto.Message{cd, ld, rd}
	case "dynamic_listeners":
		for _, m := range ld.DynamicListeners {
			msgs = append(msgs, m)
		}
	case "dynamic_active_clusters":
		for _, m := range cd.DynamicActiveClusters {
			msgs = append(msgs, m)
		}
	case "dynamic_route_configs":
		for _, m := range rd.DynamicRouteConfigs {
			msgs = append(msgs, m)
		}
	default:
		return nil, fmt.Errorf("config dump: unsupported resource %q", resource)
	}
	dump := &adminv3.ConfigDump{}
	for _, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			return nil, fmt.Errorf("config dump: pack %T: %w", m, err)
		}
		dump.Configs = append(dump.Configs, a)
	}
	return dump, nil
}

// names lists the accepted and the rejected resource names of ts, sorted.
func names(ts *typeState) []string {
	out := make([]string, 0, len(ts.resources)+len(ts.errors))
	for n := range ts.resources {
		out = append(out, n)
	}
	for n := range ts.errors {
		if _, ok := ts.resources[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
