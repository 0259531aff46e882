package dashboards_test

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/dashboards"
	"github.com/moatnet/moat/dnsproxy"
	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/internal/metricslint"
	"github.com/moatnet/moat/k8s/operator"
	"github.com/moatnet/moat/l7proxy"
	"github.com/moatnet/moat/policy"
)

// registeredAtRun are the agent's scrape-time collectors that Agent.Run
// registers once the datapath is open (they read BPF maps), so that no
// in-process registry has them. Each must still be declared in agent/
// with exactly this name (checked below); the e2e dashboards test finds
// them on a real agent's /metrics (all but the prefilter's, which needs
// prefilterInterfaces).
var registeredAtRun = map[string][]string{
	"moat_bpf_map_pressure":                {"map_name"},
	"moat_ct_gc_removed_entries_total":     nil,
	"moat_ct_live_entries":                 {"protocol"},
	"moat_datapath_map_updates_total":      {"map"},
	"moat_prefilter_dropped_packets_total": {"prefix"},
}

// targetLabels are the labels Prometheus adds to every series (the
// dashboards' cluster label is an external or target label).
var targetLabels = []string{"cluster", "instance", "job"}

var (
	descNameRE   = regexp.MustCompile(`fqName: "([^"]*)"`)
	descLabelsRE = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	descConstRE  = regexp.MustCompile(`constLabels: \{([^}]*)\}`)
)

// describe adds every metric a registry describes, with its label names,
// to set.
func describe(t *testing.T, r interface{ Describe(chan<- *prometheus.Desc) }, set map[string][]string) {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		r.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		ds := d.String()
		m := descNameRE.FindStringSubmatch(ds)
		if m == nil {
			t.Fatalf("descriptor without a name: %s", ds)
		}
		var labels []string
		if l := descLabelsRE.FindStringSubmatch(ds); l != nil {
			for n := range strings.SplitSeq(l[1], ",") {
				if n = strings.TrimSpace(n); n != "" {
					labels = append(labels, n)
				}
			}
		}
		if l := descConstRE.FindStringSubmatch(ds); l != nil {
			for kv := range strings.SplitSeq(l[1], ",") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					labels = append(labels, strings.TrimSpace(k))
				}
			}
		}
		set[m[1]] = append(set[m[1]], labels...)
	}
}

// registeredMetrics builds what moat registers, from the components
// themselves: the agent's registry as agent.New makes it (runtime, flow
// handlers under FullMetrics, xDS server, agent gauges), the embedded
// proxy, the Envoy supervisor and the DNS proxy on it, and the operator's
// registry. Names come from the registries' descriptors, so a metric with
// no sample yet counts.
func registeredMetrics(t *testing.T) map[string][]string {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := agent.New(agent.Config{
		Policies:  filepath.Join(dir, "policies"),
		Endpoints: filepath.Join(dir, "endpoints.yaml"),
		RunDir:    filepath.Join(dir, "run"),
		Metrics:   dashboards.HubbleMetrics,
	}, log)
	if err != nil {
		t.Fatalf("new agent: %v", err)
	}
	reg := a.Registry()
	if _, err := l7proxy.New(l7proxy.Config{
		Node: "dash", XDSTarget: filepath.Join(dir, "xds.sock"), AccessLogTarget: filepath.Join(dir, "als.sock"),
		AdminAddr: filepath.Join(dir, "admin.sock"),
	}, log, reg); err != nil {
		t.Fatalf("new l7proxy: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envoy.NewSupervisor(envoy.SupervisorConfig{
		Binary: self, BootstrapPath: filepath.Join(dir, "bootstrap.json"), Logger: log, Registerer: reg,
	}); err != nil {
		t.Fatalf("new envoy supervisor: %v", err)
	}
	if _, err := dnsproxy.New(dnsproxy.Config{
		Listen:      []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Transparent: true,
		Endpoints:   dnsproxy.EndpointsFunc(func(netip.Addr) (dnsproxy.EndpointInfo, bool) { return dnsproxy.EndpointInfo{}, false }),
		Remotes:     dnsproxy.RemotesFunc(func(netip.Addr) policy.ID { return 0 }),
		Logger:      log,
		Registerer:  reg,
	}); err != nil {
		t.Fatalf("new dns proxy: %v", err)
	}
	opReg := prometheus.NewRegistry()
	if _, err := operator.New(operator.Config{REST: &rest.Config{Host: "https://127.0.0.1:1"}, Namespace: "kube-system", Registry: opReg, Logger: log}); err != nil {
		t.Fatalf("new operator: %v", err)
	}
	set := map[string][]string{}
	for _, r := range []metricslint.Registry{reg, opReg} {
		describe(t, r, set)
		// The lint's names: every described metric, with or without samples.
		_, names, err := metricslint.Lint(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if _, ok := set[n]; !ok {
				t.Errorf("metricslint saw %s, which no descriptor named", n)
			}
		}
	}
	for n, labels := range registeredAtRun {
		set[n] = labels
	}
	return set
}

