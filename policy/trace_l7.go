package policy

import (
	"net"
	"net/http"
	"regexp"
	"strings"

	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy/fqdn"
)

// trace_l7.go evaluates a traced request the way the proxies do.

// traceHTTP decides a redirected HTTP request.
func traceHTTP(st *TraceStep, dp *DirectionPlan, remote ID, req TraceRequest) {
	var set *HTTPRuleSet
	for i := range dp.HTTP {
		if dp.HTTP[i].Proto == req.Proto && dp.HTTP[i].Ports.Contains(req.Port) {
			set = &dp.HTTP[i]
			break
		}
	}
	if set == nil {
		st.Reason += "; no HTTP rule set for the port: dropped (fail closed)"
		return
	}
	if req.HTTP == nil {
		st.Allowed = true
		st.Reason += "; no HTTP request given, so only the connection is allowed: each request is decided by the HTTP rules"
		return
	}
	h := &TraceL7HTTP{}
	st.HTTP = h
	path, action := httpnorm.Path(req.HTTP.Path)
	h.Action = action.String()
	h.NormalizedPath = path
	if action == httpnorm.Reject {
		h.Status = http.StatusBadRequest
		h.Body = "Bad Request"
		st.Reason += "; request target rejected by path normalisation (400)"
		return
	}
	for i := range set.Rules {
		r := &set.Rules[i]
		if !traceRemoteIn(r.Remotes, remote) {
			continue
		}
		if r.Rule != nil && !httpRuleMatches(r.Rule, req.HTTP, path) {
			continue
		}
		m := *r
		h.Matched = &m
		h.Allowed = true
		st.Allowed = true
		st.Reason += "; HTTP request allowed by " + r.From.String()
		if action == httpnorm.Redirect {
			st.Reason += " (after the client follows the redirect to the normalised path)"
		}
		return
	}
	h.Status = http.StatusForbidden
	h.Body = "Access denied"
	st.Reason += "; no HTTP rule matches: 403 Access denied"
}

// httpRuleMatches applies one rule: RE2 full matches on method, path and
// host (case-insensitive, port stripped), headers by exact value or
// presence.
func httpRuleMatches(r *HTTPRule, req *TraceHTTP, path string) bool {
	if r.Method != "" && !traceRegexMatch(r.Method, req.Method, false) {
		return false
	}
	if r.Path != "" && !traceRegexMatch(r.Path, path, false) {
		return false
	}
	if r.Host != "" {
		host := req.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !traceRegexMatch(r.Host, strings.ToLower(host), true) {
			return false
		}
	}
	for _, hm := range r.Headers {
		v, ok := traceHeaderValue(req.Headers, hm.Name)
		if !ok || (hm.HasValue || hm.Value != "") && v != hm.Value {
			return false
		}
	}
	return true
}

func traceHeaderValue(hs map[string]string, name string) (string, bool) {
	for k, v := range hs {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func traceRegexMatch(expr, s string, fold bool) bool {
	pat := "^(?:" + expr + ")$"
	if fold {
		pat = "(?i)" + pat
	}
	re, err := regexp.Compile(pat)
	if err != nil {
		return false
	}
	return re.MatchString(s)
}

// traceDNS decides a redirected DNS query.
func traceDNS(st *TraceStep, dp *DirectionPlan, remote ID, req TraceRequest) {
	var set *DNSRuleSet
	for i := range dp.DNS {
		if dp.DNS[i].Proto == req.Proto && dp.DNS[i].Ports.Contains(req.Port) {
			set = &dp.DNS[i]
			break
		}
	}
	if set == nil {
		st.Reason += "; no DNS rule set for the port: dropped (fail closed)"
		return
	}
	if req.DNSQuery == "" {
		st.Allowed = true
		st.Reason += "; no DNS query given, so only the packet is allowed: each query is decided by the DNS rules"
		return
	}
	d := &TraceL7DNS{Query: req.DNSQuery}
	st.DNS = d
	for i := range set.Rules {
		r := &set.Rules[i]
		if !traceRemoteIn(r.Remotes, remote) {
			continue
		}
		if r.Rule != nil && !dnsRuleMatches(r.Rule, req.DNSQuery) {
			continue
		}
		m := *r
		d.Matched = &m
		d.Allowed = true
		st.Allowed = true
		st.Reason += "; DNS query allowed by " + r.From.String()
		return
	}
	d.Rcode = "REFUSED"
	st.Reason += "; no DNS rule matches: REFUSED"
}

func dnsRuleMatches(r *DNSRule, q string) bool {
	var names, patterns []string
	if r.MatchName != "" {
		names = []string{r.MatchName}
	}
	if r.MatchPattern != "" {
		patterns = []string{r.MatchPattern}
	}
	m, err := fqdn.NewMatcher(names, patterns)
	if err != nil {
		return false
	}
	return m.Match(q)
}
