package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/moatnet/moat/dashboards"
	"github.com/moatnet/moat/internal/testutil"
)

// dashboards_test.go proves the shipped Grafana dashboards on a real
// Prometheus: Debian's prometheus server scrapes a real agent (netns
// endpoints, the HTTP proxy, the DNS proxy) while the test sends allowed
// and denied HTTP, allowed, refused, failing and unanswered DNS, and
// traffic that policy drops; then every query of every panel of every
// dashboard in charts/moat/dashboards runs through Prometheus' HTTP API
// with the dashboard variables filled in. Each must parse; each must return
// data unless noDataPanels says why it cannot here. Every dashboard's
// results are drawn to a PNG (MOAT_DASHBOARD_PNG_DIR, or a new directory
// under the temp dir that the test logs and keeps).

const dashEndpoints = `namespaces:
- name: kube-system
endpoints:
- name: deathstar
  labels: {org: empire, class: deathstar}
  ipv4: 10.221.0.10
- name: tiefighter
  labels: {org: empire, class: tiefighter}
  ipv4: 10.221.0.20
- name: xwing
  labels: {org: alliance, class: xwing}
  ipv4: 10.221.0.30
- name: probe
  labels: {app: probe}
  ipv4: 10.221.0.40
- name: client
  labels: {app: client}
  ipv4: 10.221.2.10
- name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
  ipv4: 10.221.2.53
`

// dashExtraPolicy is a policy the test rewrites during the traffic: one
// more HTTP rule on the deathstar, whose path changes each time.
const dashExtraPolicy = cnp + `metadata: {name: deathstar-status}
spec:
  endpointSelector: {matchLabels: {org: empire, class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/v1/status/%d"}]
`

// noDataPanels are the queries ("dashboard uid/panel title/refId", or
// "dashboard uid/panel title" for all of a panel's) that cannot return
// data in this setup, with the reason. They must still parse.
var noDataPanels = map[string]string{
	"moat-operator/Identities":                                   "moat-operator does not run in standalone mode",
	"moat-operator/Identities collected":                         "moat-operator does not run in standalone mode",
	"moat-operator/Policies by validity":                         "moat-operator does not run in standalone mode",
	"moat-operator/Reconcile errors":                             "moat-operator does not run in standalone mode",
	"moat-operator/Leader":                                       "moat-operator does not run in standalone mode",
	"moat-operator/Leader changes over the time range":           "moat-operator does not run in standalone mode",
	"moat-policy-verdicts-drops/HTTP redirects kept fail-closed": "the proxy is up: no redirect is kept fail-closed (e2e/failclosed_test.go covers it)",
	"moat-policy-verdicts-drops/XDP prefilter drops":             "no prefilterInterfaces configured: the collector is not registered",
	"moat-agent/xDS responses, ACKs and NACKs/C":                 "the embedded proxy accepts every resource: no NACK",
	"moat-agent/Access-log entries the proxy dropped":            "the access-log stream keeps up: nothing dropped",
	"moat-agent/Connections closed before HTTP":                  "every redirected connection matches a listener",
	"moat-agent/FQDN cache evictions":                            "no entry expires (TTL 300 s) or hits the cap during the test",
}

// dashVars are the values the test gives the dashboards' variables: what a
// person would pick to look at the deathstar, and "All" (.*) for the rest.
var dashVars = map[string]string{
	"cluster":               "e2e",
	"destination_namespace": "default",
	"destination_workload":  "deathstar",
	"reporter":              "server",
	"source_namespace":      ".*",
	"source_workload":       ".*",
	"instance":              ".*",
}

// dnsDashUpstream answers A queries: NXDOMAIN for names starting "nx",
// nothing at all for names starting "lost" (the proxy's upstream times
// out), one address of 198.19.0.0/16 for the rest.
type dnsDashUpstream struct {
	mu sync.Mutex
	n  int
}

