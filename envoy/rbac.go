package envoy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp/syntax"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/moatnet/moat/policy"
)

// rbacConfig turns the HTTP rule sets of one endpoint in one direction into
// an ALLOW RBAC filter: one policy per HTTPAllow, none matching means 403.
//
//   - principals: ingress, the remote identities' addresses as
//     direct_remote_ip (the peer of the downstream connection, never a
//     header); egress, the local endpoint's own addresses.
//   - permissions, AND'ed: the rule set's destination port (range); for
//     egress the remote identities as destination_ip (the accepted socket's
//     local address is the original destination); the rule's method,
//     path, host and headers. A nil Rule adds nothing.
//
// Every permission is tied to its own HTTPAllow's remotes, so an allow-all
// rule for one peer never widens what another peer may do.
func (tr *translator) rbacConfig(d policy.Direction, ep *policy.EndpointPlan, sets []policy.HTTPRuleSet) (*rbacfilterv3.RBAC, error) {
	policies := map[string]*rbacv3.Policy{}
	var self []netip.Prefix
	for _, a := range ep.Addresses {
		a = a.Unmap()
		self = append(self, netip.PrefixFrom(a, a.BitLen()))
	}
	for i, rs := range sets {
		if rs.Proto != policy.ProtoTCP && rs.Proto != policy.ProtoAny {
			return nil, fmt.Errorf("translate %s http[%d]: HTTP rules on %s", d, i, rs.Proto)
		}
		if rs.Ports.From > rs.Ports.To && !rs.Ports.All() {
			return nil, fmt.Errorf("translate %s http[%d]: empty port range %d-%d", d, i, rs.Ports.From, rs.Ports.To)
		}
		for j, allow := range rs.Rules {
			where := fmt.Sprintf("%s http[%d].rules[%d]", d, i, j)
			var perms []*rbacv3.Permission
			if p := portPermission(rs.Ports); p != nil {
				perms = append(perms, p)
			}
			var principal *rbacv3.Principal
			if d == policy.Egress {
				principal = orPrincipals(principalTerms(prefixTerms(self)))
				if p := tr.remotePermission(allow.Remotes); p != nil {
					perms = append(perms, p)
				}
			} else {
				principal = tr.remotePrincipal(allow.Remotes)
			}
			if allow.Rule != nil {
				rp, err := tr.rulePermissions(allow.Rule)
				if err != nil {
					return nil, fmt.Errorf("translate %s: %w", where, err)
				}
				perms = append(perms, rp...)
			}
			name := fmt.Sprintf("http[%d].rules[%d] %s/%s", i, j, protoName(rs.Proto), rs.Ports)
			// The name says where the rule comes from, for config dumps and
			// the matched-policy detail of access logs.
			path := allow.From.Path
			if allow.Rule != nil && allow.Rule.FieldPath != "" {
				path = allow.Rule.FieldPath
			}
			if src := strings.TrimSpace(allow.From.Policy + " " + path); src != "" {
				name += " " + src
			}
			policies[name] = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{andPermissions(perms)},
				Principals:  []*rbacv3.Principal{principal},
			}
		}
	}
	return &rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: policies}}, nil
}

func protoName(p policy.Protocol) string {
	if p == policy.ProtoAny {
		return "TCP"
	}
	return p.String()
}

func prefixTerms(ps []netip.Prefix) ipSet {
	s := make(ipSet, 0, len(ps))
	for _, p := range ps {
		s = append(s, ipTerm{prefix: p})
	}
	return s
}

func cidr(p netip.Prefix) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

func portPermission(r policy.PortRange) *rbacv3.Permission {
	switch {
	case r.All():
		return nil
	case r.From == r.To:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(r.From)}}
	}
	// Int32Range is [start, end).
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
		DestinationPortRange: &typev3.Int32Range{Start: int32(r.From), End: int32(r.To) + 1},
	}}
}

func anyPrincipal() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func principalTerms(s ipSet) []*rbacv3.Principal {
	out := make([]*rbacv3.Principal, 0, len(s))
	ip := func(p netip.Prefix) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(p)}}
	}
	for _, t := range s {
		if len(t.except) == 0 {
			out = append(out, ip(t.prefix))
			continue
		}
		var ex []*rbacv3.Principal
		for _, p := range t.except {
			ex = append(ex, ip(p))
		}
		out = append(out, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			ip(t.prefix),
			{Identifier: &rbacv3.Principal_NotId{NotId: orPrincipals(ex)}},
		}}}})
	}
	return out
}

