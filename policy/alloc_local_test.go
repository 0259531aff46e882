package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// cidrPolicy is a clusterwide policy letting app=client reach the prefixes.
func cidrPolicy(name string, prefixes ...string) Policy {
	var cr []CIDRRule
	for _, p := range prefixes {
		cr = append(cr, CIDRRule{Prefix: netip.MustParsePrefix(p)})
	}
	return tpol("", name, Rule{EndpointSelector: tsel("", "app=client"),
		Egress: []PeerRule{{Peers: Peers{CIDRs: cr}}}})
}

// ipcacheID returns the identity the Plan's ipcache gives a prefix.
func ipcacheID(t *testing.T, p *Plan, prefix string) ID {
	t.Helper()
	pf := netip.MustParsePrefix(prefix)
	for _, e := range p.IPCache {
		if e.Prefix == pf {
			return e.Identity
		}
	}
	t.Fatalf("plan %d: no ipcache entry for %s", p.Generation, prefix)
	return 0
}

func hasPrefix(p *Plan, prefix string) bool {
	for _, e := range p.IPCache {
		if e.Prefix == netip.MustParsePrefix(prefix) {
			return true
		}
	}
	return false
}

// TestLocalIdentitiesStable: a prefix keeps its identity while anything
// uses it, and a released number is not reused before the Plan that
// dropped it is confirmed applied.
func TestLocalIdentitiesStable(t *testing.T) {
	c := NewCompiler(Options{}, nil)
	if err := c.UpsertEndpoint(tep("default", "client", "10.200.0.1", "app=client")); err != nil {
		t.Fatal(err)
	}
	c.UpsertPolicy(cidrPolicy("a", "192.168.0.0/16"))
	p1 := c.Plan()
	id192 := ipcacheID(t, p1, "192.168.0.0/16")
	if !id192.IsLocal() {
		t.Fatalf("192.168.0.0/16 got %d, not a local identity", id192)
	}

	// An unrelated prefix that sorts first does not move 192.168/16.
	c.UpsertPolicy(cidrPolicy("b", "10.0.0.0/8"))
	p2 := c.Plan()
	if got := ipcacheID(t, p2, "192.168.0.0/16"); got != id192 {
		t.Fatalf("adding 10.0.0.0/8 moved 192.168.0.0/16 from %#x to %#x", uint32(id192), uint32(got))
	}
	id10 := ipcacheID(t, p2, "10.0.0.0/8")
	if id10 == id192 || !id10.IsLocal() {
		t.Fatalf("10.0.0.0/8 got %#x (192.168.0.0/16 has %#x)", uint32(id10), uint32(id192))
	}

	// 10/8 goes away: its number is quarantined until its removal is
	// confirmed applied; a new prefix meanwhile gets another number.
	c.DeletePolicy(KindCiliumClusterwideNetworkPolicy, "", "b")
	p3 := c.Plan()
	if hasPrefix(p3, "10.0.0.0/8") {
		t.Fatal("10.0.0.0/8 still in the ipcache after its policy was deleted")
	}
	if q := c.LocalIdentities().Quarantined(); len(q) != 1 || q[0] != id10 {
		t.Fatalf("quarantine = %v, want [%#x]", q, uint32(id10))
	}
	c.UpsertPolicy(cidrPolicy("c", "172.16.0.0/12"))
	p4 := c.Plan()
	id172 := ipcacheID(t, p4, "172.16.0.0/12")
	if id172 == id10 {
		t.Fatalf("172.16.0.0/12 reused %#x of 10.0.0.0/8 before the removal was confirmed", uint32(id10))
	}
	// Confirming an older Plan than the one that dropped 10/8 frees nothing.
	c.ConfirmApplied(p2.Generation)
	c.UpsertPolicy(cidrPolicy("d", "172.17.0.0/16"))
	p5 := c.Plan()
	if got := ipcacheID(t, p5, "172.17.0.0/16"); got == id10 {
		t.Fatalf("172.17.0.0/16 reused %#x after only plan %d (before the removal in plan %d) was confirmed", uint32(id10), p2.Generation, p3.Generation)
	}

	// The same prefix, back while its number is quarantined, gets it back.
	c.UpsertPolicy(cidrPolicy("b", "10.0.0.0/8"))
	p6 := c.Plan()
	if got := ipcacheID(t, p6, "10.0.0.0/8"); got != id10 {
		t.Fatalf("10.0.0.0/8 came back as %#x, want its quarantined number %#x", uint32(got), uint32(id10))
	}
	c.DeletePolicy(KindCiliumClusterwideNetworkPolicy, "", "b")
	p7 := c.Plan()

	// Once the Plan that dropped it is confirmed, the number is free.
	c.ConfirmApplied(p7.Generation)
	if q := c.LocalIdentities().Quarantined(); len(q) != 0 {
		t.Fatalf("quarantine after confirming plan %d = %v, want empty", p7.Generation, q)
	}
	c.UpsertPolicy(cidrPolicy("e", "192.0.2.0/24"))
	p8 := c.Plan()
	if got := ipcacheID(t, p8, "192.0.2.0/24"); got != id10 {
		t.Fatalf("192.0.2.0/24 got %#x, want the confirmed-free %#x (lowest free)", uint32(got), uint32(id10))
	}
	for _, pf := range []string{"192.168.0.0/16", "172.16.0.0/12", "172.17.0.0/16"} {
		if ipcacheID(t, p8, pf) != ipcacheID(t, p5, pf) {
			t.Fatalf("%s changed identity between plan %d and %d", pf, p5.Generation, p8.Generation)
		}
	}
}

