package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/policy"
)

// Names of the bench's endpoints (netns <prefix>bench-client/-server).
const (
	benchNamespace = "bench"
	clientName     = "client"
	serverName     = "server"
	netnsDir       = "/var/run/netns"
)

// env is the bench's world: a scratch host netns, two endpoints, servers in
// the server netns, and a loaded (not attached) datapath.
type env struct {
	cfg Config
	log *slog.Logger

	hostNs   string // netns name
	mgr      *datapath.EndpointManager
	clientEp policy.Endpoint
	serverEp policy.Endpoint
	client   datapath.EndpointLink
	server   datapath.EndpointLink
	dp       *datapath.Datapath

	httpSrv   *http.Server
	httpWG    sync.WaitGroup
	listeners []net.Listener
}

func (e *env) hostNsPath() string { return filepath.Join(netnsDir, e.hostNs) }

func (e *env) ifaces() map[datapath.EndpointKey]int {
	return map[datapath.EndpointKey]int{
		{Namespace: benchNamespace, Name: clientName}: e.client.HostIfindex,
		{Namespace: benchNamespace, Name: serverName}: e.server.HostIfindex,
	}
}

// setup removes leftovers of an earlier run and builds the world. On error
// it tears down what it built.
func setup(ctx context.Context, cfg Config, log *slog.Logger) (*env, error) {
	for _, tool := range []string{"ip", "nsenter", "wrk", "iperf3", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("find %s: %w", tool, err)
		}
	}
	e := &env{
		cfg:      cfg,
		log:      log,
		hostNs:   cfg.NetnsPrefix + "host",
		clientEp: policy.Endpoint{Namespace: benchNamespace, Name: clientName, IPv4: clientAddr()},
		serverEp: policy.Endpoint{Namespace: benchNamespace, Name: serverName, IPv4: serverAddr},
	}
	if err := e.removeStale(ctx); err != nil {
		return nil, err
	}
	if err := e.build(ctx); err != nil {
		return nil, errors.Join(err, e.teardown())
	}
	return e, nil
}

func (e *env) build(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", e.hostNs).CombinedOutput(); err != nil {
		return fmt.Errorf("create host netns %s: %w: %s", e.hostNs, err, strings.TrimSpace(string(out)))
	}
	mgr, err := datapath.NewEndpointManager(datapath.EndpointConfig{NetnsPrefix: e.cfg.NetnsPrefix, HostNetns: e.hostNsPath()}, e.log)
	if err != nil {
		return fmt.Errorf("create endpoint manager: %w", err)
	}
	e.mgr = mgr
	if e.client, err = mgr.Ensure(ctx, e.clientEp); err != nil {
		return err
	}
	if e.server, err = mgr.Ensure(ctx, e.serverEp); err != nil {
		return err
	}
	if err := e.reuseTimeWait(); err != nil {
		return err
	}
	e.log.Info("endpoints ready", "host_netns", e.hostNs,
		"client", e.client.HostIfname, "client_netns", e.client.Netns,
		"server", e.server.HostIfname, "server_netns", e.server.Netns)
	dp, err := datapath.Open(datapath.Config{
		PinRoot: e.cfg.PinRoot, Attach: datapath.AttachTCX,
		EventsPerSecond: 100, EventsBurst: 100, Logger: e.log,
	})
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	e.dp = dp
	return e.startHTTP()
}

// reuseTimeWait lets the client netns reuse ports in TIME_WAIT
// (net.ipv4.tcp_tw_reuse=1), as load generators are set up. wrk closes
// some connections before the server does, and those ports stay in
// TIME_WAIT for a minute. Without reuse the port search of connect() grew
// slower as they piled up (req/s fell by a fifth over nine 3 s runs of the
// same scenario) and collapsed to a few hundred req/s once half of the port
// range was taken: drift and noise that no ordering of the scenarios
// cancels.
func (e *env) reuseTimeWait() error {
	err := e.mgr.Do(e.clientEp, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("set tcp_tw_reuse in the client netns: %w", err)
	}
	return nil
}

