package policy

import (
	"net"
	"net/http"
	"regexp"
	"strconv"
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
	mode, err := httpnorm.ParseMode(req.HTTP.PathMode)
	if err != nil {
		st.Reason += "; " + err.Error()
		return
	}
	// The connection manager's own checks, in the proxy's order.
	for name := range req.HTTP.Headers {
		if !httpnorm.HeaderName(name) {
			h.Status, h.Body = http.StatusBadRequest, "Bad Request"
			st.Reason += "; header name " + strconv.Quote(name) + " rejected (400)"
			return
		}
	}
	if req.HTTP.Method == http.MethodConnect {
		h.Status = http.StatusForbidden
		st.Reason += "; CONNECT is not allowed (403)"
		return
	}
	if mode == httpnorm.ModeStrict && !httpnorm.Host(req.HTTP.Host) {
		h.Status, h.Body = http.StatusBadRequest, "Bad Request"
		st.Reason += "; ambiguous Host header rejected (400)"
		return
	}
	n := httpnorm.Normalize(req.HTTP.Path, mode)
	h.Action = n.Action.String()
	h.NormalizedPath = n.Path
	switch {
	case n.Action == httpnorm.Reject || n.Action == httpnorm.Redirect && mode != httpnorm.ModeEnvoy:
		h.Status, h.Body = http.StatusBadRequest, "Bad Request"
		st.Reason += "; request target rejected by path normalisation (400 " + n.Reason + ")"
		return
	case n.Action == httpnorm.Redirect:
		h.Status = http.StatusTemporaryRedirect
		h.Location = n.Path
		if n.Query != "" {
			h.Location += "?" + n.Query
		}
		st.Reason += "; escaped slash: the proxy answers 307 to " + h.Location + " (trace that path for the follow-up request)"
		return
	}
	if traceUpgrade(req.HTTP.Headers) {
		h.Status, h.Body = http.StatusForbidden, "Access denied"
		st.Reason += "; upgrades are not allowed (403)"
		return
	}
	for i := range set.Rules {
		r := &set.Rules[i]
		if !traceRemoteIn(r.Remotes, remote) {
			continue
		}
		if r.Rule != nil && !httpRuleMatches(r.Rule, req.HTTP, n.Path) {
			continue
		}
		m := *r
		h.Matched = &m
		h.Allowed = true
		st.Allowed = true
		st.Reason += "; HTTP request allowed by " + r.From.String()
		return
	}
	h.Status = http.StatusForbidden
	h.Body = "Access denied"
	st.Reason += "; no HTTP rule matches: 403 Access denied"
}

// traceUpgrade reports an upgrade request as the proxies see one: an
// Upgrade header other than "h2c" with a Connection header naming
// "upgrade".
func traceUpgrade(hs map[string]string) bool {
	up, ok := traceHeaderValue(hs, "Upgrade")
	if !ok || strings.EqualFold(strings.TrimSpace(up), "h2c") {
		return false
	}
	conn, _ := traceHeaderValue(hs, "Connection")
	for t := range strings.SplitSeq(conn, ",") {
		if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
			return true
		}
	}
	return false
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