// TestRunTimeCollectorsDeclared: each name in registeredAtRun is declared
// by a prometheus.NewDesc in agent/ (so the list cannot name a metric that
// does not exist).
func TestRunTimeCollectorsDeclared(t *testing.T) {
	files, err := filepath.Glob("../agent/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	for n, labels := range registeredAtRun {
		want := "nil"
		if len(labels) > 0 {
			want = `\[\]string\{"` + strings.Join(labels, `", "`) + `"\}`
		}
		re := regexp.MustCompile(`prometheus\.NewDesc\("` + regexp.QuoteMeta(n) + `",\s*"(?:[^"\\]|\\.)*",\s*` + want + `,`)
		if !re.MatchString(src.String()) {
			t.Errorf("%s: no prometheus.NewDesc(%q, help, %s, ...) in agent/", n, n, want)
		}
	}
}

// Known reports whether a query's metric name is one moat registers: the
// name itself, or a histogram's _bucket, _sum or _count series.
func known(set map[string][]string, name string) bool {
	_, ok := labelsOf(set, name)
	return ok
}

// labelsOf returns the label names of a series name (a histogram's
// _bucket series has le too).
func labelsOf(set map[string][]string, name string) ([]string, bool) {
	if l, ok := set[name]; ok {
		return l, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if l, ok := set[base]; ok {
				if suf == "_bucket" {
					l = append(slices.Clone(l), "le")
				}
				return l, true
			}
		}
	}
	return nil, false
}

// TestEveryQueryUsesRegisteredMetrics extracts every metric name from every
// panel query and every variable query of every committed dashboard and
// checks that moat registers it.
func TestEveryQueryUsesRegisteredMetrics(t *testing.T) {
	set := registeredMetrics(t)
	files, err := filepath.Glob("../charts/moat/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in charts/moat/dashboards (%v)", err)
	}
	used := map[string]bool{}
	queries := 0
	for _, f := range files {
		js, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := dashboards.Parse(js)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		exprs := map[string]string{}
		for _, qu := range p.Queries {
			exprs["panel "+qu.Panel+" "+qu.RefID] = qu.Expr
		}
		for _, v := range p.Variables {
			if v.Type == "query" {
				exprs["variable "+v.Name] = v.Query
			}
		}
		for where, expr := range exprs {
			queries++
			names, err := dashboards.MetricNames(expr)
			if err != nil {
				t.Errorf("%s: %s: %v", filepath.Base(f), where, err)
				continue
			}
			if len(names) == 0 {
				t.Errorf("%s: %s: no metric in %q", filepath.Base(f), where, expr)
			}
			have := slices.Clone(targetLabels)
			for _, n := range names {
				used[n] = true
				l, ok := labelsOf(set, n)
				if !ok {
					t.Errorf("%s: %s: metric %s is not registered by moat", filepath.Base(f), where, n)
				}
				have = append(have, l...)
			}
			labels, err := dashboards.LabelNames(expr)
			if err != nil {
				t.Errorf("%s: %s: %v", filepath.Base(f), where, err)
			}
			for _, l := range labels {
				if !slices.Contains(have, l) {
					t.Errorf("%s: %s: label %s is on none of its metrics %v (labels %v)", filepath.Base(f), where, l, names, have)
				}
			}
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	slices.Sort(names)
	t.Logf("%d queries over %d dashboards use %d metrics, all registered (of %d registered): %s", queries, len(files), len(names), len(set), strings.Join(names, " "))
	// The check can fail: a name moat does not register is caught.
	if known(set, "hubble_http_requests_totals") || known(set, "moat_nonexistent_total") || !known(set, "moat_tcp_rtt_seconds_bucket") {
		t.Error("known() accepts names moat does not register, or rejects a histogram's buckets")
	}
	if l, _ := labelsOf(set, "moat_tcp_events_total"); !slices.Equal(l, []string{"kind"}) {
		t.Errorf("labels of moat_tcp_events_total: %v, want [kind]", l)
	}
	if l, _ := labelsOf(set, "hubble_http_request_duration_seconds_bucket"); !slices.Contains(l, "destination_workload") || !slices.Contains(l, "le") {
		t.Errorf("labels of hubble_http_request_duration_seconds_bucket: %v, want the context labels and le", l)
	}
}
