package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// TestCompilerAdoptLocalCIDR: adopted numbers go to their prefixes in the
// first Plan (whatever the sort order would give), a prefix adopted with
// host bits set is the masked one, and adopting after the first Plan is
// refused.
func TestCompilerAdoptLocalCIDR(t *testing.T) {
	c := NewCompiler(Options{}, nil)
	if err := c.AdoptLocalCIDR(netip.MustParsePrefix("10.1.2.3/8"), IDLocalFlag|2); err != nil {
		t.Fatal(err)
	}
	if err := c.AdoptLocalCIDR(netip.MustParsePrefix("192.168.0.0/16"), IDLocalFlag|1); err != nil {
		t.Fatal(err)
	}
	if err := c.AdoptLocalCIDR(netip.Prefix{}, IDLocalFlag|3); err == nil || !strings.Contains(err.Error(), "invalid prefix") {
		t.Errorf("adopt of an invalid prefix: err = %v, want invalid prefix", err)
	}
	if err := c.AdoptLocalCIDR(netip.MustParsePrefix("172.16.0.0/12"), 7); err == nil || !strings.Contains(err.Error(), "outside the cidr range") {
		t.Errorf("adopt of a non-local number: err = %v, want outside the cidr range", err)
	}
	if err := c.UpsertEndpoint(Endpoint{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}, IPv4: netip.MustParseAddr("10.1.0.1")}); err != nil {
		t.Fatal(err)
	}
	c.UpsertPolicy(cidrEgressPolicy(t, "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
	got := map[string]ID{}
	for _, e := range c.Plan().IPCache {
		if e.Identity.IsLocal() {
			got[e.Prefix.String()] = e.Identity
		}
	}
	want := map[string]ID{"10.0.0.0/8": IDLocalFlag | 2, "192.168.0.0/16": IDLocalFlag | 1, "172.16.0.0/12": IDLocalFlag | 3}
	if len(got) != len(want) {
		t.Fatalf("local ipcache = %v, want %v", got, want)
	}
	for pf, id := range want {
		if got[pf] != id {
			t.Errorf("%s = %d, want %d (local ipcache %v)", pf, got[pf], id, got)
		}
	}
	if err := c.AdoptLocalCIDR(netip.MustParsePrefix("10.99.0.0/16"), IDLocalFlag|9); err == nil {
		t.Error("adopt after the first Plan succeeded")
	}
}

// cidrEgressPolicy lets app=web reach the given prefixes.
func cidrEgressPolicy(t *testing.T, cidrs ...string) Policy {
	t.Helper()
	ps, err := ParseBytes("adopt.yaml", []byte(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDR: [`+strings.Join(cidrs, ", ")+`]
`))
	if err != nil || len(ps) != 1 {
		t.Fatalf("parse policy: %v (%d policies)", err, len(ps))
	}
	return ps[0]
}
