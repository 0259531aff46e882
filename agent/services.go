package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/k8s"
	"github.com/moatnet/moat/policy"
)

// services.go wires Service translation (Config.ServiceTranslation): the
// datapath's sock_addr programs (datapath.SockAddr), fed with the Service
// table (Kubernetes: k8s.ServiceWatch; standalone: Config.Services) and
// scoped to the network namespaces of the endpoints reconcile attaches.
// The table is written only once the feed has its complete view: until
// then the pinned table of the previous agent stays in force.

// StaticService is a standalone Service: a frontend and its backends.
type StaticService struct {
	// Frontend is "VIP:port/proto" (proto tcp or udp; IPv6 in brackets).
	Frontend string `json:"frontend"`
	// Backends are "address:port".
	Backends []string `json:"backends,omitempty"`
}

// parseFrontend parses "10.96.0.10:80/tcp".
func parseFrontend(s string) (datapath.Frontend, error) {
	ap, proto, ok := strings.Cut(s, "/")
	if !ok {
		return datapath.Frontend{}, fmt.Errorf("%q: want address:port/proto", s)
	}
	a, err := netip.ParseAddrPort(ap)
	if err != nil {
		return datapath.Frontend{}, fmt.Errorf("%q: %w", s, err)
	}
	f := datapath.Frontend{Addr: a.Addr(), Port: a.Port()}
	switch strings.ToLower(proto) {
	case "tcp":
		f.Proto = policy.ProtoTCP
	case "udp":
		f.Proto = policy.ProtoUDP
	default:
		return datapath.Frontend{}, fmt.Errorf("%q: protocol %q: want tcp or udp", s, proto)
	}
	return f, nil
}

// staticServices turns Config.Services into the table, naming the field
// of every problem.
func staticServices(list []StaticService) (datapath.Services, []error) {
	var errs []error
	out := datapath.Services{}
	for i, s := range list {
		f, err := parseFrontend(s.Frontend)
		if err != nil {
			errs = append(errs, fmt.Errorf("services[%d].frontend: %w", i, err))
			continue
		}
		if _, dup := out[f]; dup {
			errs = append(errs, fmt.Errorf("services[%d].frontend: %s listed twice", i, f))
			continue
		}
		var bes []netip.AddrPort
		for j, b := range s.Backends {
			ap, err := netip.ParseAddrPort(b)
			if err != nil {
				errs = append(errs, fmt.Errorf("services[%d].backends[%d]: %q: %w", i, j, b, err))
				continue
			}
			bes = append(bes, ap)
		}
		one := datapath.Services{f: bes}
		if err := one.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("services[%d]: %w", i, err))
			continue
		}
		out[f] = bes
	}
	return out, errs
}

func (c Config) validateServices() []error {
	var errs []error
	if len(c.Services) > 0 {
		if c.Kubernetes() {
			errs = append(errs, errors.New("services: only in standalone mode (Kubernetes mode reads Services from the API)"))
		}
		if !c.ServiceTranslation {
			errs = append(errs, errors.New("services: set serviceTranslation: true to translate them"))
		}
		_, perr := staticServices(c.Services)
		errs = append(errs, perr...)
	}
	if c.ServiceCgroup != "" && !strings.HasPrefix(c.ServiceCgroup, "/") {
		errs = append(errs, fmt.Errorf("serviceCgroup: %q is not an absolute path", c.ServiceCgroup))
	}
	return errs
}

// serviceState is the agent's side of Service translation.
type serviceState struct {
	sa  *datapath.SockAddr
	log *slog.Logger

	mu sync.Mutex
	// netns: the netns path reconcile last saw for each endpoint; cookies:
	// the cookie in the scope for it (with the nsfs inode it was read
	// from, so a netns made again under the same path is read again).
	netns   map[datapath.EndpointKey]string
	cookies map[datapath.EndpointKey]nsCookie
}

type nsCookie struct {
	dev, ino uint64
	cookie   uint64
}

