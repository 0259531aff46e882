package policy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// compile_fqdn_delta_test.go checks the fast path against full Plans.

// classIPCache names each ipcache identity by its labels, so that two
// Compilers that numbered their classes in another order compare equal.
func classIPCache(p *Plan, extra map[netip.Prefix]ID) map[netip.Prefix]string {
	names := map[ID]string{}
	for _, idn := range p.Identities {
		ls := make([]string, 0, len(idn.Labels))
		for _, l := range idn.Labels {
			ls = append(ls, l.String())
		}
		slices.Sort(ls)
		names[idn.ID] = strings.Join(ls, ",")
	}
	ipc := learnedIPCache(p)
	if extra != nil {
		ipc = extra
	}
	out := map[netip.Prefix]string{}
	for pf, id := range ipc {
		n, ok := names[id]
		if !ok {
			n = fmt.Sprintf("unknown identity %d", id)
		}
		out[pf] = n
	}
	return out
}

// TestCompilerLearnedDeltaMatchesPlans runs random learn and forget
// operations through two Compilers: one takes the fast path whenever it is
// offered (and a Plan otherwise), the other always takes a Plan. The maps
// the first one would hold (the last Plan it took plus every delta since)
// must always be what the second one's Plan says, and the fast path must
// be taken for most operations.
func TestCompilerLearnedDeltaMatchesPlans(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			fast, ref := fqdnTestCompiler(t), fqdnTestCompiler(t)
			plan := fast.Plan()
			ref.Plan()
			held := learnedIPCache(plan) // what the maps hold
			names := []string{"api.example.com", "www.example.com", "a.b.example.com", "x.example.org"}
			addr := func() netip.Addr {
				if rng.IntN(4) == 0 {
					return netip.AddrFrom4([4]byte{10, 9, 0, byte(rng.IntN(8))}) // inside the egressDeny CIDR
				}
				if rng.IntN(4) == 0 {
					return netip.MustParseAddr("10.200.2.10") // the client's own address
				}
				return netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(24))})
			}
			fastOps := 0
			const ops = 400
			for i := range ops {
				name := names[rng.IntN(len(names))]
				ips := []netip.Addr{addr()}
				if rng.IntN(2) == 0 {
					ips = append(ips, addr())
				}
				forgot := rng.IntN(3) == 0
				if forgot {
					fast.ForgetFQDN(name, ips)
					ref.ForgetFQDN(name, ips)
				} else {
					fast.LearnFQDN(name, ips)
					ref.LearnFQDN(name, ips)
				}
				learned := !forgot
				if d, ok := fast.LearnedDelta(plan.Generation); ok && rng.IntN(10) != 0 {
					fastOps++
					for _, e := range d.Put {
						if _, dup := held[e.Prefix]; dup {
							t.Fatalf("op %d: delta puts %s, which the maps hold already", i, e.Prefix)
						}
						held[e.Prefix] = e.Identity
					}
					for _, pf := range d.Delete {
						if _, ok := held[pf]; !ok {
							t.Fatalf("op %d: delta deletes %s, which the maps do not hold", i, pf)
						}
						delete(held, pf)
					}
					// As the agent: an answer whose addresses still wait
					// takes a Plan before it is released; forgotten ones
					// may wait for the next refresh.
					if learned && fast.LearnedPending(ips) {
						plan = fast.Plan()
						held = learnedIPCache(plan)
					}
				} else {
					plan = fast.Plan()
					held = learnedIPCache(plan)
				}
				want := ref.Plan()
				got, exp := classIPCache(plan, held), classIPCache(want, nil)
				if fast.LearnedWaiting() == 0 {
					if !maps.Equal(got, exp) {
						t.Fatalf("op %d: held ipcache differs from a full Plan's:\n got %v\nwant %v", i, got, exp)
					}
				} else {
					// Only addresses forgotten and waiting may differ:
					// the maps still hold them.
					for pf, cls := range got {
						if e := exp[pf]; e != cls && !fast.LearnedPending([]netip.Addr{pf.Addr()}) {
							t.Fatalf("op %d: %s has class %q in the maps, %q in a full Plan, and waits for nothing", i, pf, cls, e)
						}
					}
					for pf := range exp {
						if _, ok := got[pf]; !ok {
							t.Fatalf("op %d: %s is in a full Plan but not in the maps (an answer released before its address was written)", i, pf)
						}
					}
				}
				if rng.IntN(7) == 0 {
					// The next Plan includes every delta (and what waited).
					waiting := fast.LearnedWaiting()
					plan = fast.Plan()
					if got := learnedIPCache(plan); waiting == 0 && !maps.Equal(got, held) {
						t.Fatalf("op %d: Plan after deltas differs from what they wrote:\n got %v\nwant %v", i, got, held)
					}
					held = learnedIPCache(plan) // the caller writes the Plan
				}
			}
			if fastOps < ops/3 {
				t.Fatalf("fast path taken for %d of %d operations; want most", fastOps, ops)
			}
			t.Logf("fast path: %d of %d operations", fastOps, ops)
		})
	}
}

