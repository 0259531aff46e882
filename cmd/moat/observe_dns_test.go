package main

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

func TestObserveDNSFlags(t *testing.T) {
	q := url.Values{}
	d := dnsFilterFlags{name: "*.example.com", rcodes: []string{"NXDOMAIN", "refused"}}
	if err := d.addTo(q); err != nil {
		t.Fatal(err)
	}
	if q.Get("dns-name") != "*.example.com" || strings.Join(q["rcode"], ",") != "NXDOMAIN,refused" {
		t.Fatalf("query %v", q)
	}
	for _, bad := range []dnsFilterFlags{{name: "a..b"}, {rcodes: []string{"NXDOMAINX"}}} {
		if err := bad.addTo(url.Values{}); err == nil || !strings.Contains(err.Error(), "--dns-name") {
			t.Errorf("%+v: err %v; want one naming the flags", bad, err)
		}
	}
}

// TestObserveDNSCompact: the compact line shows a response's rcode and
// REFUSED for a query denied by policy.
func TestObserveDNSCompact(t *testing.T) {
	in := `{"time":"2026-01-02T03:04:05Z","verdict":"FORWARDED","IP":{"source":"10.0.0.53","destination":"10.0.0.1"},"l4":{"protocol":"UDP","source_port":53,"destination_port":40000},"l7":{"type":"RESPONSE","dns":{"query":"missing.example.com.","rcode":3}}}
{"time":"2026-01-02T03:04:05Z","verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED","IP":{"source":"10.0.0.1","destination":"10.0.0.53"},"l4":{"protocol":"UDP","source_port":40000,"destination_port":53},"l7":{"type":"REQUEST","dns":{"query":"www.example.org.","rcode":0}}}
{"time":"2026-01-02T03:04:05Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.0.53"},"l4":{"protocol":"UDP","source_port":40000,"destination_port":53},"l7":{"type":"REQUEST","dns":{"query":"api.example.com.","rcode":0}}}
`
	var out bytes.Buffer
	if err := printFlows(&out, strings.NewReader(in), "compact"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "dns missing.example.com. => NXDOMAIN") ||
		!strings.HasSuffix(lines[1], "dns www.example.org. => REFUSED") || !strings.HasSuffix(lines[2], "dns api.example.com.") {
		t.Fatalf("compact:\n%s", out.String())
	}
}
