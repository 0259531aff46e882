package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const dnsperfOutput = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 10.232.0.53 -d q.txt -l 1 -Q 100 -v
[Status] Sending queries (to 10.232.0.53:53)
[Status] Started at: Sun Dec  6 06:26:18 2026
[Status] Stopping after 1.000000 seconds
> NOERROR q1.z1.bench.test. A 0.000250
> NOERROR q2.z1.bench.test. AAAA 0.001000
> REFUSED q3.z1.bench.test. A 0.000100
> T q4.z1.bench.test. A
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), REFUSED 1 (33.33%)
  Average packet size:  request 35, response 51
  Run time (s):         1.000155
  Queries per second:   2.999535

  Average Latency (s):  0.000450 (min 0.000100, max 0.001000)
  Latency StdDev (s):   0.000034
`

func TestParseDNSPerf(t *testing.T) {
	r, err := parseDNSPerf(strings.NewReader(dnsperfOutput))
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 4 || r.Completed != 3 || r.Lost != 1 || math.Abs(r.QPS-2.999535) > 1e-9 || r.AvgLatency != 450*time.Microsecond {
		t.Fatalf("%+v", r)
	}
	if r.Rcodes["NOERROR"] != 2 || r.Rcodes["REFUSED"] != 1 || len(r.Rcodes) != 2 {
		t.Fatalf("rcodes %v", r.Rcodes)
	}
	if len(r.Latencies) != 3 || r.Latencies[0] != 100*time.Microsecond || r.Latencies[2] != time.Millisecond {
		t.Fatalf("latencies %v", r.Latencies)
	}
	if q := latencyQuantile(r.Latencies, 0.5); q != 250*time.Microsecond {
		t.Fatalf("p50 %v", q)
	}
	if q := latencyQuantile(r.Latencies, 0.99); q != time.Millisecond {
		t.Fatalf("p99 %v", q)
	}
	if _, err := parseDNSPerf(strings.NewReader("Error: something\n")); err == nil {
		t.Fatal("output without statistics parsed")
	}
	if _, err := parseDNSPerf(strings.NewReader(strings.Replace(dnsperfOutput, "Queries sent:         4", "Queries sent:         x", 1))); err == nil {
		t.Fatal("a bad number parsed")
	}
}

func TestDNSPerfArgs(t *testing.T) {
	max := strings.Join(dnsperfArgs("ns", "10.0.0.1", "f", 10*time.Second, 0, 8, 200), " ")
	rate := strings.Join(dnsperfArgs("ns", "10.0.0.1", "f", 10*time.Second, 5000, 8, 200), " ")
	if !strings.HasPrefix(max, "netns exec ns dnsperf -s 10.0.0.1 -d f -l 10") || !strings.Contains(max, "-c 8 -q 200") || strings.Contains(max, "-Q") || strings.Contains(max, "-v") {
		t.Fatalf("max: %s", max)
	}
	if !strings.Contains(rate, "-Q 5000") || !strings.HasSuffix(rate, "-v") {
		t.Fatalf("rate: %s", rate)
	}
}

func TestUpstreamAnswer(t *testing.T) {
	now := time.Unix(1000, 0)
	u := &upstream{ips: 4, ttl: 2, rotate: 2 * time.Second, now: func() time.Time { return now }}
	a := u.answer("q1.z1.bench.test.", dns.TypeA)
	aaaa := u.answer("q1.z1.bench.test.", dns.TypeAAAA)
	if len(a) != 4 || len(aaaa) != 4 || !a[0].Is4() || !aaaa[0].Is6() || aaaa[0].Is4In6() {
		t.Fatalf("A %v AAAA %v", a, aaaa)
	}
	for _, ip := range a {
		if ip.As4()[0] != 198 || ip.As4()[1] != 18 {
			t.Fatalf("%s outside 198.18.0.0/16", ip)
		}
	}
	if again := u.answer("q1.z1.bench.test.", dns.TypeA); again[0] != a[0] {
		t.Fatal("the same name in the same period answered differently")
	}
	now = now.Add(2 * time.Second)
	if next := u.answer("q1.z1.bench.test.", dns.TypeA); next[0] == a[0] && next[1] == a[1] {
		t.Fatal("the addresses did not rotate")
	}
	// Names rotate at different phases: over one period some names change
	// while others keep their addresses.
	changed := 0
	for i := range 50 {
		name := fmt.Sprintf("q%d.z1.bench.test.", i)
		x := u.answer(name, dns.TypeA)[0]
		now = now.Add(500 * time.Millisecond)
		if u.answer(name, dns.TypeA)[0] != x {
			changed++
		}
		now = now.Add(-500 * time.Millisecond)
	}
	if changed == 0 || changed == 50 {
		t.Fatalf("%d of 50 names changed over a quarter period; want some, not all", changed)
	}
	if got := u.answer("q1.z1.bench.test.", dns.TypeMX); got != nil {
		t.Fatalf("MX answered %v", got)
	}
}

// TestAnomaly: SERVFAILs the proxy made are not a bypass; answers or
// upstream queries beyond what the proxy forwarded are.
func TestAnomaly(t *testing.T) {
	proxy := scenario{Name: "proxy", Policy: true}
	shed := runResult{Allowed: 16660, UpstreamQueries: 16660, Perf: &perfResult{Completed: 48275, Rcodes: map[string]int{"NOERROR": 16660, "SERVFAIL": 31615}}}
	if a := shed.anomaly(proxy); a != "" {
		t.Fatalf("load shedding reported as %q", a)
	}
	bypass := runResult{Allowed: 16660, UpstreamQueries: 48000, Perf: &perfResult{Completed: 48000, Rcodes: map[string]int{"NOERROR": 48000}}}
	if a := bypass.anomaly(proxy); !strings.Contains(a, "bypassed") {
		t.Fatalf("bypass not reported: %q", a)
	}
	if a := bypass.anomaly(scenario{Name: "direct"}); a != "" {
		t.Fatalf("direct run reported %q", a)
	}
}
