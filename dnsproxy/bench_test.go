package dnsproxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// bench_test.go: the query path through the proxy against the same query
// straight to the upstream, in one run, reported side by side and as a
// ratio. The proxy enforces a 1,000-pattern rule set, and the name is
// selected by toFQDNs so every answer is learned and held for OnLearn.

func benchHarness(b *testing.B) *harness {
	h := &harness{up: startUpstreamTB(b)}
	var rules []policy.DNSAllow
	for i := range 999 {
		rules = append(rules, policy.DNSAllow{Rule: &policy.DNSRule{MatchPattern: fmt.Sprintf("*.svc%d.example.com", i)}})
	}
	rules = append(rules, policy.DNSAllow{Rule: &policy.DNSRule{MatchPattern: "*.allowed.test"}})
	var learns atomic.Int64
	var mu sync.Mutex
	ipcache := map[netip.Addr]policy.ID{}
	p, err := New(Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: h.up.addr,
		Endpoints:         EndpointsFunc(func(netip.Addr) (EndpointInfo, bool) { return testEndpoint, true }),
		Remotes:           RemotesFunc(func(netip.Addr) policy.ID { return testDNSID }),
		OnFlow:            func(flow.Flow) {},
		OnLearn: func(_ context.Context, _ string, ips []netip.Addr, sels []policy.FQDNSelection) error {
			learns.Add(1)
			mu.Lock()
			for _, a := range ips {
				ipcache[a] = sels[0].Identity
			}
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	pol := Policy{
		Endpoints: map[EndpointKey][]policy.DNSRuleSet{testEndpoint.Key(): {{Proto: policy.ProtoUDP, Rules: rules}}},
		FQDNs:     []policy.FQDNSelection{{Selector: policy.FQDNSelector{MatchPattern: "*.allowed.test"}, Identity: 16777217}},
	}
	if err := p.SetPolicy(pol); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Bind(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	h.p = p
	udp, _ := p.Addrs()
	h.udp = udp[0]
	h.up.setZone("bench.allowed.test.", []string{"192.0.2.80"})
	return h
}

// benchClient is a connected UDP socket with a packed query.
type benchClient struct {
	c   *net.UDPConn
	q   []byte
	buf []byte
	id  uint16
}

func newBenchClient(b *testing.B, to netip.AddrPort) *benchClient {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	m := new(dns.Msg)
	m.SetQuestion("bench.allowed.test.", dns.TypeA)
	q, _ := m.Pack()
	return &benchClient{c: c, q: q, buf: make([]byte, 4096)}
}

// do sends one query and waits for its answer.
func (bc *benchClient) do(b *testing.B) {
	if err := bc.try(); err != nil {
		b.Fatal(err)
	}
}

// try sends one query and waits for its answer, which must be NOERROR.
func (bc *benchClient) try() error {
	bc.id++
	binary.BigEndian.PutUint16(bc.q, bc.id)
	if _, err := bc.c.Write(bc.q); err != nil {
		return err
	}
	_ = bc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := bc.c.Read(bc.buf)
		if err != nil {
			return err
		}
		if n >= 12 && binary.BigEndian.Uint16(bc.buf) == bc.id {
			if rcode := bc.buf[3] & 0xF; rcode != 0 {
				return fmt.Errorf("rcode %d", rcode)
			}
			return nil
		}
	}
}

// BenchmarkQueryPath interleaves a direct query and a proxied one per
// iteration (one client each, sequential): latency per query both ways and
// their ratio.
func BenchmarkQueryPath(b *testing.B) {
	h := benchHarness(b)
	direct := newBenchClient(b, h.up.addr)
	proxied := newBenchClient(b, h.udp)
	var dDirect, dProxy time.Duration
	for b.Loop() {
		t0 := time.Now()
		direct.do(b)
		t1 := time.Now()
		proxied.do(b)
		dProxy += time.Since(t1)
		dDirect += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(dDirect.Nanoseconds())/n, "direct-ns/query")
	b.ReportMetric(float64(dProxy.Nanoseconds())/n, "proxy-ns/query")
	b.ReportMetric(float64(dProxy)/float64(dDirect), "proxy/direct")
}

// BenchmarkQueryThroughput runs 16 concurrent clients straight to the
// upstream and then through the proxy, and reports queries per second for
// both and the ratio.
func BenchmarkQueryThroughput(b *testing.B) {
	h := benchHarness(b)
	const clients = 16
	mk := func(to netip.AddrPort) []*benchClient {
		cs := make([]*benchClient, clients)
		for i := range cs {
			cs[i] = newBenchClient(b, to)
		}
		return cs
	}
	directClients, proxyClients := mk(h.up.addr), mk(h.udp)
	var failed atomic.Int64
	run := func(cs []*benchClient, n int) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for _, c := range cs {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					// A shared machine may time a query out; count it
					// rather than fail the run (b.Fatal is not allowed
					// off the benchmark goroutine anyway).
					if c.try() != nil {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var dDirect, dProxy time.Duration
	for b.Loop() {
		dDirect += run(directClients, 200)
		dProxy += run(proxyClients, 200)
	}
	q := float64(200 * b.N)
	b.ReportMetric(q/dDirect.Seconds(), "direct-qps")
	b.ReportMetric(q/dProxy.Seconds(), "proxy-qps")
	b.ReportMetric(dDirect.Seconds()/dProxy.Seconds(), "proxy/direct-qps")
	b.ReportMetric(float64(failed.Load()), "failed-queries")
}