// startHTTP serves a tiny response on httpPort and deniedPort inside the
// server netns; keep-alives are off, so every request is a connection.
func (e *env) startHTTP() error {
	err := e.mgr.Do(e.serverEp, func() error {
		for _, port := range []uint16{httpPort, deniedPort} {
			l, err := net.Listen("tcp4", netip.AddrPortFrom(serverAddr, port).String())
			if err != nil {
				return err
			}
			e.listeners = append(e.listeners, l)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listen in server netns: %w", err)
	}
	body := []byte("ok\n")
	e.httpSrv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	e.httpSrv.SetKeepAlivesEnabled(false)
	for _, l := range e.listeners {
		e.httpWG.Go(func() { _ = e.httpSrv.Serve(l) })
	}
	return nil
}

// attach syncs plan and attaches the programs to both host veths.
func (e *env) attach(plan *policy.Plan) error {
	if err := e.dp.Sync(plan, e.ifaces(), nil); err != nil {
		return err
	}
	return e.mgr.DoHost(func() error {
		for _, ifindex := range []int{e.client.HostIfindex, e.server.HostIfindex} {
			if err := e.dp.Attach(ifindex); err != nil {
				return err
			}
		}
		return nil
	})
}

// detach removes the programs from both host veths.
func (e *env) detach() error {
	return e.mgr.DoHost(func() error {
		return errors.Join(e.dp.Detach(e.client.HostIfindex), e.dp.Detach(e.server.HostIfindex))
	})
}

// teardown removes everything the bench made; it is safe on a partly built
// env and runs to the end whatever fails.
func (e *env) teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if e.httpSrv != nil {
		errs = append(errs, e.httpSrv.Close())
		e.httpWG.Wait()
	} else {
		for _, l := range e.listeners {
			_ = l.Close()
		}
	}
	if e.dp != nil {
		errs = append(errs, e.dp.Close())
	}
	errs = append(errs, removePins(e.cfg.PinRoot))
	if e.mgr != nil {
		errs = append(errs, iptablesRemove(ctx, e.hostNsPath()))
		errs = append(errs, e.mgr.Remove(ctx, e.clientEp), e.mgr.Remove(ctx, e.serverEp))
		errs = append(errs, e.mgr.Close())
	}
	errs = append(errs, deleteNetns(ctx, e.hostNs))
	return errors.Join(errs...)
}

// removeStale clears what a crashed earlier run left: the endpoints, the
// host netns (with any iptables rules in it) and the pins.
func (e *env) removeStale(ctx context.Context) error {
	var errs []error
	hostNs := ""
	if _, err := os.Stat(e.hostNsPath()); err == nil {
		hostNs = e.hostNsPath()
		e.log.Warn("removing leftovers of an earlier run", "host_netns", e.hostNs)
	}
	mgr, err := datapath.NewEndpointManager(datapath.EndpointConfig{NetnsPrefix: e.cfg.NetnsPrefix, HostNetns: hostNs}, e.log)
	if err != nil {
		return fmt.Errorf("create endpoint manager: %w", err)
	}
	errs = append(errs, mgr.Remove(ctx, e.clientEp), mgr.Remove(ctx, e.serverEp), mgr.Close())
	if hostNs != "" {
		errs = append(errs, deleteNetns(ctx, e.hostNs))
	}
	errs = append(errs, removePins(e.cfg.PinRoot))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove leftovers of an earlier run: %w", err)
	}
	return nil
}

func deleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("delete netns %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removePins unpins the bench's TCX links (detaching them) and removes its
// pin root. The bench attaches with TCX only, so there are no tc filters.
func removePins(root string) error {
	var errs []error
	dir := filepath.Join(root, "links")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read pinned links: %w", err))
	}
	for _, ent := range entries {
		path := filepath.Join(dir, ent.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", path, err))
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	if err := os.RemoveAll(root); err != nil {
		errs = append(errs, fmt.Errorf("remove pin root %s: %w", root, err))
	}
	return errors.Join(errs...)
}