func (u *dnsDashUpstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		return
	}
	q := r.Question[0]
	m := new(dns.Msg)
	m.SetReply(r)
	switch {
	case strings.HasPrefix(q.Name, "lost"):
		return
	case strings.HasPrefix(q.Name, "nx"):
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		u.mu.Lock()
		u.n++
		n := u.n
		u.mu.Unlock()
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A: netip.AddrFrom4([4]byte{198, 19, byte(1 + n>>8), byte(n)}).AsSlice()})
	}
	_ = w.WriteMsg(m)
}

func TestPrivilegedDashboardsOnPrometheus(t *testing.T) {
	requirePrivileged(t)
	promBin, err := exec.LookPath("prometheus")
	testutil.Require(t, "Debian's prometheus server (apt-get install prometheus)", err)

	files, err := filepath.Glob("../charts/moat/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in charts/moat/dashboards: %v", err)
	}
	var boards []dashboards.Parsed
	for _, f := range files {
		js, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := dashboards.Parse(js)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		boards = append(boards, p)
	}

	starwars, err := os.ReadFile("../examples/starwars/policies/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	metricsJSON, _ := json.Marshal(dashboards.HubbleMetrics)
	a := startAgent(t, agentSpec{
		short:         "dash",
		endpoints:     dashEndpoints,
		policies:      map[string]string{"starwars.yaml": string(starwars), "dns.yaml": readExample(t, "policies/"+onlyFile(t, "../examples/dns-fqdns/policies"))},
		verdictEvents: true,
		config:        "metrics: " + string(metricsJSON) + "\n",
	})
	deathstar := endpointPeer(a, "deathstar", "10.221.0.10")
	tiefighter := endpointPeer(a, "tiefighter", "10.221.0.20")
	xwing := endpointPeer(a, "xwing", "10.221.0.30")
	client := endpointPeer(a, "client", "10.221.2.10")
	coredns := peer{name: "coredns", ref: "kube-system/coredns", netns: a.netnsPath("kube-system", "coredns"), addr: netip.MustParseAddr("10.221.2.53")}
	serveDeathstar(t, deathstar)
	serveDNSOn(t, coredns, &dnsDashUpstream{})
	a.waitStatus("proxy ready", 20*time.Second, func(st Status) bool { return st.ProxyReady && st.ProxyError == "" })

	prom := startPrometheus(t, promBin, a.metricsAddr)
	prom.waitQuery(t, "the agent scraped", `up{job="moat-agent",cluster="e2e"} == 1`, 30*time.Second)

	// Retransmissions of an established flow: the probe endpoint's
	// connection to the host loses its ACKs for a moment (an nftables drop
	// in the probe's own netns, outside moat), so its kernel retransmits.
	nft, err := exec.LookPath("nft")
	testutil.Require(t, "nftables (nft), to make a flow retransmit", err)
	probeEP := endpointPeer(a, "probe", "10.221.0.40")
	retransPort := serveHostEcho(t)
	retransCtx, stopRetrans := context.WithCancel(t.Context())
	var retrans sync.WaitGroup
	retrans.Go(func() { retransmitLoop(retransCtx, t, nft, filepath.Base(probeEP.netns), probeEP, retransPort) })
	defer func() { stopRetrans(); retrans.Wait() }()

	// Traffic for a while, so that rates have several samples.
	start := time.Now()
	closedPort := uint16(freeAgentPort(t))
	outcomes := map[string]int{}
	var lost sync.WaitGroup
	for round := 0; time.Since(start) < 25*time.Second; round++ {
		roundStart := time.Now()
		for _, c := range []struct{ method, path string }{
			{"POST", "/v1/request-landing"}, {"PUT", "/v1/exhaust-port"}, {"GET", "/v1/request-landing"},
		} {
			status, _, err := shipRequest(tiefighter, deathstar, c.method, c.path)
			if err != nil {
				t.Fatalf("round %d: tiefighter %s %s: %v", round, c.method, c.path, err)
			}
			outcomes[fmt.Sprintf("tiefighter %s %s -> %d", c.method, c.path, status)]++
		}
		if _, _, err := shipRequest(xwing, deathstar, "POST", "/v1/request-landing"); !errors.Is(err, errNoAnswer) {
			t.Fatalf("round %d: xwing POST: %v, want dropped", round, err)
		}
		outcomes["xwing POST -> dropped"]++
		// A closed port on the host: the SYN passes, a RST answers.
		if err := probeTCP(tiefighter, netip.AddrPortFrom(hostPeer().addr, closedPort), time.Second); !isRefused(err) {
			t.Fatalf("round %d: tiefighter to the host's closed port %d: %v, want refused", round, closedPort, err)
		}
		outcomes["tiefighter -> host closed port: refused"]++
		for _, name := range []string{"api.example.com", "www.example.com", "nx1.example.com", "www.example.org"} {
			resp, _, err := resolve(client, coredns.addr, "udp", name)
			if err != nil {
				t.Fatalf("round %d: resolve %s: %v", round, name, err)
			}
			outcomes[fmt.Sprintf("client resolve %s -> %s", name, dns.RcodeToString[resp.Rcode])]++
		}
		// An address no answer gave: dropped by the toFQDNs egress policy.
		if err := probeTCP(client, netip.AddrPortFrom(netip.MustParseAddr("198.19.250.250"), 80), 300*time.Millisecond); !errors.Is(err, errNoAnswer) {
			t.Fatalf("round %d: client to an unresolved address: %v, want dropped", round, err)
		}
		outcomes["client -> unresolved address: dropped"]++
		if round%4 == 0 {
			// The upstream never answers: the proxy answers SERVFAIL after its
			// upstream timeout (2 s). In the background, so rounds go on.
			lost.Go(func() {
				resp, _, err := resolve(client, coredns.addr, "udp", fmt.Sprintf("lost%d.example.com", round))
				if err == nil && resp.Rcode != dns.RcodeServerFailure {
					t.Errorf("lost%d.example.com: rcode %s, want SERVFAIL after the upstream timeout", round, dns.RcodeToString[resp.Rcode])
				}
			})
		}
		if round%5 == 4 {
			// A policy change: the agent reconciles, pushes new HTTP rules
			// over xDS and waits for the proxy's ACK.
			a.applyPolicy("extra.yaml", fmt.Sprintf(dashExtraPolicy, round))
			outcomes["policy change"]++
		}
		// Pace the rounds (about one per second); this is traffic shape,
		// not synchronisation.
		time.Sleep(max(0, time.Second-time.Since(roundStart)))
	}
	lost.Wait()
	stopRetrans()
	retrans.Wait()
	trafficEnd := time.Now()
	t.Logf("traffic for %s: %v", trafficEnd.Sub(start).Round(time.Second), outcomes)

	// Prometheus has scraped after the last traffic.
	prom.waitQuery(t, "a scrape after the traffic", fmt.Sprintf(`timestamp(up{job="moat-agent"}) > %d`, trafficEnd.Unix()+1), 20*time.Second)
	end := time.Now()

	// The agent's scrape-time collectors (registered once the datapath is
	// open, so the unit test cannot build them) are on the real /metrics.
	m, err := a.metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"moat_bpf_map_pressure", "moat_ct_live_entries", "moat_ct_gc_removed_entries_total", "moat_datapath_map_updates_total"} {
		if !m.has(n) {
			t.Errorf("%s is not on the agent's /metrics", n)
		}
	}

	vars := maps2(dashVars)
	vars["__rate_interval"] = "15s"
	vars["__interval"] = "2s"
	vars["__range"] = fmt.Sprintf("%ds", int(math.Ceil(end.Sub(start).Seconds()))+10)
	rangeStart := start.Add(-5 * time.Second)

	outDir := os.Getenv("MOAT_DASHBOARD_PNG_DIR")
	if outDir == "" {
		if outDir, err = os.MkdirTemp("", "moat-dashboards-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}

	var summary []string
	answers := map[string]promResult{}
	withData, without, total := 0, 0, 0
	for _, b := range boards {
		// The variables' own queries: each label_values answers, and the
		// value the test picks for a single-value variable is among them.
		for _, v := range b.Variables {
			if v.Type != "query" {
				continue
			}
			values, err := prom.labelValues(substitute(v.Query, vars))
			if err != nil {
				t.Errorf("%s: variable %s: %v", b.UID, v.Name, err)
				continue
			}
			want := vars[v.Name]
			switch {
			case noDataBoard(b.UID):
			case want == ".*" && len(values) == 0:
				t.Errorf("%s: variable %s: no values", b.UID, v.Name)
			case want != ".*" && !slices.Contains(values, want):
				t.Errorf("%s: variable %s: values %v lack %q", b.UID, v.Name, values, want)
			}
		}
		var results []panelResult
		for _, qu := range b.Queries {
			total++
			expr := substitute(qu.Expr, vars)
			if strings.Contains(expr, "$") {
				t.Errorf("%s: %s: a variable is left in %q", b.UID, qu.Panel, expr)
				continue
			}
			var res promResult
			if qu.Instant {
				res, err = prom.instant(expr, end)
			} else {
				res, err = prom.rangeQuery(expr, rangeStart, end, 2*time.Second)
			}
			if err != nil {
				t.Errorf("%s: panel %q %s: %v\n  query: %s", b.UID, qu.Panel, qu.RefID, err, expr)
				continue
			}
			n := res.finite()
			reason, exempt := noDataPanels[b.UID+"/"+qu.Panel+"/"+qu.RefID]
			if !exempt {
				reason, exempt = noDataPanels[b.UID+"/"+qu.Panel]
			}
			line := fmt.Sprintf("%s | %s | %s | %d series, %d values", b.UID, qu.Panel, qu.RefID, len(res.series), n)
			switch {
			case n > 0:
				withData++
				if exempt {
					line += " (listed as no-data: " + reason + ")"
				}
			case exempt:
				without++
				line += " | no data: " + reason
			default:
				without++
				t.Errorf("%s: panel %q %s returned no data\n  query: %s", b.UID, qu.Panel, qu.RefID, expr)
				line += " | NO DATA"
			}
			summary = append(summary, line)
			results = append(results, panelResult{q: qu, res: res})
			answers[b.UID+"/"+qu.Panel+"/"+qu.RefID] = res
		}
		png := filepath.Join(outDir, b.UID+".png")
		if err := renderBoard(png, b.Title, results, rangeStart); err != nil {
			t.Errorf("render %s: %v", png, err)
		}
	}
	t.Logf("%d queries: %d returned data, %d did not\n%s", total, withData, without, strings.Join(summary, "\n"))

	// The questions a user must answer from the dashboards alone, asked of
	// the panels that answer them.
	for _, c := range []struct {
		question, query string
		want            map[string]string
	}{
		{"which workload's requests fail most", "moat-l7-http-by-workload/Failed requests (4xx and 5xx) by source/A",
			map[string]string{"source_workload": "tiefighter", "status": "403"}},
		{"p99 latency between two workloads", "moat-l7-http-by-workload/Latency between workloads over the time range/B",
			map[string]string{"source_workload": "tiefighter", "destination_workload": "deathstar"}},
		{"names that failed to resolve (NXDOMAIN)", "moat-dns/Names that failed to resolve in the last 10 minutes/A",
			map[string]string{"destination_workload": "client", "query": "nx1.example.com.", "rcode": "Non-Existent Domain"}},
		{"names that failed to resolve (no answer upstream, once)", "moat-dns/Names that failed to resolve in the last 10 minutes/A",
			map[string]string{"destination_workload": "client", "query": "lost0.example.com.", "rcode": "Server Failure"}},
		{"names that failed to resolve (refused by policy)", "moat-dns/Names that failed to resolve in the last 10 minutes/B",
			map[string]string{"source_workload": "client", "query": "www.example.org.", "rcode": "Policy denied"}},
		{"why packets were dropped", "moat-policy-verdicts-drops/Drops in the last 10 minutes/A",
			map[string]string{"source_workload": "xwing", "destination_workload": "deathstar", "reason": "POLICY_DENIED", "traffic_direction": "ingress"}},
		{"which connections got no SYN-ACK", "moat-tcp-health/SYN and SYN-ACK by workload pair in the last 10 minutes/A",
			map[string]string{"source_workload": "xwing", "destination_workload": "deathstar", "flag": "SYN"}},
	} {
		res, ok := answers[c.query]
		if !ok {
			t.Errorf("%s: no query %s", c.question, c.query)
			continue
		}
		if !res.hasSeries(c.want) {
			var got []map[string]string
			for _, s := range res.series {
				got = append(got, s.labels)
			}
			t.Errorf("%s: %s has no series with %v; it has %v", c.question, c.query, c.want, got)
		}
	}
	if res := answers["moat-tcp-health/SYN and SYN-ACK by workload pair in the last 10 minutes/A"]; res.hasSeries(map[string]string{"source_workload": "deathstar", "destination_workload": "xwing", "flag": "SYN-ACK"}) {
		t.Errorf("the deathstar answered the xwing's SYN, which policy drops")
	}
	t.Logf("dashboard plots (PNG, one per dashboard): %s", outDir)
	if len(noDataPanels) > 0 {
		keys := make([]string, 0, len(noDataPanels))
		for k := range noDataPanels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !queryExists(boards, k) {
				t.Errorf("noDataPanels names %q, which no dashboard has", k)
			}
		}
	}
}

