package l7proxy

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// request is what RBAC and routes look at: the normalised request and the
// connection's addresses.
type request struct {
	method    string
	authority string
	path      string // normalised, without query
	query     string // raw query, without '?'
	header    func(name string) (string, bool)
	source    netip.AddrPort // downstream peer
	dest      netip.AddrPort // original destination
}

// headerValue returns what Envoy's header matchers see for name (lower
// case): pseudo-headers, or the values of a header joined with ",".
func (r *request) headerValue(name string) (string, bool) {
	switch name {
	case ":method":
		return r.method, true
	case ":authority", "host":
		return r.authority, true
	case ":path":
		if r.query != "" {
			return r.path + "?" + r.query, true
		}
		return r.path, true
	case ":scheme":
		return "http", true
	}
	return r.header(name)
}

type principalFn func(*request) bool
type permissionFn func(*request) bool

// rbacEngine evaluates one RBAC HTTP filter.
type rbacEngine struct {
	allow    bool // action ALLOW (else DENY)
	policies []rbacPolicy
	disabled bool // no rules: the filter lets everything through
}

type rbacPolicy struct {
	name        string
	permissions []permissionFn // OR
	principals  []principalFn  // OR
}

// evaluate returns whether r may pass and, for a denial, the policy that
// decided ("none" when an ALLOW filter matched nothing).
func (e *rbacEngine) evaluate(r *request) (bool, string) {
	if e == nil || e.disabled {
		return true, ""
	}
	for i := range e.policies {
		p := &e.policies[i]
		if anyTrue(p.principals, r) && anyTrue(p.permissions, r) {
			if e.allow {
				return true, p.name
			}
			return false, p.name
		}
	}
	if e.allow {
		return false, "none"
	}
	return true, ""
}

func anyTrue[F ~func(*request) bool](fs []F, r *request) bool {
	for _, f := range fs {
		if f(r) {
			return true
		}
	}
	return false
}

func allTrue[F ~func(*request) bool](fs []F, r *request) bool {
	for _, f := range fs {
		if !f(r) {
			return false
		}
	}
	return true
}

// compileEach compiles the sub-rules of an and/or rule, naming each by its
// field path in errors.
func compileEach[T any, F any](items []T, where, kind string, compile func(T, string) (F, error)) ([]F, error) {
	out := make([]F, 0, len(items))
	for i, it := range items {
		f, err := compile(it, fmt.Sprintf("%s.%s[%d]", where, kind, i))
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func compileRBACFilter(cfg *rbacfilterv3.RBAC, where string) (*rbacEngine, error) {
	if err := onlyFields(cfg, where, "rules"); err != nil {
		return nil, err
	}
	rules := cfg.GetRules()
	if rules == nil {
		return &rbacEngine{disabled: true}, nil
	}
	if err := onlyFields(rules, where+".rules", "action", "policies"); err != nil {
		return nil, err
	}
	e := &rbacEngine{}
	switch rules.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.allow = true
	case rbacv3.RBAC_DENY:
	default:
		return nil, fmt.Errorf("%s.rules.action: unsupported %s", where, rules.GetAction())
	}
	// Envoy evaluates policies in name order; so do we, so that the
	// matched-policy detail is the same.
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		pol := rules.GetPolicies()[n]
		pw := fmt.Sprintf("%s.rules.policies[%q]", where, n)
		if err := onlyFields(pol, pw, "permissions", "principals"); err != nil {
			return nil, err
		}
		p := rbacPolicy{name: n}
		for i, perm := range pol.GetPermissions() {
			f, err := compilePermission(perm, fmt.Sprintf("%s.permissions[%d]", pw, i))
			if err != nil {
				return nil, err
			}
			p.permissions = append(p.permissions, f)
		}
		for i, pr := range pol.GetPrincipals() {
			f, err := compilePrincipal(pr, fmt.Sprintf("%s.principals[%d]", pw, i))
			if err != nil {
				return nil, err
			}
			p.principals = append(p.principals, f)
		}
		e.policies = append(e.policies, p)
	}
	return e, nil
}

func compilePermission(p *rbacv3.Permission, where string) (permissionFn, error) {
	if p == nil {
		return nil, fmt.Errorf("%s: empty permission", where)
	}
	if err := onlyFields(p, where, "and_rules", "or_rules", "any", "header", "url_path",
		"destination_ip", "destination_port", "destination_port_range", "not_rule"); err != nil {
		return nil, err
	}
	switch rule := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !rule.Any {
			return nil, fmt.Errorf("%s.any: must be true", where)
		}
		return func(*request) bool { return true }, nil
	case *rbacv3.Permission_AndRules:
		fs, err := compileEach(rule.AndRules.GetRules(), where, "and_rules.rules", compilePermission)
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return allTrue(fs, r) }, nil
	case *rbacv3.Permission_OrRules:
		fs, err := compileEach(rule.OrRules.GetRules(), where, "or_rules.rules", compilePermission)
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return anyTrue(fs, r) }, nil
	case *rbacv3.Permission_NotRule:
		f, err := compilePermission(rule.NotRule, where+".not_rule")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return !f(r) }, nil
	case *rbacv3.Permission_Header:
		return compileHeaderMatcher(rule.Header, where+".header")
	case *rbacv3.Permission_UrlPath:
		if err := onlyFields(rule.UrlPath, where+".url_path", "path"); err != nil {
			return nil, err
		}
		m, err := compileStringMatcher(rule.UrlPath.GetPath(), where+".url_path.path")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return m(r.path) }, nil
	case *rbacv3.Permission_DestinationIp:
		pfx, err := cidrPrefix(rule.DestinationIp, where+".destination_ip")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return pfx.Contains(r.dest.Addr().Unmap()) }, nil
	case *rbacv3.Permission_DestinationPort:
		port := rule.DestinationPort
		if port > 65535 {
			return nil, fmt.Errorf("%s.destination_port: %d out of range", where, port)
		}
		return func(r *request) bool { return uint32(r.dest.Port()) == port }, nil
	case *rbacv3.Permission_DestinationPortRange:
		if err := onlyFields(rule.DestinationPortRange, where+".destination_port_range", "start", "end"); err != nil {
			return nil, err
		}
		lo, hi := rule.DestinationPortRange.GetStart(), rule.DestinationPortRange.GetEnd()
		if lo < 0 || hi > 65536 || lo >= hi {
			return nil, fmt.Errorf("%s.destination_port_range: invalid [%d, %d)", where, lo, hi)
		}
		return func(r *request) bool { p := int32(r.dest.Port()); return p >= lo && p < hi }, nil
	}
	return nil, fmt.Errorf("%s: no rule set", where)
}

