package rbaceval

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Request is what the evaluator looks at. Headers hold lowercase names,
// including :method and :authority.
type Request struct {
	Src, Dst netip.AddrPort
	Path     string // normalised, without query
	Headers  map[string]string
}

// errUnknown is raised (as a panic caught by Allows) for a matcher the
// evaluator does not know.
type errUnknown struct{ what string }

// Allows is a small, obviously-correct reading of Envoy's RBAC semantics,
// covering exactly the matchers the envoy translation emits; anything else
// is an error, so that a new matcher cannot slip through untested.
func Allows(cfg *rbacfilterv3.RBAC, r Request) (ok bool, err error) {
	defer recoverUnknown(&ok, &err)
	if cfg.GetRules().GetAction() != rbacv3.RBAC_ALLOW {
		return false, fmt.Errorf("evaluate rbac: action %v, want ALLOW", cfg.GetRules().GetAction())
	}
	return allows(cfg, r), nil
}

// CIDRContains reports whether c contains a; it panics with errUnknown on
// a malformed range (recovered by Allows).
func CIDRContains(c *corev3.CidrRange, a netip.Addr) bool { return cidrContains(c, a) }

func allows(cfg *rbacfilterv3.RBAC, r Request) bool {
	for _, p := range cfg.GetRules().GetPolicies() {
		perm, prin := false, false
		for _, x := range p.GetPermissions() {
			perm = perm || evalPermission(x, r)
		}
		for _, x := range p.GetPrincipals() {
			prin = prin || evalPrincipal(x, r)
		}
		if perm && prin {
			return true
		}
	}
	return false
}

func cidrContains(c *corev3.CidrRange, a netip.Addr) bool {
	p, err := netip.ParsePrefix(c.GetAddressPrefix() + "/" + strconv.FormatUint(uint64(c.GetPrefixLen().GetValue()), 10))
	if err != nil {
		panic(errUnknown{fmt.Sprintf("bad cidr %v: %v", c, err)})
	}
	return p.Contains(a)
}

func evalPrincipal(p *rbacv3.Principal, r Request) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return true
	case *rbacv3.Principal_DirectRemoteIp:
		return cidrContains(id.DirectRemoteIp, r.Src.Addr())
	case *rbacv3.Principal_AndIds:
		for _, x := range id.AndIds.GetIds() {
			if !evalPrincipal(x, r) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		for _, x := range id.OrIds.GetIds() {
			if evalPrincipal(x, r) {
				return true
			}
		}
		return false
	case *rbacv3.Principal_NotId:
		return !evalPrincipal(id.NotId, r)
	}
	panic(errUnknown{fmt.Sprintf("unknown principal %T", p.GetIdentifier())})
}

func evalPermission(p *rbacv3.Permission, r Request) bool {
	switch rule := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return true
	case *rbacv3.Permission_DestinationIp:
		return cidrContains(rule.DestinationIp, r.Dst.Addr())
	case *rbacv3.Permission_DestinationPort:
		return uint32(r.Dst.Port()) == rule.DestinationPort
	case *rbacv3.Permission_DestinationPortRange:
		p := int32(r.Dst.Port())
		return p >= rule.DestinationPortRange.GetStart() && p < rule.DestinationPortRange.GetEnd()
	case *rbacv3.Permission_UrlPath:
		return stringMatches(rule.UrlPath.GetPath(), r.Path)
	case *rbacv3.Permission_Header:
		return headerMatches(rule.Header, r)
	case *rbacv3.Permission_AndRules:
		for _, x := range rule.AndRules.GetRules() {
			if !evalPermission(x, r) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_OrRules:
		for _, x := range rule.OrRules.GetRules() {
			if evalPermission(x, r) {
				return true
			}
		}
		return false
	case *rbacv3.Permission_NotRule:
		return !evalPermission(rule.NotRule, r)
	}
	panic(errUnknown{fmt.Sprintf("unknown permission %T", p.GetRule())})
}

func headerMatches(h *routev3.HeaderMatcher, r Request) bool {
	v, ok := r.Headers[h.GetName()]
	switch h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		return ok == h.GetPresentMatch()
	case *routev3.HeaderMatcher_StringMatch:
		return ok && stringMatches(h.GetStringMatch(), v)
	}
	panic(errUnknown{fmt.Sprintf("unknown header matcher %T", h.GetHeaderMatchSpecifier())})
}

func stringMatches(m *matcherv3.StringMatcher, v string) bool {
	switch m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == m.GetExact()
	case *matcherv3.StringMatcher_SafeRegex:
		// Envoy's safe_regex matches the whole value.
		return regexp.MustCompile(`\A(?:` + m.GetSafeRegex().GetRegex() + `)\z`).MatchString(v)
	}
	panic(errUnknown{fmt.Sprintf("unknown string matcher %T", m.GetMatchPattern())})
}

// PrincipalMatches evaluates one principal.
func PrincipalMatches(p *rbacv3.Principal, r Request) (ok bool, err error) {
	defer recoverUnknown(&ok, &err)
	return evalPrincipal(p, r), nil
}

// PermissionMatches evaluates one permission.
func PermissionMatches(p *rbacv3.Permission, r Request) (ok bool, err error) {
	defer recoverUnknown(&ok, &err)
	return evalPermission(p, r), nil
}

func recoverUnknown(ok *bool, err *error) {
	if p := recover(); p != nil {
		u, isUnknown := p.(errUnknown)
		if !isUnknown {
			panic(p)
		}
		*ok, *err = false, fmt.Errorf("evaluate rbac: %s", u.what)
	}
}