// startServices opens and attaches the sock_addr programs and returns the
// goroutine that feeds them the Service table.
func (a *Agent) startServices(pinRoot string) (func(context.Context) error, func(), error) {
	sa, err := datapath.OpenSockAddr(datapath.SockAddrConfig{
		PinRoot: pinRoot, Cgroup: a.cfg.ServiceCgroup, Logger: a.log.With("component", "services"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open service translation (sock_addr): %w", err)
	}
	st := &serviceState{sa: sa, log: a.log.With("component", "services"),
		netns: map[datapath.EndpointKey]string{}, cookies: map[datapath.EndpointKey]nsCookie{}}
	var run func(context.Context) error
	if a.cfg.Kubernetes() {
		rc, err := a.cfg.RESTConfig()
		if err == nil {
			var cs kubernetes.Interface
			if cs, err = kubernetes.NewForConfig(rc); err == nil {
				var w *k8s.ServiceWatch
				if w, err = k8s.NewServiceWatch(cs, a.cfg.NodeName, st.log); err == nil {
					run = func(ctx context.Context) error { return st.runKube(ctx, w) }
				}
			}
		}
		if err != nil {
			sa.Close()
			return nil, nil, fmt.Errorf("create service watch: %w", err)
		}
	} else {
		svcs, errs := staticServices(a.cfg.Services)
		if err := errors.Join(errs...); err != nil {
			sa.Close()
			return nil, nil, err
		}
		if err := sa.SetServices(svcs); err != nil {
			sa.Close()
			return nil, nil, err
		}
		run = func(context.Context) error { return nil }
	}
	if err := sa.Attach(""); err != nil {
		sa.Close()
		return nil, nil, fmt.Errorf("attach service translation: %w", err)
	}
	a.svc = st
	a.reg.MustRegister(&serviceCollector{sa: sa})
	return run, func() { sa.Close() }, nil
}

// runKube writes the watch's table whenever it changes, once the watch has
// its complete view.
func (st *serviceState) runKube(ctx context.Context, w *k8s.ServiceWatch) error {
	errc := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); <-errc }()
	go func() { errc <- w.Run(wctx) }()
	if !w.WaitForCacheSync(ctx) {
		return nil
	}
	for {
		if err := st.sa.SetServices(kubeServices(w.Table())); err != nil {
			// A bad entry from the API or a full map: the rest of the
			// table is not written; the next change retries.
			st.log.Error("write service table", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.Changed():
		}
	}
}

// kubeServices converts the watch's table; an entry the datapath would
// refuse (a backend of the other family) is dropped with its backends.
func kubeServices(t []k8s.ServiceEntry) datapath.Services {
	out := datapath.Services{}
	for _, e := range t {
		f := datapath.Frontend{Addr: e.Frontend.Addr, Port: e.Frontend.Port, Proto: e.Frontend.Proto}
		if (datapath.Services{f: e.Backends}).Validate() != nil {
			continue
		}
		out[f] = e.Backends
	}
	return out
}

// noteEndpointNetns records where an attached endpoint's netns is
// (reconcile, for each endpoint it attached).
func (a *Agent) noteEndpointNetns(k datapath.EndpointKey, path string) {
	if a.svc == nil {
		return
	}
	a.svc.mu.Lock()
	defer a.svc.mu.Unlock()
	if path != "" {
		a.svc.netns[k] = path
	}
}

// syncServiceScope makes the translation scope the netns of the desired
// endpoints: an endpoint whose netns cannot be read now keeps the cookie
// it had; endpoints no longer desired leave the scope.
func (a *Agent) syncServiceScope(desired map[datapath.EndpointKey]policy.Endpoint) error {
	st := a.svc
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	var errs []error
	for k := range st.netns {
		if _, ok := desired[k]; !ok {
			delete(st.netns, k)
		}
	}
	for k := range st.cookies {
		if _, ok := desired[k]; !ok {
			delete(st.cookies, k)
		}
	}
	for k, path := range st.netns {
		var fi unix.Stat_t
		if err := unix.Stat(path, &fi); err != nil {
			errs = append(errs, fmt.Errorf("service scope: endpoint %s: stat netns %s: %w", k, path, err))
			continue
		}
		if c, ok := st.cookies[k]; ok && c.dev == fi.Dev && c.ino == fi.Ino {
			continue
		}
		cookie, err := datapath.NetnsCookie(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("service scope: endpoint %s: %w", k, err))
			continue
		}
		st.cookies[k] = nsCookie{dev: fi.Dev, ino: fi.Ino, cookie: cookie}
	}
	for k := range desired {
		if _, ok := st.cookies[k]; !ok {
			st.log.Debug("endpoint outside the service scope: its netns is unknown (not a named netns)", "endpoint", k.String())
		}
	}
	set := map[uint64]bool{}
	for _, c := range st.cookies {
		set[c.cookie] = true
	}
	if err := st.sa.SetScope(slices.Collect(maps.Keys(set))); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// serviceCollector exports the translation counters at scrape time.
type serviceCollector struct{ sa *datapath.SockAddr }

var (
	serviceCalls = prometheus.NewDesc("moat_service_translation_calls_total",
		"Socket calls that Service translation acted on, by what it did: translated (connect or sendmsg sent to a backend), refused (a frontend without backends), missing_slot (a backend slot vanished during an update and was looked up again), rev_nat (a datagram's source shown as the frontend), peer (getpeername answered with the frontend).",
		[]string{"result"}, nil)
	serviceFrontends = prometheus.NewDesc("moat_service_frontends",
		"Service frontends installed for translation.", nil, nil)
	serviceScope = prometheus.NewDesc("moat_service_scope_netns",
		"Network namespaces whose sockets Service translation serves.", nil, nil)
)

func (c *serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serviceCalls
	ch <- serviceFrontends
	ch <- serviceScope
}

func (c *serviceCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.sa.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(serviceCalls, err)
	} else {
		for r, v := range map[string]uint64{"translated": st.Translated, "refused": st.Refused, "missing_slot": st.MissingSlot, "rev_nat": st.RevNAT, "peer": st.Peer} {
			ch <- prometheus.MustNewConstMetric(serviceCalls, prometheus.CounterValue, float64(v), r)
		}
	}
	if svcs, err := c.sa.InstalledServices(); err != nil {
		ch <- prometheus.NewInvalidMetric(serviceFrontends, err)
	} else {
		ch <- prometheus.MustNewConstMetric(serviceFrontends, prometheus.GaugeValue, float64(len(svcs)))
	}
	ch <- prometheus.MustNewConstMetric(serviceScope, prometheus.GaugeValue, float64(len(c.sa.Scope())))
}
