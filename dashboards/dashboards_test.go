package dashboards

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const chartDir = "../charts/moat/dashboards"

// TestCommittedJSONIsCurrent: the JSON in the chart is what the Go
// definitions give, file for file (make generate-dashboards rewrites it).
func TestCommittedJSONIsCurrent(t *testing.T) {
	files, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := filepath.Glob(filepath.Join(chartDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range committed {
		names = append(names, filepath.Base(p))
	}
	for name, js := range files {
		got, err := os.ReadFile(filepath.Join(chartDir, name))
		if err != nil {
			t.Errorf("%s: %v (run make generate-dashboards)", name, err)
			continue
		}
		if !bytes.Equal(got, js) {
			t.Errorf("%s differs from its Go definition: run make generate-dashboards and commit", name)
		}
	}
	for _, n := range names {
		if _, ok := files[n]; !ok {
			t.Errorf("%s/%s is no generated dashboard: run make generate-dashboards", chartDir, n)
		}
	}
	if len(files) != 6 {
		t.Errorf("%d dashboards, want 6 (HTTP, DNS, policy, TCP, agent, operator)", len(files))
	}
}

// TestDashboardsReadBack: every dashboard parses back, has a unique uid,
// every panel has queries with unique refIds, every query's brackets
// balance, and every variable a query uses is defined (or is Grafana's).
func TestDashboardsReadBack(t *testing.T) {
	files, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	for name, js := range files {
		p, err := Parse(js)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := uids[p.UID]; dup {
			t.Errorf("%s and %s share uid %s", name, other, p.UID)
		}
		uids[p.UID] = name
		if len(p.Queries) < 4 {
			t.Errorf("%s: %d queries, want a real dashboard", name, len(p.Queries))
		}
		defined := map[string]bool{"__rate_interval": true, "__range": true, "__interval": true}
		for _, v := range p.Variables {
			defined[v.Name] = true
		}
		if !defined[DatasourceVar] {
			t.Errorf("%s: no %s datasource variable", name, DatasourceVar)
		}
		seen := map[string]bool{}
		for _, qu := range p.Queries {
			key := qu.Panel + "/" + qu.RefID
			if seen[key] {
				t.Errorf("%s: panel %q has two queries %s", name, qu.Panel, qu.RefID)
			}
			seen[key] = true
			if _, err := MetricNames(qu.Expr); err != nil {
				t.Errorf("%s: panel %q: %v", name, qu.Panel, err)
			}
			for _, v := range usedVariables(qu.Expr) {
				if !defined[v] {
					t.Errorf("%s: panel %q uses undefined variable $%s", name, qu.Panel, v)
				}
			}
		}
		for _, v := range p.Variables {
			for _, u := range usedVariables(v.Query) {
				if !defined[u] {
					t.Errorf("%s: variable %s uses undefined variable $%s", name, v.Name, u)
				}
			}
		}
	}
}

// usedVariables lists the Grafana variables ($x, ${x}) in s.
func usedVariables(s string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		j := i + 1
		braced := j < len(s) && s[j] == '{'
		if braced {
			j++
		}
		k := j
		for k < len(s) && isIdent(s[k]) {
			k++
		}
		if k > j {
			out = append(out, s[j:k])
		}
		i = k
	}
	return out
}

// TestHubbleHTTPVariables: the HTTP dashboard has the variables of
// Hubble's "L7 HTTP Metrics by Workload", each a label_values query over
// hubble_http_requests_total of the label it is named after.
func TestHubbleHTTPVariables(t *testing.T) {
	p, err := Parse(mustRender(t)["l7-http-by-workload.json"])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range p.Variables {
		names = append(names, v.Name)
		if v.Type == "query" && !(strings.HasPrefix(v.Query, "label_values(hubble_http_requests_total") && strings.HasSuffix(v.Query, ", "+v.Name+")")) {
			t.Errorf("variable %s: query %q, want label_values(hubble_http_requests_total..., %s)", v.Name, v.Query, v.Name)
		}
	}
	want := []string{"DS_PROMETHEUS", "cluster", "destination_namespace", "destination_workload", "reporter", "source_namespace", "source_workload"}
	if !slices.Equal(names, want) {
		t.Errorf("variables %v, want Hubble's %v", names, want)
	}
	// The quantiles the issue asks for, by source and by destination.
	for _, want := range []string{"histogram_quantile(0.50", "histogram_quantile(0.95", "histogram_quantile(0.99"} {
		n := 0
		for _, qu := range p.Queries {
			if strings.HasPrefix(qu.Expr, want) {
				n++
			}
		}
		if n < 3 {
			t.Errorf("%d queries start with %s, want overall, by source and by destination", n, want)
		}
	}
}

func mustRender(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
		err  string
	}{
		{expr: `up`, want: []string{"up"}},
		{expr: `sum by (le, source_workload) (rate(hubble_http_request_duration_seconds_bucket{cluster=~"${cluster}", a="b}c"}[$__rate_interval]))`,
			want: []string{"hubble_http_request_duration_seconds_bucket"}},
		{expr: `sum(rate(a_total{x="1"}[5m])) by (le) / sum without (instance) (b_total offset 1h)`, want: []string{"a_total", "b_total"}},
		{expr: `histogram_quantile(0.99, sum(rate(x_bucket[1m])) by (le)) > 0.5 and on (instance) group_left (node) y`, want: []string{"x_bucket", "y"}},
		{expr: `topk(10, sum by (query) (increase(hubble_dns_queries_total{rcode="Policy denied"}[$__range])))`, want: []string{"hubble_dns_queries_total"}},
		{expr: `label_values(hubble_http_requests_total{cluster=~"${cluster}"}, destination_namespace)`, want: []string{"hubble_http_requests_total"}},
		{expr: `label_values(moat_endpoints, instance)`, want: []string{"moat_endpoints"}},
		{expr: "a:recorded:rate5m * 1e3 - .5 + b", want: []string{"a:recorded:rate5m", "b"}},
		{expr: `rate(x[5m]`, err: "unclosed"},
		{expr: `rate(x{a="b}[5m])`, err: "unterminated string"},
		{expr: `x{a="b"}]`, err: "unbalanced ]"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := MetricNames(tt.expr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLabelNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{expr: `sum by (le, source_workload) (rate(x_bucket{cluster=~"${cluster}", a != "b}c", __name__="x"}[5m]))`, want: []string{"a", "cluster", "le", "source_workload"}},
		{expr: `sum(rate(a_total[5m])) without (instance) / on(job) group_left(node) b`, want: []string{"instance", "job", "node"}},
		{expr: `label_values(hubble_http_requests_total{cluster=~"${cluster}"}, destination_namespace)`, want: []string{"cluster", "destination_namespace"}},
		{expr: `up`, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := LabelNames(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseRejectsBadJSON(t *testing.T) {
	for _, tt := range []struct{ name, js, err string }{
		{"not json", `{`, "parse dashboard"},
		{"no uid", `{"title":"x"}`, "no uid"},
		{"empty expr", `{"uid":"u","panels":[{"title":"p","targets":[{"refId":"A"}]}]}`, `panel "p": query A has no expr`},
		{"bad variable query", `{"uid":"u","templating":{"list":[{"name":"v","query":3}]}}`, "variable v"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.js)); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err %v, want one saying %q", err, tt.err)
			}
		})
	}
	// Grafana's object form of a variable query, and a collapsed row.
	p, err := Parse([]byte(`{"uid":"u","panels":[{"type":"row","panels":[{"title":"in row","targets":[{"refId":"A","expr":"up","instant":true}]}]}],
		"templating":{"list":[{"name":"v","query":{"query":"label_values(up, job)","refId":"x"}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Queries) != 1 || p.Queries[0].Panel != "in row" || !p.Queries[0].Instant || p.Variables[0].Query != "label_values(up, job)" {
		t.Errorf("parsed %+v", p)
	}
}
