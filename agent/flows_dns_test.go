package agent

import (
	"net/url"
	"strings"
	"testing"
)

// TestParseFlowQueryDNS: the DNS filters of GET /v1/flows (`moat observe
// --dns-name --rcode`) parse into the flow filter, and bad values name the
// parameter.
func TestParseFlowQueryDNS(t *testing.T) {
	flt, _, _, err := ParseFlowQuery(url.Values{"dns-name": {"*.example.com"}, "rcode": {"NXDOMAIN,refused", "0"}})
	if err != nil {
		t.Fatal(err)
	}
	if flt.DNSName != "*.example.com" || len(flt.Rcodes) != 3 || flt.Rcodes[0] != 3 || flt.Rcodes[1] != 5 || flt.Rcodes[2] != 0 {
		t.Fatalf("filter %+v; want dns name *.example.com and rcodes [3 5 0]", flt)
	}
	for q, want := range map[string]string{
		"dns-name=a..b":      "dns name",
		"dns-name=%2A%2A%2A": "dns name",
		"rcode=BOGUS":        "rcode",
		"rcode=99999":        "rcode",
	} {
		v, _ := url.ParseQuery(q)
		if _, _, _, err := ParseFlowQuery(v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want mention of %q", q, err, want)
		}
	}
}
