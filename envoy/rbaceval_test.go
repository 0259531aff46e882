package envoy

import (
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/moatnet/moat/envoy/rbaceval"
)

// request is what the reference RBAC evaluator looks at. Headers hold
// lowercase names, including :method and :authority.
type request struct {
	src, dst netip.AddrPort
	path     string // without query
	headers  map[string]string
}

// rbacAllows evaluates cfg with the reference evaluator (envoy/rbaceval),
// failing the test on a matcher it does not know.
func rbacAllows(t *testing.T, cfg *rbacfilterv3.RBAC, r request) bool {
	t.Helper()
	ok, err := rbaceval.Allows(cfg, rbaceval.Request{Src: r.src, Dst: r.dst, Path: r.path, Headers: r.headers})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func cidrContains(t *testing.T, c *corev3.CidrRange, a netip.Addr) bool {
	t.Helper()
	return rbaceval.CIDRContains(c, a)
}

// chainFor finds the filter chain Envoy would pick for the connection (by
// address only, as Translate emits) and returns its RBAC config.
func chainFor(t *testing.T, res *Resources, listener string, r request) *rbacfilterv3.RBAC {
	t.Helper()
	for _, l := range res.Listeners {
		if l.GetName() != listener {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			m := fc.GetFilterChainMatch()
			ok := true
			if rs := m.GetPrefixRanges(); len(rs) > 0 {
				ok = false
				for _, c := range rs {
					ok = ok || cidrContains(t, c, r.dst.Addr())
				}
			}
			if rs := m.GetSourcePrefixRanges(); len(rs) > 0 && ok {
				ok = false
				for _, c := range rs {
					ok = ok || cidrContains(t, c, r.src.Addr())
				}
			}
			if !ok {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatalf("unpack hcm: %v", err)
			}
			rbac := &rbacfilterv3.RBAC{}
			if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(rbac); err != nil {
				t.Fatalf("unpack rbac: %v", err)
			}
			return rbac
		}
	}
	return nil
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestTranslateSemantics(t *testing.T) {
	type check struct {
		name     string
		listener string
		req      request
		allowed  bool
	}
	in, out := "moat/ingress-http/15002", "moat/egress-http/15001"
	req := func(src, dst, method, path string, hdr ...string) request {
		h := map[string]string{":method": method, ":authority": "svc"}
		for i := 0; i+1 < len(hdr); i += 2 {
			h[hdr[i]] = hdr[i+1]
		}
		return request{src: ap(src), dst: ap(dst), path: path, headers: h}
	}
	cases := map[string][]check{
		"starwars-ingress": {
			{"empire lands", in, req("10.0.0.11:40000", "10.0.0.10:80", "POST", "/v1/request-landing"), true},
			{"empire exhaust port", in, req("10.0.0.11:40000", "10.0.0.10:80", "PUT", "/v1/exhaust-port"), false},
			{"empire prefix is not enough", in, req("10.0.0.11:40000", "10.0.0.10:80", "POST", "/v1/request-landing/x"), false},
			{"alliance lands", in, req("10.0.0.12:40000", "10.0.0.10:80", "POST", "/v1/request-landing"), false},
			{"empire on another port", in, req("10.0.0.11:40000", "10.0.0.10:8080", "POST", "/v1/request-landing"), false},
		},
		"http-example": {
			{"GET /path1", in, req("10.0.2.2:1", "10.0.1.1:80", "GET", "/path1"), true},
			{"GET /path1 over v6 destination", in, req("10.0.2.2:1", "[fd00::1:1]:80", "GET", "/path1"), true},
			{"HEAD /path1", in, req("10.0.2.2:1", "10.0.1.1:80", "HEAD", "/path1"), false},
			{"PUT /path2 with header", in, req("10.0.2.2:1", "10.0.1.1:80", "PUT", "/path2", "x-my-header", "true"), true},
			{"PUT /path2 wrong header", in, req("10.0.2.2:1", "10.0.1.1:80", "PUT", "/path2", "x-my-header", "false"), false},
			{"PUT /path2 no header", in, req("10.0.2.2:1", "10.0.1.1:80", "PUT", "/path2"), false},
			{"other peer", in, req("10.0.2.3:1", "10.0.1.1:80", "GET", "/path1"), false},
		},
		"multi-peer": {
			{"app2 shared", in, req("10.0.2.2:1", "10.0.1.1:8080", "GET", "/shared/a"), true},
			{"app3 shared", in, req("10.0.2.3:1", "10.0.1.1:8080", "GET", "/shared/a"), true},
			{"cidr public", in, req("10.9.9.9:1", "10.0.1.1:8080", "PUT", "/public"), true},
			{"pod inside cidr is not the cidr", in, req("10.0.2.2:1", "10.0.1.1:8080", "PUT", "/public"), false},
			{"world", in, req("192.0.2.1:1", "10.0.1.1:8080", "GET", "/public"), false},
		},
		"header-rules": {
			{"token", in, req("192.0.2.1:1", "10.0.1.1:80", "GET", "/", "x-token", "abc"), true},
			{"wrong token", in, req("192.0.2.1:1", "10.0.1.1:80", "GET", "/", "x-token", "abcd"), false},
			{"present and empty", in, req("192.0.2.1:1", "10.0.1.1:80", "GET", "/", "x-present", "anything", "x-empty", ""), true},
			{"present only", in, req("192.0.2.1:1", "10.0.1.1:80", "GET", "/", "x-present", "anything"), false},
		},
		"host-rules": {
			{"api host", out, req("10.0.1.1:5", "203.0.113.9:80", "GET", "/", ":authority", "API.example.com:80"), true},
			{"api host, other address", out, req("10.0.1.1:5", "198.51.100.1:80", "GET", "/", ":authority", "api.example.com"), false},
			{"api host suffix", out, req("10.0.1.1:5", "203.0.113.9:80", "GET", "/", ":authority", "api.example.com.evil"), false},
			{"cilium to world", out, req("10.0.1.1:5", "198.51.100.1:80", "POST", "/", ":authority", "docs.cilium.io"), true},
			{"cilium to the cidr identity", out, req("10.0.1.1:5", "203.0.113.9:80", "POST", "/", ":authority", "docs.cilium.io"), false},
		},
		"port-ranges": {
			{"80 /a", in, req("10.0.2.2:1", "10.0.1.1:80", "GET", "/a"), true},
			{"80 /b", in, req("10.0.2.2:1", "10.0.1.1:80", "GET", "/b"), false},
			{"8080 /b", in, req("10.0.2.2:1", "10.0.1.1:8080", "GET", "/b"), true},
			{"8081 /b", in, req("10.0.2.2:1", "10.0.1.1:8081", "GET", "/b"), false},
			{"any port HEAD from app3", in, req("10.0.2.3:1", "10.0.1.1:1234", "HEAD", "/z"), true},
		},
		"ingress-and-egress": {
			{"ingress GET", in, req("10.0.2.2:1", "10.0.1.1:80", "GET", "/"), true},
			{"egress POST", out, req("10.0.1.1:5", "10.0.2.2:9090", "POST", "/submit"), true},
			{"second endpoint egress POST", out, req("10.0.1.2:5", "10.0.2.2:9090", "POST", "/submit"), true},
			{"egress to another destination", out, req("10.0.1.1:5", "10.0.2.3:9090", "POST", "/submit"), false},
			{"app3 egress GET anywhere", out, req("10.0.1.3:5", "198.51.100.7:80", "GET", "/"), true},
		},
		"allow-all-peer-overlap": {
			{"app2 anything", in, req("10.0.2.2:1", "10.0.1.1:80", "DELETE", "/admin"), true},
			{"app3 GET /x", in, req("10.0.2.3:1", "10.0.1.1:80", "GET", "/x"), true},
			{"app3 not widened", in, req("10.0.2.3:1", "10.0.1.1:80", "DELETE", "/admin"), false},
		},
		"empty-rule-set": {
			{"denied", in, req("10.0.1.2:1", "10.0.1.1:80", "GET", "/"), false},
			{"endpoint without HTTP rules has no chain", in, req("10.0.1.1:1", "10.0.1.2:80", "GET", "/"), false},
		},
	}
	for _, gc := range goldenCases() {
		checks, ok := cases[gc.name]
		if !ok {
			t.Errorf("golden case %s has no semantic checks", gc.name)
			continue
		}
		res, err := Translate(gc.plan(), Config{})
		if err != nil {
			t.Fatalf("%s: Translate: %v", gc.name, err)
		}
		for _, c := range checks {
			t.Run(gc.name+"/"+c.name, func(t *testing.T) {
				rbac := chainFor(t, res, c.listener, c.req)
				if rbac == nil {
					// Envoy closes a connection no chain matches.
					if c.allowed {
						t.Fatalf("no filter chain for %v -> %v", c.req.src, c.req.dst)
					}
					return
				}
				if got := rbacAllows(t, rbac, c.req); got != c.allowed {
					t.Fatalf("allowed = %v, want %v", got, c.allowed)
				}
			})
		}
	}
}

func evalPrincipal(t *testing.T, p *rbacv3.Principal, r request) bool {
	t.Helper()
	ok, err := rbaceval.PrincipalMatches(p, rbaceval.Request{Src: r.src, Dst: r.dst, Path: r.path, Headers: r.headers})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func evalPermission(t *testing.T, p *rbacv3.Permission, r request) bool {
	t.Helper()
	ok, err := rbaceval.PermissionMatches(p, rbaceval.Request{Src: r.src, Dst: r.dst, Path: r.path, Headers: r.headers})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
