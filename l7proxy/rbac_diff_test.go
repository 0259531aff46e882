package l7proxy_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/rbaceval"
	"github.com/moatnet/moat/l7proxy"
	"github.com/moatnet/moat/policy"
)

// TestRBACDifferential holds l7proxy's compiled RBAC engine to the
// reference evaluator (envoy/rbaceval) that the envoy translation is tested
// with: for random plans translated by envoy.Translate and random requests,
// both give the same decision.
func TestRBACDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 12))
	methods := []string{"", "GET", "POST|PUT", "G.T", "DELETE"}
	paths := []string{"", "/public/.*", "/health", "/a/[0-9]+", "/v1/.*/x"}
	hosts := []string{"", "deathstar", `.*\.example\.com`, "DeathStar"}
	headerSets := [][]policy.HeaderMatch{nil, {{Name: "X-Token", Value: "abc", HasValue: true}}, {{Name: "X-Trace"}}, {{Name: "x-token", Value: ""}}}
	ids := []policy.ID{300, 301, 302, 303}
	addrs := map[policy.ID]netip.Addr{
		300: netip.MustParseAddr("10.0.0.10"), 301: netip.MustParseAddr("10.0.0.11"),
		302: netip.MustParseAddr("10.0.0.12"), 303: netip.MustParseAddr("10.0.0.13"),
	}
	reqMethods := []string{"GET", "POST", "PUT", "GXT", "DELETE", "get"}
	reqPaths := []string{"/", "/public/x", "/public/", "/health", "/health/", "/a/12", "/a/x", "/v1/q/x", "/v1/x"}
	reqHosts := []string{"deathstar", "DEATHSTAR", "deathstar:80", "api.example.com", "example.com", "", "other"}
	decisions := map[bool]int{}
	for trial := range 200 {
		plan := &policy.Plan{}
		for _, id := range ids {
			a := addrs[id]
			plan.Endpoints = append(plan.Endpoints, policy.EndpointPlan{Name: "ep" + a.String(), Namespace: "default", Identity: id, Addresses: []netip.Addr{a}})
			plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(a, 32), Identity: id})
		}
		var rules []policy.HTTPAllow
		for range 1 + rng.IntN(4) {
			r := policy.HTTPAllow{From: policy.RuleRef{Policy: "p", Path: "r"}}
			for _, id := range ids[1:] {
				if rng.IntN(2) == 0 {
					r.Remotes = append(r.Remotes, id)
				}
			}
			if rng.IntN(5) > 0 {
				r.Rule = &policy.HTTPRule{
					Method: methods[rng.IntN(len(methods))], Path: paths[rng.IntN(len(paths))],
					Host: hosts[rng.IntN(len(hosts))], Headers: headerSets[rng.IntN(len(headerSets))],
				}
			}
			rules = append(rules, r)
		}
		plan.Endpoints[0].Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
			Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 80, To: 80}, Rules: rules,
		}}}
		res, err := envoy.Translate(plan, envoy.Config{NodeName: "n"})
		if err != nil {
			t.Fatalf("trial %d: translate: %v", trial, err)
		}
		for _, l := range res.Listeners {
			for ci, fc := range l.GetFilterChains() {
				hcm := &hcmv3.HttpConnectionManager{}
				if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				cfg := &rbacfilterv3.RBAC{}
				if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
					t.Fatal(err)
				}
				evaluate, err := l7proxy.CompileRBACForTest(cfg)
				if err != nil {
					t.Fatalf("trial %d: l7proxy refuses the translated RBAC: %v", trial, err)
				}
				for range 50 {
					src := addrs[ids[rng.IntN(len(ids))]]
					if rng.IntN(6) == 0 {
						src = netip.MustParseAddr("192.0.2.1")
					}
					method, path, host := reqMethods[rng.IntN(len(reqMethods))], reqPaths[rng.IntN(len(reqPaths))], reqHosts[rng.IntN(len(reqHosts))]
					hdr := map[string]string{}
					switch rng.IntN(4) {
					case 0:
						hdr["x-token"] = "abc"
					case 1:
						hdr["x-token"] = "abcd"
					case 2:
						hdr["x-trace"] = ""
					}
					source, dest := netip.AddrPortFrom(src, 40000), netip.AddrPortFrom(addrs[300], 80)
					refHdr := map[string]string{":method": method, ":authority": host, ":path": path, ":scheme": "http"}
					for k, v := range hdr {
						refHdr[k] = v
					}
					want, err := rbaceval.Allows(cfg, rbaceval.Request{Src: source, Dst: dest, Path: path, Headers: refHdr})
					if err != nil {
						t.Fatalf("trial %d: %v", trial, err)
					}
					got := evaluate(method, host, path, hdr, source, dest)
					if got != want {
						t.Fatalf("trial %d, listener %s chain %d: l7proxy says %v, the reference %v for %s %s host %q headers %v from %s\nrules: %+v",
							trial, l.GetName(), ci, got, want, method, path, host, hdr, src, rules)
					}
					decisions[want]++
				}
			}
		}
	}
	// Both answers must be exercised, or the test proves nothing.
	if decisions[true] < 100 || decisions[false] < 100 {
		t.Fatalf("decisions %v: too few of one kind", decisions)
	}
}
