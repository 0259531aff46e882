package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/pflag"

	"github.com/moatnet/moat/flow"
)

// observe_dns.go owns `moat observe`'s DNS filters. They are applied by the
// agent (GET /v1/flows?dns-name=…&rcode=…, flow.Filter.WithDNS), so
// --follow only ever streams matching flows; the CLI checks them first so
// that a typo is reported before the agent is asked.

type dnsFilterFlags struct {
	name   string
	rcodes []string
}

func (d *dnsFilterFlags) register(f *pflag.FlagSet) {
	f.StringVar(&d.name, "dns-name", "", "only DNS flows whose query matches this name or pattern (policy matchPattern syntax: *.example.com, **.example.com)")
	f.StringSliceVar(&d.rcodes, "rcode", nil, "only DNS flows answered with this rcode: NOERROR, NXDOMAIN, REFUSED, SERVFAIL, … or a number (repeatable); a query denied by policy counts as REFUSED")
}

// addTo validates the flags and adds them to the flow query.
func (d *dnsFilterFlags) addTo(q url.Values) error {
	if _, err := (flow.Filter{}).WithDNS(d.name, d.rcodes); err != nil {
		if d.name != "" && len(d.rcodes) == 0 {
			return fmt.Errorf("--dns-name %q: %w", d.name, err)
		}
		return fmt.Errorf("--dns-name %q --rcode %q: %w", d.name, d.rcodes, err)
	}
	if d.name != "" {
		q.Set("dns-name", d.name)
	}
	for _, r := range d.rcodes {
		q.Add("rcode", r)
	}
	return nil
}

// dnsCompactSuffix is the rcode of a DNS flow in the compact format:
// " => NXDOMAIN" for responses and for queries denied by policy.
func dnsCompactSuffix(f *flowLine) string {
	if f.L7 == nil || f.L7.DNS == nil {
		return ""
	}
	switch {
	case f.L7.Type == "RESPONSE":
		return " => " + flow.RcodeString(uint32(f.L7.DNS.Rcode))
	case f.Verdict == "DROPPED":
		return " => " + flow.RcodeString(flow.DeniedRcode)
	}
	return ""
}