// TestLocalIdentitiesFreshCompileSorted: a compilation from scratch still
// numbers prefixes in sorted order (goldens and restarts rely on it).
func TestLocalIdentitiesFreshCompileSorted(t *testing.T) {
	p, err := Compile(Input{Policies: []Policy{cidrPolicy("a", "192.168.0.0/16", "10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ipcacheID(t, p, "10.0.0.0/8"); got != IDLocalFlag|1 {
		t.Fatalf("10.0.0.0/8 = %#x, want %#x", uint32(got), uint32(IDLocalFlag|1))
	}
	if got := ipcacheID(t, p, "192.168.0.0/16"); got != IDLocalFlag|2 {
		t.Fatalf("192.168.0.0/16 = %#x, want %#x", uint32(got), uint32(IDLocalFlag|2))
	}
}

func TestLocalAllocator(t *testing.T) {
	t.Run("kinds have separate ranges", func(t *testing.T) {
		a := NewLocalAllocator()
		c, _ := a.Acquire(LocalCIDR, "10.0.0.0/8")
		f, _ := a.Acquire(LocalFQDN, "matchName=example.com")
		if c != IDLocalFlag|1 || f != IDLocalFlag|fqdnLocalBase|1 {
			t.Fatalf("got cidr %#x fqdn %#x", uint32(c), uint32(f))
		}
		if k, key, ok := a.Lookup(f); !ok || k != LocalFQDN || key != "matchName=example.com" {
			t.Fatalf("Lookup(%#x) = %v %q %v", uint32(f), k, key, ok)
		}
	})
	t.Run("references", func(t *testing.T) {
		a := NewLocalAllocator()
		x, _ := a.Acquire(LocalCIDR, "x")
		if y, _ := a.Acquire(LocalCIDR, "x"); y != x {
			t.Fatalf("second Acquire of x = %#x, want %#x", uint32(y), uint32(x))
		}
		if err := a.Release(LocalCIDR, "x", 1); err != nil {
			t.Fatal(err)
		}
		a.Confirm(5)
		if z, _ := a.Acquire(LocalCIDR, "z"); z == x {
			t.Fatal("x's number reused while x still held once")
		}
		if err := a.Release(LocalCIDR, "x", 6); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(LocalCIDR, "x", 7); err == nil || !strings.Contains(err.Error(), "not held") {
			t.Fatalf("release of an unheld key: err = %v, want 'not held'", err)
		}
	})
	t.Run("adopt", func(t *testing.T) {
		a := NewLocalAllocator()
		if err := a.Adopt(LocalCIDR, "10.0.0.0/8", IDLocalFlag|3, 1); err != nil {
			t.Fatal(err)
		}
		if err := a.Adopt(LocalCIDR, "192.168.0.0/16", IDLocalFlag|3, 1); err == nil || !strings.Contains(err.Error(), "already adopted") {
			t.Fatalf("adopting a taken number: err = %v", err)
		}
		if err := a.Adopt(LocalFQDN, "x", IDLocalFlag|3, 1); err == nil || !strings.Contains(err.Error(), "outside the fqdn range") {
			t.Fatalf("adopting out of range: err = %v", err)
		}
		if id, _ := a.Acquire(LocalCIDR, "10.0.0.0/8"); id != IDLocalFlag|3 {
			t.Fatalf("adopted key got %#x, want its old number", uint32(id))
		}
		if id, _ := a.Acquire(LocalCIDR, "172.16.0.0/12"); id != IDLocalFlag|1 {
			t.Fatalf("new key got %#x, want the lowest number no map holds", uint32(id))
		}
		if err := a.Adopt(LocalCIDR, "y", IDLocalFlag|9, 1); err == nil || !strings.Contains(err.Error(), "before the first Acquire") {
			t.Fatalf("adopt after acquire: err = %v", err)
		}
	})
	t.Run("adopted but unused stays quarantined", func(t *testing.T) {
		a := NewLocalAllocator()
		if err := a.Adopt(LocalCIDR, "10.0.0.0/8", IDLocalFlag|1, 4); err != nil {
			t.Fatal(err)
		}
		if id, _ := a.Acquire(LocalCIDR, "192.168.0.0/16"); id == IDLocalFlag|1 {
			t.Fatal("an adopted number went to another prefix before any confirm")
		}
		a.Confirm(4)
		if id, _ := a.Acquire(LocalCIDR, "172.16.0.0/12"); id != IDLocalFlag|1 {
			t.Fatalf("after confirm got %#x, want the freed adopted number", uint32(id))
		}
	})
}

// TestLocalIdentitiesChurn: over random policy changes, a prefix present
// in two consecutive Plans keeps its number, and a number a Plan dropped
// goes to another prefix only after that Plan was confirmed applied.
func TestLocalIdentitiesChurn(t *testing.T) {
	pool := []string{"10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "172.16.0.0/12", "192.0.2.0/24", "198.51.100.0/24", "fd00::/8", "2001:db8::/32"}
	rng := rand.New(rand.NewPCG(1, 2))
	c := NewCompiler(Options{}, nil)
	if err := c.UpsertEndpoint(tep("default", "client", "10.200.0.1", "app=client")); err != nil {
		t.Fatal(err)
	}
	type dropped struct {
		prefix string
		gen    uint64
	}
	prev := map[string]ID{}   // prefix -> number in the last Plan
	owner := map[ID]dropped{} // numbers dropped and not yet confirmed
	var confirmed uint64
	for step := range 2000 {
		name := fmt.Sprintf("p%d", rng.IntN(4))
		if rng.IntN(3) == 0 {
			c.DeletePolicy(KindCiliumClusterwideNetworkPolicy, "", name)
		} else {
			var ps []string
			for range 1 + rng.IntN(3) {
				ps = append(ps, pool[rng.IntN(len(pool))])
			}
			c.UpsertPolicy(cidrPolicy(name, ps...))
		}
		p := c.Plan()
		now := map[string]ID{}
		for _, e := range p.IPCache {
			if e.Identity.IsLocal() {
				now[e.Prefix.String()] = e.Identity
			}
		}
		for pf, id := range now {
			if old, ok := prev[pf]; ok && old != id {
				t.Fatalf("step %d: %s moved from %#x to %#x", step, pf, uint32(old), uint32(id))
			}
			if d, ok := owner[id]; ok && d.prefix != pf && d.gen > confirmed {
				t.Fatalf("step %d: %#x given to %s; %s dropped it in plan %d, confirmed only up to %d", step, uint32(id), pf, d.prefix, d.gen, confirmed)
			}
			delete(owner, id)
		}
		for pf, id := range prev {
			if _, ok := now[pf]; !ok {
				owner[id] = dropped{pf, p.Generation}
			}
		}
		prev = now
		if rng.IntN(4) == 0 {
			confirmed = p.Generation
			c.ConfirmApplied(confirmed)
		}
	}
}

// TestLocalIdentitiesFQDNStable: an FQDN selector keeps its identity when
// one that sorts before it appears.
func TestLocalIdentitiesFQDNStable(t *testing.T) {
	fqdnPolicy := func(name, match string) Policy {
		return tpol("", name, Rule{EndpointSelector: tsel("", "app=client"),
			Egress: []PeerRule{{Peers: Peers{FQDNs: []FQDNSelector{{MatchName: match}}}}}})
	}
	idOf := func(p *Plan, match string) ID {
		for _, f := range p.FQDNs {
			if f.Selector.MatchName == match {
				return f.Identity
			}
		}
		t.Fatalf("plan %d: no FQDN selection for %s", p.Generation, match)
		return 0
	}
	c := NewCompiler(Options{}, nil)
	c.UpsertPolicy(fqdnPolicy("a", "www.example.com"))
	before := idOf(c.Plan(), "www.example.com")
	c.UpsertPolicy(fqdnPolicy("b", "api.example.com"))
	p := c.Plan()
	if got := idOf(p, "www.example.com"); got != before {
		t.Fatalf("adding api.example.com moved www.example.com from %#x to %#x", uint32(before), uint32(got))
	}
	if idOf(p, "api.example.com") == before {
		t.Fatal("two selectors share one identity")
	}
}
