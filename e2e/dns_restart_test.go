package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dns_restart_test.go: the DNS proxy across an agent SIGKILL, and a name
// backed by many rotating addresses.

// dnsTestbed is the dns-fqdns example running with its upstream and world.
type dnsTestbed struct {
	a       *testAgent
	client  peer
	coredns peer
	up      *fakeUpstream
}

func startDNSTestbed(t *testing.T, short string) dnsTestbed {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("..", "examples", "dns-fqdns", "policies"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("examples/dns-fqdns/policies: %v entries, %v; want one file", len(entries), err)
	}
	a := startAgent(t, agentSpec{
		short:     short,
		endpoints: readExample(t, "endpoints.yaml"),
		policies:  map[string]string{"p.yaml": readExample(t, filepath.Join("policies", entries[0].Name()))},
	})
	b := dnsTestbed{
		a:       a,
		client:  peer{name: "client", ref: "default/client", netns: a.netnsPath("default", "client"), addr: netip.MustParseAddr("10.200.2.10")},
		coredns: peer{name: "coredns", ref: "kube-system/coredns", netns: a.netnsPath("kube-system", "coredns"), addr: netip.MustParseAddr("10.200.2.53")},
	}
	b.up = serveUpstream(t, b.coredns)
	dnsWorld(t)
	return b
}

// resolveRetry resolves like a stub resolver with "timeout:1 attempts:5":
// a fresh query (new ID and port) each try.
func resolveRetry(src peer, server netip.Addr, network, name string) (*dns.Msg, error) {
	var last error
	for range 5 {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		c := &dns.Client{Net: network, Timeout: time.Second}
		var resp *dns.Msg
		err := src.do(func() error {
			var err error
			resp, _, err = c.Exchange(m, netip.AddrPortFrom(server, 53).String())
			return err
		})
		if err == nil {
			return resp, nil
		}
		last = err
	}
	return nil, last
}

type fqdnCacheView struct {
	Entries []struct {
		Name     string `json:"name"`
		IP       string `json:"ip"`
		Identity uint32 `json:"identity"`
	} `json:"entries"`
	LearnedAddresses  int `json:"learnedAddresses"`
	LearnedIdentities int `json:"learnedIdentities"`
}

func (v fqdnCacheView) identityOf(name string, ip netip.Addr) (uint32, bool) {
	for _, e := range v.Entries {
		if e.Name == dns.Fqdn(name) && e.IP == ip.String() {
			return e.Identity, true
		}
	}
	return 0, false
}

