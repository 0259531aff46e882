package e2e

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/internal/testutil"
)

// dns_test.go runs DNS-aware policy end to end: the examples/dns-fqdns
// policy and endpoints, a real miekg/dns server in the coredns endpoint, a
// "world" netns that owns every address the server hands out, and the
// client resolving through the agent's transparent DNS proxy and then
// connecting to what it resolved.

// dnsWorldRange is owned by the world netns (an AnyIP local route): the
// upstream server answers every A query with a fresh address from it.
var dnsWorldRange = netip.MustParsePrefix("198.19.0.0/16")

// fakeUpstream is the DNS server in the coredns endpoint.
type fakeUpstream struct {
	next  atomic.Uint32
	rot   atomic.Uint32
	mu    sync.Mutex
	asked map[string]int // qname -> queries received
}

// Rotating names (rot*.example.com) are backed by rotatingPool addresses
// from 198.19.100.0, answered rotatingBatch at a time, round robin.
const (
	rotatingPool  = 1000
	rotatingBatch = 8
)

func rotatingAddr(i int) netip.Addr {
	i %= rotatingPool
	return netip.AddrFrom4([4]byte{198, 19, byte(100 + i/256), byte(i)})
}

func (u *fakeUpstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	u.mu.Lock()
	u.asked[strings.ToLower(q.Name)]++
	u.mu.Unlock()
	if q.Qtype == dns.TypeA && strings.HasPrefix(strings.ToLower(q.Name), "rot") {
		k := int(u.rot.Add(1) - 1)
		for j := range rotatingBatch {
			ip := rotatingAddr(k*rotatingBatch + j)
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: ip.AsSlice()})
		}
	} else if q.Qtype == dns.TypeA {
		n := u.next.Add(1)
		// 198.19.1.0 onwards: a fresh address for every answer.
		ip := netip.AddrFrom4([4]byte{198, 19, byte(1 + n>>8), byte(n)})
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: ip.AsSlice()})
	}
	_ = w.WriteMsg(m)
}

func (u *fakeUpstream) queries(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.asked[dns.Fqdn(strings.ToLower(name))]
}

// serveUpstream runs the server on port 53 (UDP and TCP) in p's netns.
func serveUpstream(t *testing.T, p peer) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{asked: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	err := p.do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", "0.0.0.0:53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "0.0.0.0:53")
		return err
	})
	if err != nil {
		if pc != nil {
			pc.Close()
		}
		t.Fatalf("listen for dns in %s: %v", p.name, err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: u}
	tcp := &dns.Server{Listener: ln, Handler: u}
	var wg sync.WaitGroup
	for _, s := range []*dns.Server{udp, tcp} {
		wg.Go(func() { _ = s.ActivateAndServe() })
	}
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		wg.Wait()
	})
	return u
}

// resolve asks server for name's A records from src over network ("udp" or
// "tcp").
func resolve(src peer, server netip.Addr, network, name string) (*dns.Msg, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	var resp *dns.Msg
	var rtt time.Duration
	err := src.do(func() error {
		var err error
		resp, rtt, err = c.Exchange(m, netip.AddrPortFrom(server, 53).String())
		return err
	})
	return resp, rtt, err
}

func answerIPs(m *dns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A)
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// dnsWorld makes the netns that owns dnsWorldRange, with TCP echo servers on
// ports 80 and 81.
func dnsWorld(t *testing.T) peer {
	t.Helper()
	first := dnsWorldRange.Addr().Next() // 198.19.0.1
	pod := testutil.NewPod(t, testutil.PodOptions{Addr: first, Gateway: netip.MustParseAddr("10.220.255.254")})
	testutil.RunCmd(t, "ip", "-n", pod.Name, "route", "add", "local", dnsWorldRange.String(), "dev", "lo")
	testutil.RunCmd(t, "ip", "route", "add", dnsWorldRange.String(), "via", first.String(), "dev", pod.HostIf, "onlink")
	t.Cleanup(func() { _ = runQuiet("ip", "route", "del", dnsWorldRange.String()) })
	w := peer{name: "world", ref: first.String(), netns: pod.NsPath, addr: first}
	serveEcho(t, w, []uint16{80, 81}, nil)
	return w
}

func runQuiet(name string, args ...string) error {
	return exec.Command(name, args...).Run()
}

