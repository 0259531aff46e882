package xds

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/internal/adsclient"
)

// ResourceBuilder builds the resources of node at version for the push
// benchmark. Plug the real translation in here to measure its output.
type ResourceBuilder func(tb testing.TB, node string, version int) map[resource.Type][]types.Resource

// syntheticResources builds, once per version and shared by every node, an
// egress listener with one filter chain per local endpoint (50), each with
// an HTTP connection manager of 20 rules, and the original-destination
// cluster: about 1,000 HTTP rules, like 1,000 endpoints × 20 rules spread
// over the proxies.
func syntheticResources() ResourceBuilder {
	var mu sync.Mutex
	built := map[int]map[resource.Type][]types.Resource{}
	return func(tb testing.TB, _ string, version int) map[resource.Type][]types.Resource {
		mu.Lock()
		defer mu.Unlock()
		if r, ok := built[version]; ok {
			return r
		}
		tag := strconv.Itoa(version)
		l := &listenerv3.Listener{}
		for i := range 50 {
			one := testListener(tb, "moat/egress-http/15001", 15001, "moat/egress", tag+"-"+strconv.Itoa(i), 20)
			chain := one.GetFilterChains()[0]
			chain.Name = fmt.Sprintf("endpoint-%d", i)
			if i == 0 {
				l = one
				continue
			}
			l.FilterChains = append(l.FilterChains, chain)
		}
		r := map[resource.Type][]types.Resource{
			resource.ClusterType:  {testCluster("moat/egress", tag)},
			resource.ListenerType: {l},
		}
		clear(built) // only the latest version is asked for again
		built[version] = r
		return r
	}
}

// BenchmarkPushToClients measures how long 500 proxies, each its own node on
// its own gRPC connection over the unix socket, take to ACK a new version of
// a listener and a cluster: p50 and p99 from the start of the push to each
// node's ACK (goal: p99 ≤ 1 s), and the RSS of the process, clients included
// (goal: ≤ 200 MiB).
func BenchmarkPushToClients(b *testing.B) {
	for _, p := range protocols {
		b.Run(string(p), func(b *testing.B) {
			benchPush(b, p, 500, syntheticResources())
		})
	}
}

func benchPush(b *testing.B, p protocol, clients int, build ResourceBuilder) {
	s := startServer(b, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes := make([]string, clients)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%03d", i)
	}

	version := 0
	push := func() {
		v := strconv.Itoa(version)
		for _, n := range nodes {
			if err := s.SetResources(ctx, n, v, build(b, n, version)); err != nil {
				b.Fatal(err)
			}
		}
	}
	push()

	clientErrs := make(chan error, clients)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, n := range nodes {
		conn := s.dial(b, false)
		st, err := conn.Open(ctx, p, n)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer st.Close()
			if err := ackForever(st); err != nil && ctx.Err() == nil {
				clientErrs <- fmt.Errorf("client %s: %w", n, err)
			}
		})
	}
	waitAll := func(latencies []time.Duration, start time.Time) []time.Duration {
		v := strconv.Itoa(version)
		waitCtx, cancelWait := context.WithTimeout(ctx, time.Minute)
		defer cancelWait()
		var mu sync.Mutex
		var wwg sync.WaitGroup
		var firstErr error
		for _, n := range nodes {
			wwg.Go(func() {
				err := s.WaitForACK(waitCtx, n, v, resource.ClusterType, resource.ListenerType)
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				latencies = append(latencies, d)
			})
		}
		wwg.Wait()
		select {
		case err := <-clientErrs:
			b.Fatal(err)
		default:
		}
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		return latencies
	}
	// Every client connected and ACKed version 0.
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for subscribed(s.Status()) < clients {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d clients subscribed after a minute", subscribed(s.Status()), clients)
		}
		<-tick.C
	}
	waitAll(nil, time.Now())

	var latencies []time.Duration
	for b.Loop() {
		b.StopTimer()
		version++
		for _, n := range nodes {
			build(b, n, version) // build outside the measurement
		}
		b.StartTimer()
		start := time.Now()
		push()
		latencies = waitAll(latencies, start)
	}
	slices.Sort(latencies)
	b.ReportMetric(ms(percentile(latencies, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(latencies, 0.99)), "p99-ms")
	b.ReportMetric(rssMiB(b), "rss-MiB")
}

func subscribed(st []NodeStatus) int {
	n := 0
	for _, ns := range st {
		if ns.Subscribed {
			n++
		}
	}
	return n
}

// ackForever subscribes to clusters and listeners and ACKs every response.
func ackForever(st *adsclient.Stream) error {
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		if err := st.Subscribe(typeURL); err != nil {
			return err
		}
	}
	return st.Serve(nil)
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rssMiB reads the resident set size of this process from /proc.
func rssMiB(tb testing.TB) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				tb.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kb / 1024
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
