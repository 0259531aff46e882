package l7proxy_test

import (
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/l7proxy"
	"github.com/moatnet/moat/policy"
)

// The egress listener that envoy/ emits with EgressKeepSource carries
// original_src without a mark: l7proxy takes it, and then keeps the client's
// address on that listener as Envoy does; without the option it has no
// listener filter and l7proxy decides per destination (TestKeepSource).
// (External: this package may not import envoy.)
func TestCompileEgressListenerKeepSource(t *testing.T) {
	client := policy.EndpointPlan{Name: "client", Namespace: "default", Identity: 300, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.20")}}
	client.Egress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
		Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 80, To: 80},
		Rules: []policy.HTTPAllow{{Remotes: []policy.ID{policy.IDWorld}, Rule: &policy.HTTPRule{Method: "GET"},
			From: policy.RuleRef{Policy: "CiliumNetworkPolicy default/p", Path: "spec.egress[0]"}}},
	}}}
	plan := &policy.Plan{Endpoints: []policy.EndpointPlan{client}}
	for _, keep := range []bool{false, true} {
		res, err := envoy.Translate(plan, envoy.Config{NodeName: "n", EgressKeepSource: keep})
		if err != nil {
			t.Fatalf("Translate(keep=%v): %v", keep, err)
		}
		var found bool
		for _, l := range res.Listeners {
			if l.GetTrafficDirection() != corev3.TrafficDirection_OUTBOUND {
				continue
			}
			found = true
			got, err := l7proxy.KeepsSourceForTest(l, netip.MustParseAddrPort("10.0.0.20:40000"), netip.MustParseAddrPort("192.0.2.77:80"))
			if err != nil {
				t.Fatalf("compile the egress listener (keep=%v): %v", keep, err)
			}
			if got != keep {
				t.Errorf("egress listener (keep=%v) keeps the source: %v", keep, got)
			}
		}
		if !found {
			t.Fatalf("no egress listener in %v", res.Listeners)
		}
	}
}