func permissionTerms(s ipSet) []*rbacv3.Permission {
	out := make([]*rbacv3.Permission, 0, len(s))
	ip := func(p netip.Prefix) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr(p)}}
	}
	for _, t := range s {
		if len(t.except) == 0 {
			out = append(out, ip(t.prefix))
			continue
		}
		var ex []*rbacv3.Permission
		for _, p := range t.except {
			ex = append(ex, ip(p))
		}
		out = append(out, &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			ip(t.prefix),
			{Rule: &rbacv3.Permission_NotRule{NotRule: orPermissions(ex)}},
		}}}})
	}
	return out
}

// orPrincipals matches any of ps; none matches nothing.
func orPrincipals(ps []*rbacv3.Principal) *rbacv3.Principal {
	switch len(ps) {
	case 0:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyPrincipal()}}
	case 1:
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}

// orPermissions matches any of ps; none matches nothing.
func orPermissions(ps []*rbacv3.Permission) *rbacv3.Permission {
	switch len(ps) {
	case 0:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPermission()}}
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

// andPermissions matches all of ps; none matches everything.
func andPermissions(ps []*rbacv3.Permission) *rbacv3.Permission {
	switch len(ps) {
	case 0:
		return anyPermission()
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

// rulePermissions translates one HTTP rule's fields (AND'ed).
func (tr *translator) rulePermissions(r *policy.HTTPRule) ([]*rbacv3.Permission, error) {
	var out []*rbacv3.Permission
	if r.Method != "" {
		re, err := tr.checkRegex("method", r.Method)
		if err != nil {
			return nil, err
		}
		out = append(out, headerRegex(":method", re))
	}
	if r.Path != "" {
		re, err := tr.checkRegex("path", r.Path)
		if err != nil {
			return nil, err
		}
		out = append(out, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}},
			}},
		}}})
	}
	if r.Host != "" {
		re, err := tr.checkRegex("host", r.Host)
		if err != nil {
			return nil, err
		}
		// Host names are case-insensitive and the authority may carry a port.
		host, err := tr.checkRegex("host", "(?i:"+re+")(?::[0-9]+)?")
		if err != nil {
			return nil, err
		}
		out = append(out, headerRegex(":authority", host))
	}
	for k, h := range r.Headers {
		name := strings.ToLower(h.Name)
		if !isToken(name) || strings.HasPrefix(name, ":") {
			return nil, fmt.Errorf("headers[%d]: invalid header name %q", k, h.Name)
		}
		hm := &routev3.HeaderMatcher{Name: name}
		if h.HasValue || h.Value != "" {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value},
			}}
		} else {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		}
		out = append(out, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hm}})
	}
	return out, nil
}

func headerRegex(name, re string) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}},
		}},
	}}}
}

// checkRegex rejects what RE2 (Envoy's safe_regex) would reject; Go's
// regexp implements RE2 syntax. Envoy's regex matchers match the whole
// value, as policies expect.
//
// Envoy also refuses regexes whose compiled RE2 program is larger than the
// runtime limit re2.max_program_size.error_level (raised by Bootstrap to
// BootstrapConfig.RE2MaxProgramSize). Go's compiled program has about the
// same number of instructions as RE2's, so a regex over Config.MaxRegexProgramSize
// is refused here with a clear error rather than NACKed by Envoy; the check
// is an approximation, kept below Envoy's limit by a margin.
func (tr *translator) checkRegex(field, re string) (string, error) {
	err, ok := tr.regexes[re]
	if !ok {
		err = regexError(re, tr.cfg.MaxRegexProgramSize)
		tr.regexes[re] = err
	}
	if err != nil {
		return "", fmt.Errorf("%s: invalid regex %q: %w", field, re, err)
	}
	return re, nil
}

func regexError(re string, limit int) error {
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return err
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return err
	}
	if limit > 0 && len(prog.Inst) > limit {
		return fmt.Errorf("program of %d instructions is over the limit of %d", len(prog.Inst), limit)
	}
	return nil
}

// remotePrincipal matches connections from any of ids (ingress).
func (tr *translator) remotePrincipal(ids []policy.ID) *rbacv3.Principal {
	key := idsKey(ids)
	if p, ok := tr.principals[key]; ok {
		return p
	}
	p := anyPrincipal()
	if s, all := tr.ips.union(ids); !all {
		p = orPrincipals(principalTerms(s))
	}
	tr.principals[key] = p
	return p
}

// remotePermission matches connections to any of ids (egress), nil for
// every destination.
func (tr *translator) remotePermission(ids []policy.ID) *rbacv3.Permission {
	key := idsKey(ids)
	if p, ok := tr.permissions[key]; ok {
		return p
	}
	var p *rbacv3.Permission
	if s, all := tr.ips.union(ids); !all {
		p = orPermissions(permissionTerms(s))
	}
	tr.permissions[key] = p
	return p
}

func idsKey(ids []policy.ID) string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	b := make([]byte, 0, 4*len(ids))
	for _, id := range slices.Compact(ids) {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
	}
	return string(b)
}

// isToken reports whether s is an RFC 9110 token (a valid header name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
