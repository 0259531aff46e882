package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestIPAMAllocatesSkipsNetworkAndBroadcast(t *testing.T) {
	m, err := openIPAM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m.setPool(netip.MustParsePrefix("10.9.0.0/30"))
	a, err := m.allocate("c1/eth0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.allocate("c2/eth0")
	if err != nil {
		t.Fatal(err)
	}
	if a != netip.MustParseAddr("10.9.0.1") || b != netip.MustParseAddr("10.9.0.2") {
		t.Fatalf("got %s and %s, want 10.9.0.1 and 10.9.0.2", a, b)
	}
	again, err := m.allocate("c1/eth0")
	if err != nil || again != a {
		t.Fatalf("second allocate for the same owner: %s, %v; want %s", again, err, a)
	}
	_, err = m.allocate("c3/eth0")
	if !errors.Is(err, errPoolExhausted) {
		t.Fatalf("third allocate in a /30: %v, want exhaustion", err)
	}
	if want := "10.9.0.0/30 has 2 addresses in use"; err == nil || !contains(err.Error(), want) {
		t.Fatalf("exhaustion error %q does not say %q", err, want)
	}
	if err := m.release("c1/eth0"); err != nil {
		t.Fatal(err)
	}
	if err := m.release("c1/eth0"); err != nil {
		t.Fatalf("release twice: %v", err)
	}
	c, err := m.allocate("c3/eth0")
	if err != nil || c != a {
		t.Fatalf("allocate after release: %s, %v; want the freed %s", c, err, a)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestIPAMNoPool(t *testing.T) {
	m, err := openIPAM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.allocate("c/eth0"); err == nil || !contains(err.Error(), "no pod CIDR") {
		t.Fatalf("allocate without a pool: %v, want an error naming the missing pod CIDR", err)
	}
}

// TestIPAMPersists: a reopened allocator (an agent restart) keeps every
// allocation and never hands one out twice.
func TestIPAMPersists(t *testing.T) {
	dir := t.TempDir()
	m, err := openIPAM(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := netip.MustParsePrefix("10.9.1.0/24")
	m.setPool(pool)
	got := map[string]netip.Addr{}
	for i := range 5 {
		owner := fmt.Sprintf("c%d/eth0", i)
		a, err := m.allocate(owner)
		if err != nil {
			t.Fatal(err)
		}
		got[owner] = a
	}
	if err := m.release("c2/eth0"); err != nil {
		t.Fatal(err)
	}
	m2, err := openIPAM(dir)
	if err != nil {
		t.Fatal(err)
	}
	m2.setPool(pool)
	for owner, a := range got {
		if owner == "c2/eth0" {
			continue
		}
		b, err := m2.allocate(owner)
		if err != nil || b != a {
			t.Fatalf("after reopen %s has %s (%v), want %s", owner, b, err, a)
		}
	}
	n, err := m2.allocate("new/eth0")
	if err != nil {
		t.Fatal(err)
	}
	if n != got["c2/eth0"] {
		t.Fatalf("new owner got %s, want the released %s", n, got["c2/eth0"])
	}
	if len(m2.allocated()) != 5 {
		t.Fatalf("allocations after reopen: %v", m2.allocated())
	}
}

func TestIPAMBadFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ipamFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openIPAM(dir)
	if err == nil || !contains(err.Error(), ipamFile) {
		t.Fatalf("open over a bad file: %v, want an error naming %s", err, ipamFile)
	}
}

// TestIPAMConcurrent: concurrent allocations never share an address.
func TestIPAMConcurrent(t *testing.T) {
	m, err := openIPAM(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m.setPool(netip.MustParsePrefix("10.9.2.0/26")) // 62 usable
	const n = 62
	var wg sync.WaitGroup
	addrs := make([]netip.Addr, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { addrs[i], errs[i] = m.allocate(fmt.Sprintf("c%d/eth0", i)) })
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, a := range addrs {
		if errs[i] != nil {
			t.Fatalf("allocate %d: %v", i, errs[i])
		}
		if j, dup := seen[a]; dup {
			t.Fatalf("%s given to %d and %d", a, i, j)
		}
		seen[a] = i
	}
	if _, err := m.allocate("one-more/eth0"); !errors.Is(err, errPoolExhausted) {
		t.Fatalf("63rd allocate: %v, want exhaustion", err)
	}
}
