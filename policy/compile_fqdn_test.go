package policy

import (
	"net/netip"
	"testing"
)

// compile_fqdn_test.go tests the learned addresses of toFQDNs names.

const fqdnTestPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fq, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toFQDNs: [{matchName: api.example.com}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toFQDNs: [{matchPattern: "*.example.com"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  egressDeny:
  - toCIDR: [10.0.0.0/8]
`

func fqdnTestCompiler(t *testing.T) *Compiler {
	t.Helper()
	pols, err := ParseBytes("fq.yaml", []byte(fqdnTestPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCompiler(Options{}, nil)
	for _, p := range pols {
		c.UpsertPolicy(p)
	}
	if err := c.UpsertEndpoint(Endpoint{Namespace: "default", Name: "client", Labels: map[string]string{"app": "client"}, IPv4: netip.MustParseAddr("10.200.2.10")}); err != nil {
		t.Fatal(err)
	}
	return c
}

func learnedIPCache(p *Plan) map[netip.Prefix]ID {
	out := map[netip.Prefix]ID{}
	for _, e := range p.IPCache {
		out[e.Prefix] = e.Identity
	}
	return out
}

// egressVerdicts returns the verdicts of the client's egress entries for
// identity id on TCP port.
func egressVerdicts(p *Plan, id ID, port uint16) []Verdict {
	var out []Verdict
	for _, e := range p.Endpoint("default", "client").Egress.Entries {
		if e.Identity == id && e.Proto == ProtoTCP && e.CoversPort(port) || e.Identity == id && e.Proto == ProtoAny {
			out = append(out, e.Verdict)
		}
	}
	return out
}

func TestCompilerLearnFQDN(t *testing.T) {
	c := fqdnTestCompiler(t)
	p0 := c.Plan()
	pub, priv, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("198.51.100.7")
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }
	if _, ok := learnedIPCache(p0)[host(pub)]; ok {
		t.Fatalf("ipcache has %s before anything was learned", pub)
	}

	c.LearnFQDN("API.example.com", []netip.Addr{pub, priv})
	c.LearnFQDN("www.example.com", []netip.Addr{other})
	c.LearnFQDN("unselected.example.org", []netip.Addr{netip.MustParseAddr("203.0.113.9")})
	p1 := c.Plan()
	ipc := learnedIPCache(p1)
	idPub, idPriv, idOther := ipc[host(pub)], ipc[host(priv)], ipc[host(other)]
	if !idPub.IsLocal() || !idPriv.IsLocal() || !idOther.IsLocal() {
		t.Fatalf("learned addresses without local identities: %s=%s %s=%s %s=%s", pub, idPub, priv, idPriv, other, idOther)
	}
	if _, ok := ipc[netip.MustParsePrefix("203.0.113.9/32")]; ok {
		t.Fatal("an address of a name no toFQDNs selector selects is in the ipcache")
	}
	if idPub == idOther || idPub == idPriv {
		t.Fatalf("classes share identities: pub %s, priv %s, other %s", idPub, idPriv, idOther)
	}
	// api.example.com is selected by both selectors: ports 80 and 443.
	for _, port := range []uint16{80, 443} {
		if v := egressVerdicts(p1, idPub, port); len(v) != 1 || v[0] != VerdictAllow {
			t.Fatalf("%s port %d: verdicts %v, want one allow", pub, port, v)
		}
	}
	// www.example.com only by the pattern: 443, not 80.
	if v := egressVerdicts(p1, idOther, 443); len(v) != 1 || v[0] != VerdictAllow {
		t.Fatalf("%s port 443: verdicts %v, want allow", other, v)
	}
	if v := egressVerdicts(p1, idOther, 80); len(v) != 0 {
		t.Fatalf("%s port 80: verdicts %v, want none", other, v)
	}
	// 10.1.2.3 stays under the toCIDR deny once learned.
	sawDeny := false
	for _, e := range p1.Endpoint("default", "client").Egress.Entries {
		if e.Identity == idPriv && e.Verdict == VerdictDeny {
			sawDeny = true
		}
	}
	if !sawDeny {
		t.Fatalf("learned %s (inside the denied 10.0.0.0/8) has no deny entry: %+v", priv, p1.Endpoint("default", "client").Egress.Entries)
	}
	if ips, ids := c.LearnedFQDNs(); ips != 4 || ids != 3 {
		t.Fatalf("LearnedFQDNs = %d addresses, %d identities; want 4, 3", ips, ids)
	}
	// One more address of the same class shares the identity.
	pub2 := netip.MustParseAddr("192.0.2.2")
	c.LearnFQDN("api.example.com.", []netip.Addr{pub2})
	p2 := c.Plan()
	if got := learnedIPCache(p2)[host(pub2)]; got != idPub {
		t.Fatalf("%s: identity %s, want the class's %s", pub2, got, idPub)
	}
	if ips, ids := c.LearnedFQDNs(); ips != 5 || ids != 3 {
		t.Fatalf("LearnedFQDNs = %d addresses, %d identities; want 5, 3", ips, ids)
	}

	// Forgetting: the addresses leave the ipcache, the identities go.
	c.ForgetFQDN("api.example.com", []netip.Addr{pub, priv, pub2})
	c.ForgetFQDN("www.example.com", []netip.Addr{other})
	p3 := c.Plan()
	ipc = learnedIPCache(p3)
	for _, a := range []netip.Addr{pub, priv, pub2, other} {
		if id, ok := ipc[host(a)]; ok {
			t.Fatalf("%s still in the ipcache (%s) after it was forgotten", a, id)
		}
	}
	for _, idn := range p3.Identities {
		if idn.ID == idPub || idn.ID == idPriv || idn.ID == idOther {
			t.Fatalf("identity %s of a forgotten class is still listed", idn.ID)
		}
	}
	if ips, ids := c.LearnedFQDNs(); ips != 1 || ids != 0 {
		t.Fatalf("LearnedFQDNs = %d addresses, %d identities; want 1 (unselected), 0", ips, ids)
	}
}

// A selector that appears after the answer was learned selects the
// address from the next Plan on.
func TestCompilerLearnFQDNLateSelector(t *testing.T) {
	c := NewCompiler(Options{}, nil)
	if err := c.UpsertEndpoint(Endpoint{Namespace: "default", Name: "client", Labels: map[string]string{"app": "client"}, IPv4: netip.MustParseAddr("10.200.2.10")}); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.1")
	c.LearnFQDN("api.example.com", []netip.Addr{a})
	if _, ok := learnedIPCache(c.Plan())[netip.PrefixFrom(a, 32)]; ok {
		t.Fatal("learned address in the ipcache with no selector in force")
	}
	pols, err := ParseBytes("fq.yaml", []byte(fqdnTestPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c.UpsertPolicy(pols[0])
	p := c.Plan()
	id, ok := learnedIPCache(p)[netip.PrefixFrom(a, 32)]
	if !ok || !id.IsLocal() {
		t.Fatalf("after the selector appeared: %s in ipcache %v (%s)", a, ok, id)
	}
	if v := egressVerdicts(p, id, 80); len(v) != 1 || v[0] != VerdictAllow {
		t.Fatalf("port 80 verdicts %v, want allow", v)
	}
}