// readExample reads a file of examples/dns-fqdns.
func readExample(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", "dns-fqdns", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// firstSYN reports whether a connection from src to dst completes within
// 900ms: before the first SYN retransmission (1s), so a first SYN dropped
// because the address was not in the ipcache yet shows as a failure.
func firstSYN(src peer, dst netip.AddrPort) error {
	c, err := dialTCP(src, dst, 900*time.Millisecond)
	if err != nil {
		return err
	}
	return c.Close()
}

// TestPrivilegedDNSFQDNs: with the dns-fqdns example, allowed names resolve
// over UDP and TCP through the transparent proxy, other names get REFUSED
// without reaching the server, a toFQDNs address is reachable on the
// allowed port right after resolution and not on another, an address no
// answer gave is dropped; then MOAT_DNS_ITERATIONS (default 10,000)
// resolve-then-connect rounds, each answer a fresh address, count the first
// SYNs dropped (want 0).
func TestPrivilegedDNSFQDNs(t *testing.T) {
	requirePrivileged(t)
	entries, err := os.ReadDir(filepath.Join("..", "examples", "dns-fqdns", "policies"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("examples/dns-fqdns/policies: %v entries, %v; want one file", len(entries), err)
	}
	a := startAgent(t, agentSpec{
		short:     "dns",
		endpoints: readExample(t, "endpoints.yaml"),
		policies:  map[string]string{"p.yaml": readExample(t, filepath.Join("policies", entries[0].Name()))},
	})
	client := peer{name: "client", ref: "default/client", netns: a.netnsPath("default", "client"), addr: netip.MustParseAddr("10.200.2.10")}
	coredns := peer{name: "coredns", ref: "kube-system/coredns", netns: a.netnsPath("kube-system", "coredns"), addr: netip.MustParseAddr("10.200.2.53")}
	up := serveUpstream(t, coredns)
	world := dnsWorld(t)

	// Positive control: the world netns answers on port 80 from the host,
	// which no policy restricts, at an address of its range.
	if err := probeTCP(hostPeer(), netip.AddrPortFrom(netip.MustParseAddr("198.19.200.1"), 80), 3*time.Second); err != nil {
		t.Fatalf("world netns not reachable from the host (test setup): %v", err)
	}
	_ = world

	var learned netip.Addr
	for _, network := range []string{"udp", "tcp"} {
		resp, _, err := resolve(client, coredns.addr, network, "api.example.com")
		if err != nil {
			t.Fatalf("%s: resolve api.example.com: %v", network, err)
		}
		ips := answerIPs(resp)
		if resp.Rcode != dns.RcodeSuccess || len(ips) != 1 || !dnsWorldRange.Contains(ips[0]) {
			t.Fatalf("%s: api.example.com: rcode %s, answer %v; want NOERROR with one address of %s", network, dns.RcodeToString[resp.Rcode], resp.Answer, dnsWorldRange)
		}
		learned = ips[0]
		// Right after resolution: the first SYN passes on the allowed port.
		if err := firstSYN(client, netip.AddrPortFrom(learned, 80)); err != nil {
			t.Fatalf("%s: connect to %s:80 right after it resolved: %v", network, learned, err)
		}
		resp, _, err = resolve(client, coredns.addr, network, "www.example.com")
		if err != nil || resp.Rcode != dns.RcodeSuccess || len(answerIPs(resp)) != 1 {
			t.Fatalf("%s: www.example.com (matchPattern): %v, %v", network, resp, err)
		}
		before := up.queries("www.example.org")
		resp, _, err = resolve(client, coredns.addr, network, "www.example.org")
		if err != nil {
			t.Fatalf("%s: resolve www.example.org: %v", network, err)
		}
		if resp.Rcode != dns.RcodeRefused || len(resp.Answer) != 0 {
			t.Fatalf("%s: www.example.org: rcode %s, %d answers; want REFUSED", network, dns.RcodeToString[resp.Rcode], len(resp.Answer))
		}
		if n := up.queries("www.example.org"); n != before {
			t.Fatalf("%s: the refused query reached the server (%d queries)", network, n-before)
		}
	}
	if n := up.queries("api.example.com"); n != 2 {
		t.Fatalf("server saw %d queries for api.example.com; want 2 (one per transport)", n)
	}
	// The learned address on a port no rule allows, and an address of the
	// same range that no answer gave: dropped.
	if err := probeTCP(client, netip.AddrPortFrom(learned, 81), deniedTimeout); err != errNoAnswer {
		t.Fatalf("%s:81 (toFQDNs allows 80 only): %v; want dropped", learned, err)
	}
	unresolved := netip.MustParseAddr("198.19.250.250")
	if err := probeTCP(client, netip.AddrPortFrom(unresolved, 80), deniedTimeout); err != errNoAnswer {
		t.Fatalf("%s:80 (never resolved): %v; want dropped", unresolved, err)
	}
	// And the client cannot talk to the DNS server's other ports, nor reach
	// port 53 of the proxy itself.
	if err := probeTCP(client, netip.AddrPortFrom(learned, 80), 3*time.Second); err != nil {
		t.Fatalf("%s:80 again: %v", learned, err)
	}

	// The cache API lists the learned addresses with local identities.
	var cache struct {
		Entries []struct {
			Name     string `json:"name"`
			IP       string `json:"ip"`
			Identity uint32 `json:"identity"`
		} `json:"entries"`
	}
	if err := a.getJSON("/v1/fqdn/cache", &cache); err != nil {
		t.Fatalf("GET /v1/fqdn/cache: %v", err)
	}
	found := false
	for _, e := range cache.Entries {
		if e.IP == learned.String() && e.Name == "api.example.com." && e.Identity&(1<<24) != 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("fqdn cache lacks api.example.com -> %s with a local identity: %+v", learned, cache.Entries)
	}
	// And so does `moat fqdn cache`.
	out, err := exec.CommandContext(t.Context(), a.bins.cli, "fqdn", "cache", "--agent", filepath.Join(a.runDir, "agent.sock")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "api.example.com.") || !strings.Contains(string(out), learned.String()) {
		t.Fatalf("moat fqdn cache: %v\n%s\nwant a line for api.example.com. %s", err, out, learned)
	}

	// Each exchange is a flow in the ring (moat observe) and counts in the
	// Hubble DNS metrics.
	var flowLines []string
	waitUntil(t, "a dropped DNS flow for www.example.org", 5*time.Second, func() bool {
		resp, err := a.api.Get("http://agent/v1/flows?last=1000")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		flowLines = strings.Split(string(b), "\n")
		for _, l := range flowLines {
			if strings.Contains(l, "www.example.org.") && strings.Contains(l, "DROPPED") && strings.Contains(l, `"pod_name":"client"`) {
				return true
			}
		}
		return false
	})
	m0, err := a.metrics()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if v, ok := m0.sum("hubble_dns_queries_total", nil); !ok || v < 6 {
		t.Fatalf("hubble_dns_queries_total = %v (found %v); want at least the 6 queries sent", v, ok)
	}
	if v, ok := m0.sum("hubble_dns_responses_total", map[string]string{"rcode": "No Error"}); !ok || v < 4 {
		t.Errorf("hubble_dns_responses_total{rcode=\"No Error\"} = %v (found %v); want at least 4", v, ok)
	}

	// The loop.
	n := 10000
	if s := os.Getenv("MOAT_DNS_ITERATIONS"); s != "" {
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("MOAT_DNS_ITERATIONS=%q: want a positive number", s)
		}
	}
	var drops, fails int
	var rtts []time.Duration
	seen := map[netip.Addr]bool{}
	start := time.Now()
	for i := range n {
		network := "udp"
		if i%10 == 9 {
			network = "tcp"
		}
		name := "api.example.com"
		if i%2 == 1 {
			name = fmt.Sprintf("n%d.example.com", i)
		}
		resp, rtt, err := resolve(client, coredns.addr, network, name)
		if err != nil || resp.Rcode != dns.RcodeSuccess || len(answerIPs(resp)) != 1 {
			fails++
			if fails <= 5 {
				t.Errorf("iteration %d: resolve %s over %s: %v %v", i, name, network, resp, err)
			}
			continue
		}
		rtts = append(rtts, rtt)
		ip := answerIPs(resp)[0]
		if seen[ip] {
			t.Fatalf("iteration %d: %s answered twice; the test needs fresh addresses", i, ip)
		}
		seen[ip] = true
		if err := firstSYN(client, netip.AddrPortFrom(ip, 80)); err != nil {
			drops++
			if drops <= 5 {
				t.Errorf("iteration %d: first SYN to %s:80 (%s) failed: %v", i, ip, name, err)
			}
		}
	}
	elapsed := time.Since(start)
	slices.Sort(rtts)
	pct := func(p float64) time.Duration {
		if len(rtts) == 0 {
			return 0
		}
		return rtts[min(len(rtts)-1, int(float64(len(rtts))*p))]
	}
	m, err := a.metrics()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	holdSum, _ := m.sum("moat_dnsproxy_hold_seconds_sum", nil)
	holdCount, _ := m.sum("moat_dnsproxy_hold_seconds_count", nil)
	holdTimeouts, _ := m.sum("moat_dnsproxy_rejected_total", map[string]string{"reason": "hold_timeout"})
	mean := time.Duration(0)
	if holdCount > 0 {
		mean = time.Duration(holdSum / holdCount * float64(time.Second))
	}
	t.Logf("%d resolve-then-connect iterations in %s: %d first-SYN drops, %d resolve failures; DNS round trip p50 %s p99 %s max %s; hold mean %s over %.0f holds, %.0f hold timeouts",
		n, elapsed.Round(time.Millisecond), drops, fails, pct(0.5), pct(0.99), pct(1), mean, holdCount, holdTimeouts)
	// Identities stay bounded: one per class (api.example.com is selected by
	// both selectors, the other names by the pattern only), whatever the
	// number of addresses.
	var after struct {
		LearnedAddresses  int `json:"learnedAddresses"`
		LearnedIdentities int `json:"learnedIdentities"`
	}
	if err := a.getJSON("/v1/fqdn/cache", &after); err != nil {
		t.Fatalf("GET /v1/fqdn/cache: %v", err)
	}
	t.Logf("after the loop: %d learned addresses, %d learned identities", after.LearnedAddresses, after.LearnedIdentities)
	if after.LearnedIdentities != 2 {
		t.Errorf("%d learned identities; want 2 (one per class of selectors)", after.LearnedIdentities)
	}
	if drops > 0 || fails > 0 {
		t.Fatalf("%d first-SYN drops and %d resolve failures over %d iterations; want 0", drops, fails, n)
	}
}
