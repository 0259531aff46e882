package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/internal/adsclient"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// xdsWaitTimeout bounds every wait on the xDS server in this package's
// tests and benchmarks; a healthy run takes milliseconds to seconds.
const xdsWaitTimeout = 2 * time.Minute

// pushScenario is one shape of the push benchmark: how the cluster's
// endpoints are spread over nodes, each node with one proxy (ADS client).
type pushScenario struct {
	name             string
	endpoints        int
	rulesPerEndpoint int
	nodes            int // endpoints are spread evenly, in order
}

// BenchmarkPushTranslated measures the xDS push of real, translated
// resources to many proxies on real gRPC streams.
//
// cluster: a cluster of 1,000 endpoints with 20 ingress HTTP rules each (and
// 5 egress rules; envoy.BenchPlan) over 500 nodes, two local endpoints per
// node. Each node's proxy is an ADS client (internal/adsclient) on its own
// connection to one xds.Server over its unix socket, and gets
// envoy.Translate of its own plan: its two endpoints, with the cluster-wide
// ipcache. The change is a rule edit that touches every endpoint (the path
// of its first ingress rule), so every node gets a new version. Per
// iteration the benchmark translates the 500 per-node plans outside the
// timer, then times from the first SetResources to each node's ACK of every
// type (the server's WaitForACK). Goals: p99 ≤ 1 s, server RSS ≤ 200 MiB.
//
// single-node: the worst case for one proxy: one node holding all 1,000
// endpoints, one client.
//
// Each scenario and protocol runs in two variants:
//
// server-process: the xds.Server runs as in production, in a process of its
// own (this test binary re-executed, dispatched by TestMain), which
// builds the plan, translates and serves it; this process runs only the
// clients and drives the pushes. Metrics: p50-ms and p99-ms (push start to
// a node's ACK, over all nodes and iterations); nodes-translate-ms
// (translating every node's plan for one version, in the server process);
// server-rss-MiB and server-peak-rss-MiB (VmRSS and VmHWM of the server
// process after the pushes: its plan, translation garbage, snapshots and
// streams); server-rss-gc-MiB and server-heap-MiB (its RSS and live Go heap
// after a collection that returns freed memory to the kernel).
//
// in-process: server, clients and plans in this one process. Metrics: p50-ms
// and p99-ms as above; translate-ms (one Translate of the whole 1,000 × 20
// plan); nodes-translate-ms; rss-MiB and rss-gc-MiB (the whole process, so
// an upper bound of the server's); heap-snap-MiB (live Go heap added by
// setting every node's snapshot, before any client: the server's
// resources, hashes and version bookkeeping) and heap-streams-MiB (live
// heap added by connecting the clients and serving them the first version:
// both ends of the streams, since they share the process).
//
// Run: go test ./e2e -run '^$' -bench BenchmarkPushTranslated -benchtime 3x
func BenchmarkPushTranslated(b *testing.B) {
	scenarios := []pushScenario{
		{name: "cluster-1000x20-over-500-nodes", endpoints: 1000, rulesPerEndpoint: 20, nodes: 500},
		{name: "single-node-1000x20", endpoints: 1000, rulesPerEndpoint: 20, nodes: 1},
	}
	for _, sc := range scenarios {
		for _, p := range []adsclient.Protocol{adsclient.SotW, adsclient.Delta} {
			b.Run(sc.name+"/"+string(p)+"/server-process", func(b *testing.B) {
				benchPushServerProcess(b, sc, p)
			})
			b.Run(sc.name+"/"+string(p)+"/in-process", func(b *testing.B) {
				benchPushTranslated(b, sc, p)
			})
		}
	}
}

// pushNode is one node of the benchmark: its name and its slice of the
// cluster's plan.
type pushNode struct {
	name string
	plan *policy.Plan
}

// pushSocket makes a temp dir for the benchmark's xDS socket, removed when
// tb ends. Not tb.TempDir: benchmark names make paths that outgrow
// sun_path.
func pushSocket(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "moat-xds-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "xds.sock")
}

// runPushClients connects one ADS client per node to socket, each on its
// own connection, subscribing like Envoy (routes[i]: the route names of
// node i) and ACKing every response until ctx ends. Errors of a client go
// to the returned channel; wg counts the clients.
func runPushClients(ctx context.Context, b *testing.B, wg *sync.WaitGroup, socket string, p adsclient.Protocol, nodes []string, routes [][]string) <-chan error {
	b.Helper()
	clientErrs := make(chan error, len(nodes))
	for i, name := range nodes {
		conn, err := adsclient.Dial(socket)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		st, err := conn.Open(ctx, p, name)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer st.Close()
			if err := subscribeAndACK(st, routes[i]); err != nil && ctx.Err() == nil {
				clientErrs <- fmt.Errorf("client of %s: %w", name, err)
			}
		})
	}
	return clientErrs
}