// TestCompilerLearnedDeltaRefuses covers the cases that need a Plan.
func TestCompilerLearnedDeltaRefuses(t *testing.T) {
	pub := netip.MustParseAddr("192.0.2.1")
	t.Run("new class", func(t *testing.T) {
		c := fqdnTestCompiler(t)
		p := c.Plan()
		c.LearnFQDN("api.example.com", []netip.Addr{pub})
		d, ok := c.LearnedDelta(p.Generation)
		if !ok || !d.Empty() || !c.LearnedPending([]netip.Addr{pub}) {
			t.Fatalf("a new class identity: delta %+v, ok %v, pending %v; want no change and the address waiting for a Plan", d, ok, c.LearnedPending([]netip.Addr{pub}))
		}
		if id := learnedIPCache(c.Plan())[netip.PrefixFrom(pub, 32)]; !id.IsLocal() {
			t.Fatalf("the waiting learn is lost: %s has %s", pub, id)
		}
	})
	t.Run("stale generation", func(t *testing.T) {
		c := fqdnTestCompiler(t)
		c.LearnFQDN("api.example.com", []netip.Addr{pub})
		p := c.Plan()
		c.LearnFQDN("api.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.2")})
		if _, ok := c.LearnedDelta(p.Generation - 1); ok {
			t.Fatal("fast path offered against a Plan that is not the latest")
		}
		if _, ok := c.LearnedDelta(p.Generation); !ok {
			t.Fatal("fast path refused for a known class against the latest Plan")
		}
	})
	t.Run("other pending work", func(t *testing.T) {
		c := fqdnTestCompiler(t)
		c.LearnFQDN("api.example.com", []netip.Addr{pub})
		p := c.Plan()
		if err := c.UpsertEndpoint(Endpoint{Namespace: "default", Name: "other", Labels: map[string]string{"app": "other"}, IPv4: netip.MustParseAddr("10.200.2.11")}); err != nil {
			t.Fatal(err)
		}
		c.LearnFQDN("api.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.2")})
		if _, ok := c.LearnedDelta(p.Generation); ok {
			t.Fatal("fast path offered while an endpoint change waits for a Plan")
		}
	})
	t.Run("last address of a class", func(t *testing.T) {
		c := fqdnTestCompiler(t)
		c.LearnFQDN("api.example.com", []netip.Addr{pub})
		p := c.Plan()
		c.ForgetFQDN("api.example.com", []netip.Addr{pub})
		d, ok := c.LearnedDelta(p.Generation)
		if !ok || !d.Empty() || c.LearnedWaiting() != 1 {
			t.Fatalf("releasing a class: delta %+v, ok %v, waiting %d; want no change and one address waiting", d, ok, c.LearnedWaiting())
		}
		if _, ok := learnedIPCache(c.Plan())[netip.PrefixFrom(pub, 32)]; ok {
			t.Fatal("the next Plan still has the forgotten address")
		}
	})
}

// BenchmarkLearnFQDN measures learning one new address of a known class
// with 10,000 addresses learned: through the fast path, and through a
// full Plan.
func BenchmarkLearnFQDN(b *testing.B) {
	for _, mode := range []string{"delta", "plan"} {
		b.Run(mode, func(b *testing.B) {
			pols, err := ParseBytes("fq.yaml", []byte(fqdnTestPolicy))
			if err != nil {
				b.Fatal(err)
			}
			c := NewCompiler(Options{}, nil)
			for _, p := range pols {
				c.UpsertPolicy(p)
			}
			if err := c.UpsertEndpoint(Endpoint{Namespace: "default", Name: "client", Labels: map[string]string{"app": "client"}, IPv4: netip.MustParseAddr("10.200.2.10")}); err != nil {
				b.Fatal(err)
			}
			next := uint32(0)
			addr := func() netip.Addr {
				next++
				return netip.AddrFrom4([4]byte{100, byte(next >> 16), byte(next >> 8), byte(next)})
			}
			for range 10000 {
				c.LearnFQDN("api.example.com", []netip.Addr{addr()})
			}
			p := c.Plan()
			for b.Loop() {
				c.LearnFQDN("api.example.com", []netip.Addr{addr()})
				if mode == "delta" {
					if _, ok := c.LearnedDelta(p.Generation); !ok {
						b.Fatal("fast path refused")
					}
				} else {
					p = c.Plan()
				}
			}
		})
	}
}

// TestCompilerAdoptLearned: a restarted agent's compiler, given the pinned
// ipcache's learned entries (AdoptLocal) and the restored names, gives
// every learned address the number it had, even when classes are created
// in another order.
func TestCompilerAdoptLearned(t *testing.T) {
	a := fqdnTestCompiler(t)
	a.LearnFQDN("api.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.1")})
	a.Plan()
	a.LearnFQDN("www.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")})
	a.LearnFQDN("x.example.com", []netip.Addr{netip.MustParseAddr("10.9.0.1")}) // inside the egressDeny CIDR: a third class
	before := learnedIPCache(a.Plan())

	b := fqdnTestCompiler(t)
	for pf, id := range before {
		if id.IsLocal() {
			if err := b.AdoptLocal(pf, id); err != nil {
				t.Fatalf("adopt %s=%s: %v", pf, id, err)
			}
		}
	}
	// Restored in another order than they were learned.
	b.LearnFQDN("x.example.com", []netip.Addr{netip.MustParseAddr("10.9.0.1")})
	b.LearnFQDN("www.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")})
	b.LearnFQDN("api.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.1")})
	after := learnedIPCache(b.Plan())
	if !maps.Equal(after, before) {
		t.Fatalf("ipcache after a restart differs:\n got %v\nwant %v", after, before)
	}
	// Control: without adoption the numbers move (the test can fail).
	c := fqdnTestCompiler(t)
	c.LearnFQDN("x.example.com", []netip.Addr{netip.MustParseAddr("10.9.0.1")})
	c.LearnFQDN("www.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")})
	c.LearnFQDN("api.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.1")})
	if maps.Equal(learnedIPCache(c.Plan()), before) {
		t.Fatal("control: the classes got the same numbers without adoption, so this test proves nothing; reorder its names")
	}
}