// serveHostEcho runs a TCP echo server on every host address (the probe
// reaches it at the endpoints' gateway address) and returns its port.
func serveHostEcho(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// retransmitLoop, until ctx ends: connect from p to the host's echo port,
// drop the flow's incoming packets in p's netns (nftables) for 1.5 s while
// sending, so that no ACK comes back and p retransmits (the retransmitted
// segments do leave: a drop on the way out would fail them locally), then
// let them through and read the echo back. The table is removed whatever
// happens.
func retransmitLoop(ctx context.Context, t *testing.T, nft, netnsName string, p peer, port uint16) {
	nftIn := func(args ...string) error {
		out, err := exec.Command("ip", append([]string{"netns", "exec", netnsName, nft}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	defer func() { _ = nftIn("delete", "table", "inet", "moat_e2e_loss") }()
	for ctx.Err() == nil {
		c, err := dialTCP(p, netip.AddrPortFrom(hostPeer().addr, port), 2*time.Second)
		if err != nil {
			t.Errorf("retransmit probe: connect: %v", err)
			return
		}
		err = func() error {
			defer c.Close()
			rules := [][]string{
				{"add", "table", "inet", "moat_e2e_loss"},
				{"add", "chain", "inet", "moat_e2e_loss", "in", "{ type filter hook input priority 0; }"},
				{"add", "rule", "inet", "moat_e2e_loss", "in", "tcp", "sport", strconv.Itoa(int(port)), "drop"},
			}
			for _, r := range rules {
				if err := nftIn(r...); err != nil {
					return err
				}
			}
			if _, err := c.Write([]byte("retransmit me")); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(1500 * time.Millisecond): // long enough for a few RTOs
			}
			if err := nftIn("delete", "table", "inet", "moat_e2e_loss"); err != nil {
				return err
			}
			buf := make([]byte, len("retransmit me"))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil {
				return fmt.Errorf("read the echo after the loss: %w", err)
			}
			return nil
		}()
		if err != nil {
			t.Errorf("retransmit probe: %v", err)
			return
		}
	}
}

// noDataBoard: a dashboard whose every query is listed (the operator's).
func noDataBoard(uid string) bool { return uid == "moat-operator" }

func queryExists(boards []dashboards.Parsed, key string) bool {
	for _, b := range boards {
		for _, qu := range b.Queries {
			if key == b.UID+"/"+qu.Panel || key == b.UID+"/"+qu.Panel+"/"+qu.RefID {
				return true
			}
		}
	}
	return false
}

func onlyFile(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil || len(es) != 1 {
		t.Fatalf("%s: %d entries, %v; want one file", dir, len(es), err)
	}
	return es[0].Name()
}

func maps2(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

var varRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// substitute fills Grafana variables ($x and ${x}) from vars; unknown ones
// stay, so that the caller sees them.
func substitute(s string, vars map[string]string) string {
	return varRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := varRE.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		if v, ok := vars[name]; ok {
			return v
		}
		return m
	})
}

// serveDNSOn runs h on port 53 (UDP) in p's netns.
func serveDNSOn(t *testing.T, p peer, h dns.Handler) {
	t.Helper()
	var pc net.PacketConn
	if err := p.do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", "0.0.0.0:53")
		return err
	}); err != nil {
		t.Fatalf("listen for dns in %s: %v", p.name, err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
}

// promServer is a Prometheus server the test runs.
type promServer struct {
	base string
	c    *http.Client
}

// startPrometheus runs Debian's prometheus on a free loopback port with its
// own storage, scraping the agent every second with cluster="e2e" (the
// label Hubble's dashboards expect Prometheus to add). It is killed at the
// end of the test.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: moat-agent
  static_configs:
  - targets: [%q]
    labels: {cluster: e2e}
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfgPath, cfg)
	addr := freeLoopbackAddr(t)
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	p := &promServer{base: "http://" + addr, c: &http.Client{Timeout: 10 * time.Second}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited: %s", b)
		default:
		}
		resp, err := p.c.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}