// checkClients fails b with the first client error, if any.
func checkClients(b *testing.B, clientErrs <-chan error) {
	b.Helper()
	select {
	case err := <-clientErrs:
		b.Fatal(err)
	default:
	}
}

func benchPushServerProcess(b *testing.B, sc pushScenario, p adsclient.Protocol) {
	socket := pushSocket(b)
	srv := startPushServer(b, pushServerConfig{
		Socket: socket, Endpoints: sc.endpoints, RulesPerEndpoint: sc.rulesPerEndpoint, Nodes: sc.nodes,
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	clientErrs := runPushClients(ctx, b, &wg, socket, p, srv.ready.Nodes, srv.ready.Routes)
	srv.ready.Routes = nil
	// Every client subscribed and ACKed the first version.
	if _, err := srv.do(pushCommand{Op: "settle"}); err != nil {
		b.Fatal(err)
	}
	checkClients(b, clientErrs)

	var latencies []time.Duration
	var translate time.Duration
	version, iterations := 0, 0
	for b.Loop() {
		b.StopTimer()
		version++
		r, err := srv.do(pushCommand{Op: "prepare", Version: version})
		if err != nil {
			b.Fatal(err)
		}
		translate += time.Duration(r.TranslateNS)
		b.StartTimer()
		r, err = srv.do(pushCommand{Op: "push", Version: version})
		if err != nil {
			b.Fatal(err)
		}
		checkClients(b, clientErrs)
		for _, ns := range r.LatencyNS {
			latencies = append(latencies, time.Duration(ns))
		}
		iterations++
	}
	mem := srv.statusMiB(b, "VmRSS", "VmHWM")
	r, err := srv.do(pushCommand{Op: "gc"})
	if err != nil {
		b.Fatal(err)
	}
	afterGC := srv.statusMiB(b, "VmRSS")
	slices.Sort(latencies)
	b.ReportMetric(pushMS(pushPercentile(latencies, 0.50)), "p50-ms")
	b.ReportMetric(pushMS(pushPercentile(latencies, 0.99)), "p99-ms")
	b.ReportMetric(pushMS(translate/time.Duration(max(iterations, 1))), "nodes-translate-ms")
	b.ReportMetric(mem[0], "server-rss-MiB")
	b.ReportMetric(mem[1], "server-peak-rss-MiB")
	b.ReportMetric(afterGC[0], "server-rss-gc-MiB")
	b.ReportMetric(r.HeapMiB, "server-heap-MiB")
}

func benchPushTranslated(b *testing.B, sc pushScenario, p adsclient.Protocol) {
	cluster := envoy.BenchPlan(sc.endpoints, sc.rulesPerEndpoint)
	start := time.Now()
	if _, err := envoy.Translate(cluster, envoy.Config{NodeName: "whole-cluster"}); err != nil {
		b.Fatalf("translate the whole plan: %v", err)
	}
	translateWhole := time.Since(start)

	nodes := splitPlan(cluster, sc.nodes)
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.name
	}
	var nodesTranslate time.Duration
	translateAll := func(version int) []map[resource.Type][]types.Resource {
		editFirstRule(cluster, version)
		start := time.Now()
		out := make([]map[resource.Type][]types.Resource, len(nodes))
		for i, n := range nodes {
			res, err := envoy.Translate(n.plan, envoy.Config{NodeName: n.name})
			if err != nil {
				b.Fatalf("translate plan of %s: %v", n.name, err)
			}
			out[i] = res.ByType()
		}
		nodesTranslate += time.Since(start)
		return out
	}

	heapBase := liveHeapMiB()
	socket := pushSocket(b)
	s := runXDSServer(b, socket)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	version := 0
	push := func(res []map[resource.Type][]types.Resource) {
		v := strconv.Itoa(version)
		for i, n := range nodes {
			if err := s.SetResources(ctx, n.name, v, res[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	first := translateAll(version)
	push(first)
	heapSnap := liveHeapMiB()

	routes := make([][]string, len(nodes))
	for i := range nodes {
		routes[i] = typedResourceNames(first[i][resource.RouteType])
	}
	first = nil
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	clientErrs := runPushClients(ctx, b, &wg, socket, p, names, routes)
	routes = nil

	waitAll := func(latencies []time.Duration, start time.Time) []time.Duration {
		lat, err := waitNodesACK(ctx, s, names, strconv.Itoa(version), start)
		checkClients(b, clientErrs)
		if err != nil {
			b.Fatal(err)
		}
		return append(latencies, lat...)
	}
	// Every client subscribed and ACKed the first version.
	if err := waitSubscribed(ctx, s, len(nodes)); err != nil {
		b.Fatal(err)
	}
	waitAll(nil, time.Now())
	heapStreams := liveHeapMiB()

	var latencies []time.Duration
	iterations := 0
	for b.Loop() {
		b.StopTimer()
		version++
		next := translateAll(version)
		b.StartTimer()
		start := time.Now()
		push(next)
		latencies = waitAll(latencies, start)
		iterations++
	}
	slices.Sort(latencies)
	b.ReportMetric(pushMS(pushPercentile(latencies, 0.50)), "p50-ms")
	b.ReportMetric(pushMS(pushPercentile(latencies, 0.99)), "p99-ms")
	b.ReportMetric(pushMS(translateWhole), "translate-ms")
	// translateAll ran once for the first version and once per iteration.
	b.ReportMetric(pushMS(nodesTranslate/time.Duration(iterations+1)), "nodes-translate-ms")
	b.ReportMetric(processRSSMiB(b), "rss-MiB")
	// The same after a collection that returns freed memory to the kernel:
	// what the process holds, without the garbage of the translations.
	runtime.GC()
	debug.FreeOSMemory()
	b.ReportMetric(processRSSMiB(b), "rss-gc-MiB")
	b.ReportMetric(heapSnap-heapBase, "heap-snap-MiB")
	b.ReportMetric(heapStreams-heapSnap, "heap-streams-MiB")
}

// splitPlan spreads the endpoints of plan over n nodes, in order, each with
// the whole cluster's ipcache and identities (what every node's agent
// knows). The node plans share the endpoint plans of plan.
func splitPlan(plan *policy.Plan, n int) []pushNode {
	nodes := make([]pushNode, n)
	per := (len(plan.Endpoints) + n - 1) / n
	for i := range nodes {
		lo, hi := min(i*per, len(plan.Endpoints)), min((i+1)*per, len(plan.Endpoints))
		nodes[i] = pushNode{
			name: fmt.Sprintf("node-%03d", i),
			plan: &policy.Plan{
				Endpoints:  plan.Endpoints[lo:hi],
				IPCache:    plan.IPCache,
				Identities: plan.Identities,
			},
		}
	}
	return nodes
}

// editFirstRule is the benchmark's policy change: the path of every
// endpoint's first ingress HTTP rule names version, so every endpoint, and
// so every node, gets new resources.
func editFirstRule(plan *policy.Plan, version int) {
	for i := range plan.Endpoints {
		rules := plan.Endpoints[i].Ingress.HTTP[0].Rules
		r := *rules[0].Rule
		r.Path = fmt.Sprintf("/api/v1/items/0/rev-%d(/.*)?", version)
		rules[0].Rule = &r
	}
}

// subscribeAndACK subscribes like Envoy with moat's bootstrap (listeners
// and clusters wildcard, the routes the listeners name) and ACKs every
// response until the stream ends.
func subscribeAndACK(st *adsclient.Stream, routes []string) error {
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		if err := st.Subscribe(typeURL); err != nil {
			return err
		}
	}
	if len(routes) > 0 {
		if err := st.Subscribe(resource.RouteType, routes...); err != nil {
			return err
		}
	}
	return st.Serve(nil)
}

func typedResourceNames(rs []types.Resource) []string {
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		if n, ok := r.(interface{ GetName() string }); ok {
			names = append(names, n.GetName())
		}
	}
	return names
}

func subscribedNodes(st []xds.NodeStatus) int {
	n := 0
	for _, ns := range st {
		if ns.Subscribed {
			n++
		}
	}
	return n
}

func pushPercentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func pushMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// liveHeapMiB is the live Go heap after a full collection.
func liveHeapMiB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// processRSSMiB reads the resident set size of this process from /proc.
func processRSSMiB(tb testing.TB) float64 {
	tb.Helper()
	return procStatusMiB(tb, "/proc/self/status", "VmRSS")[0]
}