// TestPrivilegedDNSRestart: a resolve-then-connect loop keeps running while
// the agent is SIGKILLed and started again. Every allowed name resolves
// (with a stub resolver's retries) and every resolved address takes the
// first SYN; a connection opened before the kill keeps working while the
// agent is down and after; the address it uses keeps its identity, and the
// restarted agent's cache lists it before anything is resolved again.
func TestPrivilegedDNSRestart(t *testing.T) {
	requirePrivileged(t)
	b := startDNSTestbed(t, "dnr")
	resp, err := resolveRetry(b.client, b.coredns.addr, "udp", "api.example.com")
	if err != nil || len(answerIPs(resp)) != 1 {
		t.Fatalf("resolve api.example.com: %v %v", resp, err)
	}
	ip0 := answerIPs(resp)[0]
	c0, err := dialTCP(b.client, netip.AddrPortFrom(ip0, 80), 3*time.Second)
	if err != nil {
		t.Fatalf("connect to %s:80: %v", ip0, err)
	}
	defer c0.Close()
	if err := echoOnce(c0, "before", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	var before fqdnCacheView
	if err := b.a.getJSON("/v1/fqdn/cache", &before); err != nil {
		t.Fatal(err)
	}
	id0, ok := before.identityOf("api.example.com", ip0)
	if !ok || id0&(1<<24) == 0 {
		t.Fatalf("cache before the kill lacks api.example.com -> %s with a local identity: %+v", ip0, before.Entries)
	}

	var iterations, resolveFails, synDrops atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErrs []string
	report := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(firstErrs) < 5 {
			firstErrs = append(firstErrs, fmt.Sprintf(format, args...))
		}
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			network := "udp"
			if i%10 == 9 {
				network = "tcp"
			}
			name := fmt.Sprintf("r%d.example.com", i)
			resp, err := resolveRetry(b.client, b.coredns.addr, network, name)
			if err != nil || resp.Rcode != dns.RcodeSuccess || len(answerIPs(resp)) != 1 {
				resolveFails.Add(1)
				report("iteration %d: resolve %s over %s: %v %v", i, name, network, resp, err)
				iterations.Add(1)
				continue
			}
			if err := firstSYN(b.client, netip.AddrPortFrom(answerIPs(resp)[0], 80)); err != nil {
				synDrops.Add(1)
				report("iteration %d: first SYN to %s (%s): %v", i, answerIPs(resp)[0], name, err)
			}
			iterations.Add(1)
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitUntil(t, "100 iterations before the kill", 60*time.Second, func() bool { return iterations.Load() >= 100 })
	b.a.kill(syscall.SIGKILL)
	killedAt := iterations.Load()
	// While the agent is down: the pinned maps keep the learned address.
	if err := echoOnce(c0, "while down", 3*time.Second); err != nil {
		t.Fatalf("the connection to %s while the agent is down: %v", ip0, err)
	}
	if err := firstSYN(b.client, netip.AddrPortFrom(ip0, 80)); err != nil {
		t.Fatalf("a new connection to %s while the agent is down: %v", ip0, err)
	}
	down := time.Now()
	b.a.start()
	t.Logf("agent down for %s (restart until ready); %d iterations before the kill", time.Since(down).Round(time.Millisecond), killedAt)

	// Restored before anything is resolved again, with the same identity.
	var after fqdnCacheView
	if err := b.a.getJSON("/v1/fqdn/cache", &after); err != nil {
		t.Fatal(err)
	}
	if id, ok := after.identityOf("api.example.com", ip0); !ok || id != id0 {
		t.Fatalf("after the restart api.example.com -> %s has identity %d (listed %v); want %d as before", ip0, id, ok, id0)
	}
	waitUntil(t, "100 iterations after the restart", 60*time.Second, func() bool { return iterations.Load() >= killedAt+100 })
	close(stop)
	wg.Wait()
	if err := echoOnce(c0, "after", 3*time.Second); err != nil {
		t.Fatalf("the connection to %s after the restart: %v", ip0, err)
	}
	t.Logf("%d resolve-then-connect iterations across a SIGKILL: %d resolve failures, %d first-SYN drops", iterations.Load(), resolveFails.Load(), synDrops.Load())
	for _, e := range firstErrs {
		t.Error(e)
	}
	if resolveFails.Load() > 0 || synDrops.Load() > 0 {
		t.Fatalf("%d resolve failures and %d first-SYN drops across the restart; want 0", resolveFails.Load(), synDrops.Load())
	}
}

// TestPrivilegedDNSRotatingAddresses: a name backed by 1,000 addresses,
// answered 8 at a time, stays reachable (every answered address takes the
// first SYN) while the cache cap evicts the oldest; a connection opened to
// one of the first answers keeps working although its address is evicted
// (a live connection's address is never released); the learned addresses
// and identities stay bounded.
func TestPrivilegedDNSRotatingAddresses(t *testing.T) {
	requirePrivileged(t)
	b := startDNSTestbed(t, "dro")
	rng := rand.New(rand.NewPCG(1, 2))
	const rounds = 3 * rotatingPool / rotatingBatch // every address answered three times
	var held net.Conn
	var heldIP netip.Addr
	drops := 0
	for i := range rounds {
		resp, err := resolveRetry(b.client, b.coredns.addr, "udp", "rot.example.com")
		if err != nil || resp.Rcode != dns.RcodeSuccess || len(answerIPs(resp)) != rotatingBatch {
			t.Fatalf("round %d: resolve rot.example.com: %v %v; want %d addresses", i, resp, err, rotatingBatch)
		}
		ips := answerIPs(resp)
		if i == 0 {
			heldIP = ips[0]
			if held, err = dialTCP(b.client, netip.AddrPortFrom(heldIP, 80), 3*time.Second); err != nil {
				t.Fatalf("connect to %s: %v", heldIP, err)
			}
			defer held.Close()
			continue
		}
		ip := ips[rng.IntN(len(ips))]
		if err := firstSYN(b.client, netip.AddrPortFrom(ip, 80)); err != nil {
			drops++
			if drops <= 5 {
				t.Errorf("round %d: first SYN to %s: %v", i, ip, err)
			}
		}
	}
	var v fqdnCacheView
	if err := b.a.getJSON("/v1/fqdn/cache", &v); err != nil {
		t.Fatal(err)
	}
	cached := 0
	for _, e := range v.Entries {
		if e.Name == "rot.example.com." {
			cached++
		}
	}
	t.Logf("%d rounds of %d addresses from a pool of %d: %d first-SYN drops; cache holds %d addresses of the name, compiler %d learned addresses in %d identities",
		rounds, rotatingBatch, rotatingPool, drops, cached, v.LearnedAddresses, v.LearnedIdentities)
	if drops > 0 {
		t.Fatalf("%d first-SYN drops; want 0", drops)
	}
	// Bounded: the cache's cap (64 per name) plus the address in use and
	// a second's evictions not yet swept, one identity for the class.
	if cached > 64 {
		t.Errorf("the cache holds %d addresses of rot.example.com; want at most its cap of 64", cached)
	}
	if m, err := b.a.metrics(); err == nil {
		d, _ := m.sum("moat_fqdn_releases_deferred_total", nil)
		p, _ := m.sum("moat_fqdn_ipcache_writes_total", map[string]string{"path": "patch"})
		f, _ := m.sum("moat_fqdn_ipcache_writes_total", map[string]string{"path": "plan"})
		ev, _ := m.sum("moat_dnsproxy_cache_evictions_total", nil)
		t.Logf("cache evictions %v; ipcache writes: %v patches, %v plans; releases deferred for a live connection %v", ev, p, f, d)
	}
	waitUntil(t, "evicted addresses released", 20*time.Second, func() bool {
		if err := b.a.getJSON("/v1/fqdn/cache", &v); err != nil {
			return false
		}
		return v.LearnedAddresses <= 64+1
	})
	if v.LearnedIdentities != 1 {
		t.Errorf("%d learned identities; want 1 (one class)", v.LearnedIdentities)
	}
	// The evicted addresses are released, but not the held connection's:
	// it still works, and its address stayed in the ipcache.
	if err := echoOnce(held, "still here", 3*time.Second); err != nil {
		t.Fatalf("the connection to %s (evicted from the cache, in use) after the releases: %v", heldIP, err)
	}
	if m, err := b.a.metrics(); err == nil {
		d, _ := m.sum("moat_fqdn_releases_deferred_total", nil)
		if d < 1 {
			t.Errorf("moat_fqdn_releases_deferred_total = %v; want the held connection's address deferred at least once", d)
		}
	}
}
