package dnsproxy

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
)

// TestStateSaveRestore: a proxy's rules and cache survive a restart through
// the state file: the new proxy answers allowed names and refuses others
// before any SetPolicy, its cache holds the learned addresses, and OnLearn
// re-runs for them.
func TestStateSaveRestore(t *testing.T) {
	h := newHarness(t, nil)
	h.up.setZone("www.allowed.test.", []string{"192.0.2.10", "192.0.2.11"})
	h.exchange("udp", mkQuery("www.allowed.test.", dns.TypeA))
	path := filepath.Join(t.TempDir(), "dnsproxy.json")
	if err := SaveState(path, h.p.State()); err != nil {
		t.Fatal(err)
	}

	s, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	relearned := map[string][]netip.Addr{}
	h2 := newHarness(t, func(c *Config) {
		c.OnLearn = func(_ context.Context, name string, ips []netip.Addr, _ []policy.FQDNSelection) error {
			mu.Lock()
			relearned[name] = ips
			mu.Unlock()
			return nil
		}
	})
	// newHarness installs testPolicy; start from nothing to prove the
	// state carries the rules.
	if err := h2.p.SetPolicy(Policy{}); err != nil {
		t.Fatal(err)
	}
	if r := h2.exchange("udp", mkQuery("x.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Fatalf("before restore: rcode %s, want REFUSED (no rules)", dns.RcodeToString[r.Rcode])
	}
	if err := h2.p.Restore(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if r := h2.exchange("udp", mkQuery("x.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("after restore, allowed name: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := h2.exchange("udp", mkQuery("evil.test.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("after restore, other name: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	want := []netip.Addr{ip("192.0.2.10"), ip("192.0.2.11")}
	if got := h2.p.Cache().Lookup("www.allowed.test"); !slices.Equal(got, want) {
		t.Errorf("restored cache: %v, want %v", got, want)
	}
	mu.Lock()
	got := relearned["www.allowed.test."]
	mu.Unlock()
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, want) {
		t.Errorf("OnLearn after restore: %v, want %v", got, want)
	}
	if st := h2.p.State(); len(st.Rules) != 1 || st.Rules[0].Name != "client" || len(st.FQDNs) != 2 {
		t.Errorf("state after restore: %+v", st)
	}
}

func TestStateRestoreDropsExpired(t *testing.T) {
	clk := &fakeClock{now: time.Unix(5000, 0)}
	inUse := ip("192.0.2.2")
	c := NewCache(CacheConfig{Now: clk.Now, InUse: InUseFunc(func(a netip.Addr) bool { return a == inUse })})
	got := c.restore([]CacheEntry{
		{Name: "A.example.", IP: ip("192.0.2.1"), Expires: time.Unix(4000, 0)}, // expired
		{Name: "a.example.", IP: ip("192.0.2.2"), Expires: time.Unix(4000, 0)}, // expired, in use
		{Name: "a.example.", IP: ip("192.0.2.3"), Expires: time.Unix(6000, 0)},
	})
	if !slices.Equal(got["a.example."], []netip.Addr{ip("192.0.2.2"), ip("192.0.2.3")}) {
		t.Errorf("restored %v, want the in-use and the unexpired address", got)
	}
}

func TestLoadStateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadState(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	for name, body := range map[string]string{
		"corrupt.json": `{"version":1,`,
		"version.json": `{"version":99}`,
		"noaddr.json":  `{"version":1,"cache":[{"name":"a."}]}`,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadState(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}