// promResult is a query's result: one value list per series.
type promResult struct {
	series []promSeries
}

type promSeries struct {
	labels map[string]string
	ts     []float64 // unix seconds
	vs     []float64
}

// hasSeries reports whether a series with a finite value carries every
// label of want.
func (r promResult) hasSeries(want map[string]string) bool {
	for _, s := range r.series {
		ok := len(s.vs) > 0 && !math.IsNaN(s.vs[len(s.vs)-1])
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (r promResult) finite() int {
	n := 0
	for _, s := range r.series {
		for _, v := range s.vs {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				n++
			}
		}
	}
	return n
}

func (p *promServer) api(path string, form url.Values) (json.RawMessage, error) {
	resp, err := p.c.PostForm(p.base+path, form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %s: %s", path, resp.Status, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("prometheus %s: %s: %s", path, r.ErrorType, r.Error)
	}
	return r.Data, nil
}

func (p *promServer) query(path string, form url.Values) (promResult, error) {
	data, err := p.api(path, form)
	if err != nil {
		return promResult{}, err
	}
	var d struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
			Values [][]any           `json:"values"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return promResult{}, fmt.Errorf("decode result: %w", err)
	}
	var out promResult
	for _, r := range d.Result {
		s := promSeries{labels: r.Metric}
		points := r.Values
		if r.Value != nil {
			points = [][]any{r.Value}
		}
		for _, pt := range points {
			if len(pt) != 2 {
				continue
			}
			ts, _ := pt[0].(float64)
			vs, _ := pt[1].(string)
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				return promResult{}, fmt.Errorf("value %q: %w", vs, err)
			}
			s.ts = append(s.ts, ts)
			s.vs = append(s.vs, v)
		}
		out.series = append(out.series, s)
	}
	return out, nil
}

func (p *promServer) instant(expr string, at time.Time) (promResult, error) {
	return p.query("/api/v1/query", url.Values{"query": {expr}, "time": {strconv.FormatInt(at.Unix(), 10)}})
}

func (p *promServer) rangeQuery(expr string, start, end time.Time, step time.Duration) (promResult, error) {
	return p.query("/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}})
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// labelValues runs a Grafana label_values(selector, label) query the way
// Grafana's Prometheus datasource does: /api/v1/label/<label>/values with
// the selector as match[].
func (p *promServer) labelValues(q string) ([]string, error) {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return nil, fmt.Errorf("variable query %q is not label_values(selector, label)", q)
	}
	resp, err := p.c.Get(p.base + "/api/v1/label/" + m[2] + "/values?" + url.Values{"match[]": {m[1]}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string   `json:"status"`
		Data   []string `json:"data"`
		Error  string   `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("decode label values: %w", err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("label values of %q: %s", q, r.Error)
	}
	return r.Data, nil
}

// waitQuery waits until expr returns a sample.
func (p *promServer) waitQuery(t *testing.T, what, expr string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	var last error
	for {
		res, err := p.instant(expr, time.Now())
		if err == nil && res.finite() > 0 {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s (%s): not within %v (last error %v)", what, expr, timeout, last)
		case <-time.After(200 * time.Millisecond): // poll interval of a deadline-bounded wait
		}
	}
}

// panelResult is one query and what Prometheus returned.
type panelResult struct {
	q   dashboards.PanelQuery
	res promResult
}

var legendRE = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

func legendOf(format string, labels map[string]string) string {
	if format == "" {
		var parts []string
		for k, v := range labels {
			parts = append(parts, k+"="+v)
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ",") + "}"
	}
	return legendRE.ReplaceAllStringFunc(format, func(m string) string {
		return labels[legendRE.FindStringSubmatch(m)[1]]
	})
}

// renderBoard draws one plot per panel (its queries' series as lines over
// time; an instant query as one bar per series) on a grid in one PNG.
func renderBoard(path, title string, results []panelResult, t0 time.Time) error {
	type panelPlots struct {
		title string
		rs    []panelResult
	}
	var panels []panelPlots
	for _, r := range results {
		if len(panels) == 0 || panels[len(panels)-1].title != r.q.Panel {
			panels = append(panels, panelPlots{title: r.q.Panel})
		}
		panels[len(panels)-1].rs = append(panels[len(panels)-1].rs, r)
	}
	const cols = 3
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, pp := range panels {
		p := plot.New()
		p.Title.Text = pp.title
		p.Title.TextStyle.Font.Size = vg.Points(9)
		p.Legend.Top = true
		p.Legend.TextStyle.Font.Size = vg.Points(6)
		p.X.Tick.Label.Font.Size = vg.Points(6)
		p.Y.Tick.Label.Font.Size = vg.Points(6)
		instant := false
		var bars plotter.Values
		var names []string
		color := 0
		for _, r := range pp.rs {
			for _, s := range r.res.series {
				name := legendOf(r.q.Legend, s.labels)
				if len(name) > 48 {
					name = name[:48] + "…"
				}
				if r.q.Instant {
					instant = true
					if len(s.vs) > 0 && len(bars) < 12 {
						bars = append(bars, finiteOr0(s.vs[len(s.vs)-1]))
						names = append(names, name)
					}
					continue
				}
				var xys plotter.XYs
				for k := range s.ts {
					if math.IsNaN(s.vs[k]) || math.IsInf(s.vs[k], 0) {
						continue
					}
					xys = append(xys, plotter.XY{X: s.ts[k] - float64(t0.Unix()), Y: s.vs[k]})
				}
				if len(xys) == 0 || color >= 10 {
					continue
				}
				l, err := plotter.NewLine(xys)
				if err != nil {
					return err
				}
				l.Color = plotutil.Color(color)
				color++
				p.Add(l)
				p.Legend.Add(name, l)
			}
		}
		if instant && len(bars) > 0 {
			b, err := plotter.NewBarChart(bars, vg.Points(10))
			if err != nil {
				return err
			}
			p.Add(b)
			// Bars are numbered; the legend says which series each is.
			for k, n := range names {
				p.Legend.Add(fmt.Sprintf("%d: %s = %.3g", k, n, bars[k]))
			}
			p.X.Label.Text = "series (instant, end of range)"
		} else {
			p.X.Label.Text = "seconds since traffic start"
		}
		if color == 0 && len(bars) == 0 {
			p.Title.Text += " (no data)"
		}
		grid[i/cols][i%cols] = p
	}
	const tileW, tileH = 6 * vg.Inch, 4 * vg.Inch
	img := vgimg.New(tileW*cols, tileH*vg.Length(rows)+0.5*vg.Inch)
	dc := draw.New(img)
	sty := plot.New().Title.TextStyle
	sty.Font.Size = vg.Points(16)
	sty.XAlign = draw.XLeft
	dc.FillText(sty, vg.Point{X: 0.2 * vg.Inch, Y: tileH*vg.Length(rows) + 0.15*vg.Inch}, title)
	body := draw.Crop(dc, 0, 0, 0, -0.5*vg.Inch)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 3, PadY: vg.Millimeter * 3,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, tiles, body)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func finiteOr0(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
