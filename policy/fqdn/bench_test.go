package fqdn

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// benchSelectors returns 1,000 patterns of the shapes policies use, and
// queries of which about half match.
func benchSelectors() (patterns, queries []string) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		switch i % 4 {
		case 0:
			patterns = append(patterns, fmt.Sprintf("*.svc%d.example.com", i))
		case 1:
			patterns = append(patterns, fmt.Sprintf("api-*.team%d.corp.net", i))
		case 2:
			patterns = append(patterns, fmt.Sprintf("**.cdn%d.io", i))
		default:
			patterns = append(patterns, fmt.Sprintf("www.site%d.org", i))
		}
	}
	for range 256 {
		i := r.IntN(2000)
		switch i % 4 {
		case 0:
			queries = append(queries, fmt.Sprintf("www.svc%d.example.com.", i))
		case 1:
			queries = append(queries, fmt.Sprintf("API-v2.team%d.corp.net", i))
		case 2:
			queries = append(queries, fmt.Sprintf("a.b.cdn%d.io.", i))
		default:
			queries = append(queries, fmt.Sprintf("www.site%d.org.", i))
		}
	}
	return patterns, queries
}

// BenchmarkMatch compares Matcher with the regex reference on 1,000
// patterns, reporting ns/op for each and the reference/Matcher ratio.
func BenchmarkMatch(b *testing.B) {
	patterns, queries := benchSelectors()
	m, err := NewMatcher(nil, patterns)
	if err != nil {
		b.Fatal(err)
	}
	ref := newRefMatcher(nil, patterns)
	for _, q := range queries {
		if m.Match(q) != ref.Match(q) {
			b.Fatalf("Match(%q) disagrees with the reference", q)
		}
	}
	// The reference is slow: time a fixed number of its lookups once, then
	// compare with the measured loop.
	const refRounds = 2
	start := time.Now()
	for range refRounds {
		for _, q := range queries {
			ref.Match(q)
		}
	}
	refNs := float64(time.Since(start).Nanoseconds()) / float64(refRounds*len(queries))

	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Match(queries[i%len(queries)])
		i++
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(refNs, "ref-ns/op")
	if ns > 0 {
		b.ReportMetric(refNs/ns, "speedup")
	}
}
