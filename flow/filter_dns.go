package flow

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moatnet/moat/policy/fqdn"
)

// filter_dns.go owns the DNS part of a Filter (`moat observe --dns-name
// PATTERN --rcode RCODE`): which DNS flows carry a name and an rcode, and
// how an rcode is spelled on the command line.

// DeniedRcode is the rcode a client gets for a query the DNS proxy denied by
// policy when the proxy is not configured otherwise (REFUSED). Such a query
// is a DROPPED request flow with no response flow, so the rcode filter
// counts it as answered with the Filter's DeniedRcode.
const DeniedRcode uint32 = 5

// rcodeNames are the mnemonics of RFC 1035, 2136 and 6895 (DNS RCODEs
// registry); the Hubble label text (rcodeName) is accepted too.
var rcodeNames = map[string]uint32{
	"NOERROR":  0,
	"FORMERR":  1,
	"SERVFAIL": 2,
	"NXDOMAIN": 3,
	"NOTIMP":   4,
	"REFUSED":  5,
	"YXDOMAIN": 6,
	"YXRRSET":  7,
	"NXRRSET":  8,
	"NOTAUTH":  9,
	"NOTZONE":  10,
}

// ParseRcode reads an rcode by mnemonic (NXDOMAIN, refused, NOERROR, …, any
// case), by Hubble's label text ("Query Refused") or by number (0-4095).
func ParseRcode(s string) (uint32, error) {
	t := strings.TrimSpace(s)
	if n, ok := rcodeNames[strings.ToUpper(t)]; ok {
		return n, nil
	}
	if n, err := strconv.ParseUint(t, 10, 16); err == nil {
		if n > 4095 {
			return 0, fmt.Errorf("parse rcode %q: %d is over 4095, the largest extended rcode", s, n)
		}
		return uint32(n), nil
	}
	for n := range uint32(24) {
		if name := rcodeName(n); name != "" && strings.EqualFold(name, t) {
			return n, nil
		}
	}
	return 0, fmt.Errorf("parse rcode %q: want a name (NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, …) or a number", s)
}

// RcodeString is the mnemonic of rcode, or its number.
func RcodeString(rcode uint32) string {
	for name, n := range rcodeNames {
		if n == rcode {
			return name
		}
	}
	return strconv.FormatUint(uint64(rcode), 10)
}

// WithDNS returns fl with the DNS filters set: name, when not empty, is a
// matchPattern (or plain name) in policy syntax ("*.example.com",
// "**.example.com", "api.example.com", "*"); rcodes, when not empty, are
// parsed with ParseRcode (a flow matches any of them; several in one value
// may be separated by commas). Both keep only DNS flows.
func (fl Filter) WithDNS(name string, rcodes []string) (Filter, error) {
	if name != "" {
		m, err := fqdn.NewMatcher(nil, []string{name})
		if err != nil {
			return fl, fmt.Errorf("dns name: %w", err)
		}
		fl.DNSName, fl.dnsName = name, m
	}
	for _, v := range rcodes {
		for s := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			n, err := ParseRcode(s)
			if err != nil {
				return fl, fmt.Errorf("rcode: %w", err)
			}
			if !slices.Contains(fl.Rcodes, n) {
				fl.Rcodes = append(fl.Rcodes, n)
			}
		}
	}
	return fl, nil
}

// validateDNS checks the DNS fields of a Filter built without WithDNS.
func (fl *Filter) validateDNS() error {
	if fl.DNSName != "" {
		if err := fqdn.ValidatePattern(fl.DNSName); err != nil {
			return fmt.Errorf("validate filter: dns name %q: %w", fl.DNSName, err)
		}
	}
	for _, n := range fl.Rcodes {
		if n > 4095 {
			return fmt.Errorf("validate filter: rcode %d: want 0-4095", n)
		}
	}
	return nil
}

// DNSRcode reports the rcode the client got in the exchange f belongs to:
// a response's own rcode, or denied for a DNS request the proxy dropped by
// policy (answered without asking the server). Other flows, and requests
// that were forwarded, have none.
func DNSRcode(f *Flow, denied uint32) (uint32, bool) {
	if f.L7 == nil || f.L7.DNS == nil {
		return 0, false
	}
	if f.Reply == ReplyYes || f.L7.Type == L7Response {
		return f.L7.DNS.Rcode, true
	}
	if f.Verdict == Dropped {
		return denied, true
	}
	return 0, false
}

// matchDNS applies the DNS fields; true when none is set.
func (fl *Filter) matchDNS(f *Flow) bool {
	if fl.DNSName == "" && len(fl.Rcodes) == 0 {
		return true
	}
	if f.L7 == nil || f.L7.DNS == nil {
		return false
	}
	if fl.DNSName != "" {
		m := fl.dnsName
		if m == nil {
			// A Filter built as a literal: compile here (Validate has
			// checked the pattern).
			var err error
			if m, err = fqdn.NewMatcher(nil, []string{fl.DNSName}); err != nil {
				return false
			}
		}
		if !m.Match(f.L7.DNS.Query) {
			return false
		}
	}
	if len(fl.Rcodes) > 0 {
		denied := fl.DeniedRcode
		if denied == 0 {
			denied = DeniedRcode
		}
		rc, ok := DNSRcode(f, denied)
		if !ok || !slices.Contains(fl.Rcodes, rc) {
			return false
		}
	}
	return true
}
