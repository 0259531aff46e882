package flow

import (
	"strings"
	"testing"
)

// dnsExchange is one flow of a client->server DNS exchange: a request
// (FORWARDED, or DROPPED when denied) or the response with rcode.
func dnsExchange(query string, reply bool, v Verdict, rcode uint32) Flow {
	f := Flow{
		Time: t0, Verdict: v, Type: TypeL7, EventType: EventL7, IPVersion: IPv4,
		L4:     L4{Protocol: ProtoUDP, SourcePort: 40000, DestinationPort: 53},
		Source: clientEP, Destination: serverEP, TrafficDirection: Egress, Reply: ReplyNo,
		L7: &L7{Type: L7Request, DNS: &DNS{Query: query, Qtypes: []string{"A"}}},
	}
	if v == Dropped {
		f.DropReason = DropPolicyDenied
	}
	if reply {
		f.Source, f.Destination = serverEP, clientEP
		f.L4.SourcePort, f.L4.DestinationPort = 53, 40000
		f.Reply = ReplyYes
		f.L7.Type = L7Response
		f.L7.DNS.Rcode = rcode
	}
	return f
}

func TestParseRcode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint32
	}{
		{"NOERROR", 0}, {"noerror", 0}, {"NXDOMAIN", 3}, {"nxdomain", 3}, {" Refused ", 5},
		{"SERVFAIL", 2}, {"FORMERR", 1}, {"NOTIMP", 4}, {"NOTZONE", 10},
		{"0", 0}, {"5", 5}, {"23", 23}, {"4095", 4095},
		{"Query Refused", 5}, {"non-existent domain", 3}, {"No Error", 0},
	} {
		got, err := ParseRcode(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRcode(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "NXDOMAINX", "-1", "4096", "65536", "refuse"} {
		if _, err := ParseRcode(bad); err == nil || !strings.Contains(err.Error(), "parse rcode") {
			t.Errorf("ParseRcode(%q) = %v; want a parse rcode error", bad, err)
		}
	}
	if RcodeString(3) != "NXDOMAIN" || RcodeString(5) != "REFUSED" || RcodeString(99) != "99" {
		t.Errorf("RcodeString: %s %s %s", RcodeString(3), RcodeString(5), RcodeString(99))
	}
}

func TestFilterDNS(t *testing.T) {
	allowedReq := dnsExchange("api.example.com.", false, Forwarded, 0)
	allowedResp := dnsExchange("api.example.com.", true, Forwarded, 0)
	nxResp := dnsExchange("missing.example.com.", true, Forwarded, 3)
	deniedReq := dnsExchange("www.example.org.", false, Dropped, 0)
	deepResp := dnsExchange("a.b.example.com.", true, Forwarded, 0)
	upperResp := dnsExchange("API.Example.COM.", true, Forwarded, 0)
	httpReq := httpRequest(Egress, "GET")
	tcp := tcpFlow(Forwarded, SYN, ReplyNo)

	mk := func(name string, rcodes ...string) Filter {
		t.Helper()
		fl, err := Filter{}.WithDNS(name, rcodes)
		if err != nil {
			t.Fatalf("WithDNS(%q, %q): %v", name, rcodes, err)
		}
		if err := fl.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		return fl
	}
	tests := []struct {
		name   string
		filter Filter
		flow   Flow
		want   bool
	}{
		{"no dns filter keeps http", mk(""), httpReq, true},
		{"name keeps only dns: http", mk("*"), httpReq, false},
		{"name keeps only dns: tcp", mk("*"), tcp, false},
		{"name exact request", mk("api.example.com"), allowedReq, true},
		{"name exact response", mk("api.example.com"), allowedResp, true},
		{"name case-insensitive", mk("api.example.com"), upperResp, true},
		{"name pattern one label", mk("*.example.com"), allowedResp, true},
		{"name pattern not two labels", mk("*.example.com"), deepResp, false},
		{"name double star two labels", mk("**.example.com"), deepResp, true},
		{"name other zone", mk("*.example.com"), deniedReq, false},
		{"name star every dns flow", mk("*"), deniedReq, true},
		{"rcode NOERROR response", mk("", "NOERROR"), allowedResp, true},
		{"rcode NOERROR not a forwarded request", mk("", "NOERROR"), allowedReq, false},
		{"rcode NOERROR not nxdomain", mk("", "NOERROR"), nxResp, false},
		{"rcode NXDOMAIN", mk("", "NXDOMAIN"), nxResp, true},
		{"rcode by number", mk("", "3"), nxResp, true},
		{"rcode REFUSED: denied request", mk("", "REFUSED"), deniedReq, true},
		{"rcode NOERROR: denied request", mk("", "noerror"), deniedReq, false},
		{"rcode list", mk("", "NOERROR,REFUSED"), deniedReq, true},
		{"rcode repeated", mk("", "NXDOMAIN", "refused"), nxResp, true},
		{"rcode not on http", mk("", "NOERROR"), httpReq, false},
		{"name and rcode both", mk("*.example.org", "REFUSED"), deniedReq, true},
		{"name and rcode: name misses", mk("*.example.com", "REFUSED"), deniedReq, false},
		{"name and rcode: rcode misses", mk("*.example.org", "NOERROR"), deniedReq, false},
		{"literal filter compiles", Filter{DNSName: "*.example.com"}, allowedResp, true},
		{"literal filter misses", Filter{DNSName: "*.example.com"}, deniedReq, false},
		{"denied rcode configured NXDOMAIN", Filter{Rcodes: []uint32{3}, DeniedRcode: 3}, deniedReq, true},
		{"denied rcode configured NXDOMAIN, REFUSED misses", Filter{Rcodes: []uint32{5}, DeniedRcode: 3}, deniedReq, false},
		{"with other fields", func() Filter { f := mk("", "REFUSED"); f.Verdicts = []Verdict{Dropped}; return f }(), deniedReq, true},
		{"with other fields mismatch", func() Filter { f := mk("", "REFUSED"); f.Verdicts = []Verdict{Forwarded}; return f }(), deniedReq, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter.Match(&tt.flow); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterDNSErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		rcodes []string
		want   string
	}{
		{"a..b", nil, "dns name"},
		{"***.example.com", nil, "dns name"},
		{"", []string{"BOGUS"}, "rcode"},
		{"", []string{"NOERROR,70000"}, "rcode"},
	} {
		if _, err := (Filter{}).WithDNS(tt.name, tt.rcodes); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WithDNS(%q, %q) = %v; want an error naming %q", tt.name, tt.rcodes, err, tt.want)
		}
	}
	if err := (Filter{DNSName: "a..b"}).Validate(); err == nil || !strings.Contains(err.Error(), "dns name") {
		t.Errorf("Validate with a bad DNSName = %v", err)
	}
	if err := (Filter{Rcodes: []uint32{5000}}).Validate(); err == nil {
		t.Errorf("Validate with rcode 5000 = nil")
	}
}

// TestRingFilterDNS: the ring applies the DNS filter to Last.
func TestRingFilterDNS(t *testing.T) {
	r, err := NewRing(RingConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Flow{
		dnsExchange("api.example.com.", false, Forwarded, 0),
		dnsExchange("api.example.com.", true, Forwarded, 0),
		dnsExchange("www.example.org.", false, Dropped, 0),
		httpRequest(Egress, "GET"),
	} {
		r.Write(f)
	}
	fl, err := Filter{}.WithDNS("", []string{"REFUSED"})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Last(10, fl)
	if len(got) != 1 || got[0].L7.DNS.Query != "www.example.org." {
		t.Fatalf("Last(REFUSED) = %+v; want the denied www.example.org. request", got)
	}
	fl, _ = Filter{}.WithDNS("api.example.com", nil)
	if got := r.Last(10, fl); len(got) != 2 {
		t.Fatalf("Last(api.example.com) = %d flows; want 2", len(got))
	}
}