func compilePrincipal(p *rbacv3.Principal, where string) (principalFn, error) {
	if p == nil {
		return nil, fmt.Errorf("%s: empty principal", where)
	}
	if err := onlyFields(p, where, "and_ids", "or_ids", "any", "direct_remote_ip", "remote_ip", "not_id"); err != nil {
		return nil, err
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, fmt.Errorf("%s.any: must be true", where)
		}
		return func(*request) bool { return true }, nil
	case *rbacv3.Principal_AndIds:
		fs, err := compileEach(id.AndIds.GetIds(), where, "and_ids.ids", compilePrincipal)
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return allTrue(fs, r) }, nil
	case *rbacv3.Principal_OrIds:
		fs, err := compileEach(id.OrIds.GetIds(), where, "or_ids.ids", compilePrincipal)
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return anyTrue(fs, r) }, nil
	case *rbacv3.Principal_NotId:
		f, err := compilePrincipal(id.NotId, where+".not_id")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return !f(r) }, nil
	case *rbacv3.Principal_DirectRemoteIp:
		pfx, err := cidrPrefix(id.DirectRemoteIp, where+".direct_remote_ip")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return pfx.Contains(r.source.Addr().Unmap()) }, nil
	case *rbacv3.Principal_RemoteIp:
		// The connection manager trusts no X-Forwarded-For hop
		// (use_remote_address, no xff_num_trusted_hops), so the remote
		// address is the peer's.
		pfx, err := cidrPrefix(id.RemoteIp, where+".remote_ip")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool { return pfx.Contains(r.source.Addr().Unmap()) }, nil
	}
	return nil, fmt.Errorf("%s: no identifier set", where)
}

// compileHeaderMatcher supports string_match (exact, safe_regex) and
// present_match, on lower-case header names.
func compileHeaderMatcher(h *routev3.HeaderMatcher, where string) (permissionFn, error) {
	if err := onlyFields(h, where, "name", "string_match", "present_match"); err != nil {
		return nil, err
	}
	name := h.GetName()
	if name == "" || name != strings.ToLower(name) {
		return nil, fmt.Errorf("%s.name: %q must be a non-empty lower-case header name", where, name)
	}
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		want := spec.PresentMatch
		return func(r *request) bool { _, ok := r.headerValue(name); return ok == want }, nil
	case *routev3.HeaderMatcher_StringMatch:
		m, err := compileStringMatcher(spec.StringMatch, where+".string_match")
		if err != nil {
			return nil, err
		}
		return func(r *request) bool {
			v, ok := r.headerValue(name)
			return ok && m(v)
		}, nil
	}
	return nil, fmt.Errorf("%s: unsupported or missing match specifier", where)
}

func compileStringMatcher(m *matcherv3.StringMatcher, where string) (func(string) bool, error) {
	if m == nil {
		return nil, fmt.Errorf("%s: missing", where)
	}
	if err := onlyFields(m, where, "exact", "safe_regex"); err != nil {
		return nil, err
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := p.Exact
		return func(s string) bool { return s == want }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		if err := onlyFields(p.SafeRegex, where+".safe_regex", "regex", "google_re2"); err != nil {
			return nil, err
		}
		if p.SafeRegex.GetGoogleRe2().GetMaxProgramSize() != nil {
			return nil, fmt.Errorf("%s.safe_regex.google_re2.max_program_size: unsupported", where)
		}
		// Envoy's regex matchers match the whole value.
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%s.safe_regex.regex: %w", where, err)
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("%s: unsupported or missing match pattern", where)
}

// cidrPrefix reads a CidrRange into a masked prefix.
func cidrPrefix(c *corev3.CidrRange, where string) (netip.Prefix, error) {
	if err := onlyFields(c, where, "address_prefix", "prefix_len"); err != nil {
		return netip.Prefix{}, err
	}
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s.address_prefix: %w", where, err)
	}
	a = a.Unmap()
	if c.GetPrefixLen() == nil {
		// Envoy reads a missing length as 0 (everything); refuse instead.
		return netip.Prefix{}, fmt.Errorf("%s.prefix_len: missing", where)
	}
	p, err := a.Prefix(int(c.GetPrefixLen().GetValue()))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s.prefix_len: %w", where, err)
	}
	return p, nil
}
