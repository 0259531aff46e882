package dnsproxy

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

func TestAllowedQueryForwarded(t *testing.T) {
	for _, netw := range []string{"udp", "tcp"} {
		t.Run(netw, func(t *testing.T) {
			h := newHarness(t, nil)
			h.up.setZone("www.allowed.test.", []string{"192.0.2.10"})
			m := mkQuery("WWW.Allowed.Test.", dns.TypeA)
			m.Id = 4242
			opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
			opt.SetUDPSize(1232)
			opt.Option = append(opt.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
			m.Extra = append(m.Extra, opt)
			r := h.exchange(netw, m)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("answer: rcode %s, %d records: %v", dns.RcodeToString[r.Rcode], len(r.Answer), r)
			}
			if a := r.Answer[0].(*dns.A); a.A.String() != "192.0.2.10" {
				t.Errorf("answer address %s, want 192.0.2.10", a.A)
			}
			if r.Id != 4242 || r.Question[0].Name != "WWW.Allowed.Test." {
				t.Errorf("answer id %d question %q, want the client's 4242 and its spelling", r.Id, r.Question[0].Name)
			}
			qs := h.up.queries()
			if len(qs) != 1 {
				t.Fatalf("upstream saw %d queries, want 1", len(qs))
			}
			got := qs[0]
			if got.tcp != (netw == "tcp") {
				t.Errorf("upstream transport tcp=%v, want %v", got.tcp, netw == "tcp")
			}
			o := got.msg.IsEdns0()
			if o == nil || o.UDPSize() != 1232 || len(o.Option) != 1 || o.Option[0].Option() != dns.EDNS0NSID {
				t.Errorf("upstream EDNS0 = %v, want the client's (size 1232, NSID)", o)
			}
			if got.msg.Id == 4242 {
				t.Errorf("upstream saw the client's ID; want a fresh one")
			}
			if v := testutilCount(h, netw, "allowed"); v != 1 {
				t.Errorf("moat_dnsproxy_queries_total{verdict=allowed} = %v, want 1", v)
			}
		})
	}
}

func testutilCount(h *harness, netw, verdict string) float64 {
	return counterValue(h.p.m.queries.WithLabelValues(netw, verdict))
}

func TestDeniedQuery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rcode int
	}{{"refused", dns.RcodeRefused}, {"nxdomain option", dns.RcodeNameError}} {
		for _, netw := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+netw, func(t *testing.T) {
				h := newHarness(t, func(c *Config) { c.DenyRcode = tc.rcode })
				h.up.setZone("evil.test.", []string{"192.0.2.66"})
				h.up.setZone("ok.allowed.test.", []string{"192.0.2.1"})
				// Positive control: an allowed query reaches the upstream.
				if r := h.exchange(netw, mkQuery("ok.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
					t.Fatalf("control: rcode %s", dns.RcodeToString[r.Rcode])
				}
				for _, name := range []string{"evil.test.", "a.b.allowed.test.", "allowed.test.evil.", "xallowed.test."} {
					r := h.exchange(netw, mkQuery(name, dns.TypeA))
					if r.Rcode != tc.rcode || len(r.Answer) != 0 {
						t.Errorf("%s: rcode %s with %d answers, want %s and none", name, dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tc.rcode])
					}
				}
				if n := len(h.up.queries()); n != 1 {
					t.Errorf("upstream saw %d queries, want only the control", n)
				}
				if v := h.rejected(ReasonPolicyDenied, rcodeResult(tc.rcode)); v != 4 {
					t.Errorf("rejected{policy_denied} = %v, want 4", v)
				}
				var denied int
				for _, f := range h.flowsCopy() {
					if f.Verdict == flow.Dropped && f.DropReason == flow.DropPolicyDenied && f.L7.DNS.Query != "" {
						denied++
					}
				}
				if denied != 4 {
					t.Errorf("%d policy-denied flows, want 4", denied)
				}
			})
		}
	}
}

func TestUnknownSourceAndNoRuleSet(t *testing.T) {
	h := newHarness(t, nil)
	// No rule set: the endpoint's rules cover only TCP now.
	pol := testPolicy()
	sets := pol.Endpoints[testEndpoint.Key()]
	pol.Endpoints[testEndpoint.Key()] = sets[1:]
	if err := h.p.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	if r := h.exchange("tcp", mkQuery("x.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("control over tcp: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := h.exchange("udp", mkQuery("x.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("udp with no rule set: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if v := h.rejected(ReasonNoRuleSet, resultRefused); v != 1 {
		t.Errorf("rejected{no_rule_set} = %v, want 1", v)
	}
	// Unknown source: the endpoint table no longer knows 127.0.0.1.
	h2 := newHarness(t, func(c *Config) {
		c.Endpoints = EndpointsFunc(func(netip.Addr) (EndpointInfo, bool) { return EndpointInfo{}, false })
	})
	if r := h2.exchange("udp", mkQuery("x.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("unknown source: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if v := h2.rejected(ReasonUnknownSource, resultRefused); v != 1 {
		t.Errorf("rejected{unknown_source} = %v, want 1", v)
	}
	if n := len(h2.up.queries()); n != 0 {
		t.Errorf("upstream saw %d queries from an unknown source", n)
	}
}

func TestSetPolicyJudgesNextQuery(t *testing.T) {
	h := newHarness(t, nil)
	if r := h.exchange("udp", mkQuery("a.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if err := h.p.SetPolicy(Policy{Endpoints: map[EndpointKey][]policy.DNSRuleSet{
		testEndpoint.Key(): {{Proto: policy.ProtoUDP, Rules: []policy.DNSAllow{{Rule: &policy.DNSRule{MatchName: "other.test"}}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if r := h.exchange("udp", mkQuery("a.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("after: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if r := h.exchange("udp", mkQuery("Other.Test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("after, newly allowed name: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestFreshIDAndSourcePortPerQuery(t *testing.T) {
	h := newHarness(t, nil)
	const n = 32
	for range n {
		m := mkQuery("same.allowed.test.", dns.TypeA)
		m.Id = 7
		h.exchange("udp", m)
	}
	ids, ports := map[uint16]bool{}, map[uint16]bool{}
	for _, s := range h.up.queries() {
		ids[s.msg.Id] = true
		ports[s.remote.Port()] = true
	}
	// 32 draws from 65536 values: a repeat has probability < 1%; allow
	// two to keep the test from flaking, not a constant ID.
	if len(ids) < n-2 || len(ports) < n-2 {
		t.Errorf("%d distinct upstream IDs and %d distinct source ports over %d queries, want ~%d each", len(ids), len(ports), n, n)
	}
}

func TestTCPFallbackOnTruncation(t *testing.T) {
	h := newHarness(t, nil)
	var ips []string
	for i := range 60 {
		ips = append(ips, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}).String())
	}
	h.up.setZone("big.allowed.test.", ips)
	h.up.setBehave(func(w dns.ResponseWriter, r *dns.Msg) {
		m := h.up.answer(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Answer = m.Answer[:3]
			m.Truncated = true
		}
		_ = w.WriteMsg(m)
	})
	m := mkQuery("big.allowed.test.", dns.TypeA)
	m.SetEdns0(4096, false)
	r := h.exchange("udp", m)
	if r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("answer: truncated=%v with %d records, want the full 60 from the TCP retry", r.Truncated, len(r.Answer))
	}
	qs := h.up.queries()
	if len(qs) != 2 || qs[0].tcp || !qs[1].tcp {
		t.Fatalf("upstream saw %d queries, want UDP then TCP", len(qs))
	}
	// A client that takes only 512 bytes gets a truncated answer, and
	// then retries over TCP itself.
	small := mkQuery("big.allowed.test.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r2, _, err := c.Exchange(small, h.udp.String())
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Truncated || len(r2.Answer) >= 60 {
		t.Errorf("512-byte client: truncated=%v with %d records, want TC set and fewer records", r2.Truncated, len(r2.Answer))
	}
	// Every learned address came from the full (TCP) answer.
	if got := h.p.Cache().Lookup("big.allowed.test"); len(got) != DefaultMaxIPsPerName && len(got) != 60 {
		t.Errorf("cache holds %d addresses for big.allowed.test", len(got))
	}
}

func TestUpstreamTimeoutServfail(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.UpstreamTimeout = 150 * time.Millisecond })
	h.up.setBehave(func(dns.ResponseWriter, *dns.Msg) {}) // never answers
	start := time.Now()
	r := h.exchange("udp", mkQuery("slow.allowed.test.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("SERVFAIL after %s, before the upstream timeout", d)
	}
	if v := h.rejected(ReasonUpstreamTimeout, resultServFail); v != 1 {
		t.Errorf("rejected{upstream_timeout} = %v, want 1", v)
	}
	var resp *flow.Flow
	for _, f := range h.flowsCopy() {
		if f.Reply == flow.ReplyYes {
			resp = &f
		}
	}
	if resp == nil || resp.L7.DNS.Rcode != dns.RcodeServerFailure {
		t.Errorf("response flow %+v, want one with rcode SERVFAIL", resp)
	}
}

func TestOverloadServfail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		reason string
	}{
		{"global", func(c *Config) { c.MaxInflight = 1 }, ReasonOverload},
		{"per endpoint", func(c *Config) { c.MaxInflightPerEndpoint = 1 }, ReasonOverloadEndpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.mod)
			release := make(chan struct{})
			var arrived atomic.Int32
			h.up.setBehave(func(w dns.ResponseWriter, r *dns.Msg) {
				arrived.Add(1)
				<-release
				_ = w.WriteMsg(h.up.answer(r))
			})
			var wg sync.WaitGroup
			var first *dns.Msg
			wg.Go(func() { first = h.exchange("udp", mkQuery("one.allowed.test.", dns.TypeA)) })
			waitFor(t, "the first query to reach the upstream", func() bool { return arrived.Load() == 1 })
			r := h.exchange("udp", mkQuery("two.allowed.test.", dns.TypeA))
			close(release)
			wg.Wait()
			if r.Rcode != dns.RcodeServerFailure {
				t.Errorf("second query: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
			}
			if first.Rcode != dns.RcodeNameError {
				t.Errorf("first query: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[first.Rcode])
			}
			if v := h.rejected(tc.reason, resultServFail); v != 1 {
				t.Errorf("rejected{%s} = %v, want 1", tc.reason, v)
			}
			// Slots are returned: a third query goes through.
			if r := h.exchange("udp", mkQuery("three.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
				t.Errorf("third query: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, StaticDestination: netip.MustParseAddrPort("127.0.0.1:53"),
		Endpoints: EndpointsFunc(nil), Remotes: RemotesFunc(nil)}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no listen", func(c *Config) { c.Listen = nil }, "Listen: no address"},
		{"no destination", func(c *Config) { c.StaticDestination = netip.AddrPort{} }, "StaticDestination: required"},
		{"bad deny rcode", func(c *Config) { c.DenyRcode = dns.RcodeServerFailure }, "DenyRcode: 2"},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "Endpoints: required"},
		{"negative timeout", func(c *Config) { c.UpstreamTimeout = -1 }, "UpstreamTimeout: negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestQueryToTheProxyItselfRefused: a query whose destination is the
// proxy's own listening address (reached directly, not through the
// redirect) is refused instead of being forwarded to the proxy itself.
func TestQueryToTheProxyItselfRefused(t *testing.T) {
	h := newHarness(t, nil)
	if r := h.exchange("udp", mkQuery("a.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("control: rcode %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	for _, dst := range []netip.AddrPort{h.udp, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), h.udp.Port()), netip.AddrPortFrom(netip.IPv4Unspecified(), h.tcp.Port())} {
		if !h.p.isSelf(dst) {
			t.Errorf("isSelf(%s) = false, want true", dst)
		}
	}
	if h.p.isSelf(h.up.addr) {
		t.Errorf("isSelf(upstream %s) = true", h.up.addr)
	}
	// A proxy whose destination is its own address, as a direct query
	// to its port would be.
	free, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := free.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = free.Close()
	h2 := newHarness(t, func(c *Config) {
		c.Listen = []netip.AddrPort{self}
		c.StaticDestination = self
	})
	if r := h2.exchange("udp", mkQuery("b.allowed.test.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("query to the proxy itself: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if v := h2.rejected(ReasonDestinationIsProxy, resultRefused); v != 1 {
		t.Errorf("rejected{destination_is_proxy} = %v, want 1", v)
	}
}

func TestTCPConnectionBound(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxTCPConns = 1 })
	first, err := net.Dial("tcp4", h.tcp.String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// The first connection works (and stays open).
	c := &dns.Conn{Conn: first}
	if err := c.WriteMsg(mkQuery("a.allowed.test.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if r, err := c.ReadMsg(); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("first connection: %v, %v", r, err)
	}
	// The second is closed at once and counted.
	second, err := net.Dial("tcp4", h.tcp.String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.Read(make([]byte, 1)); err == nil {
		t.Errorf("second connection read %d bytes, want it closed", n)
	}
	if v := h.rejected(ReasonTooManyTCP, resultDrop); v != 1 {
		t.Errorf("rejected{tcp_conns} = %v, want 1", v)
	}
}

// TestSharedUpstreamSockets: with UpstreamSocketQueries = k, every query
// still gets a fresh random ID, the source port changes every k queries,
// and concurrent queries on one socket each get their own answer.
func TestSharedUpstreamSockets(t *testing.T) {
	const k, n = 8, 64
	h := newHarness(t, func(cfg *Config) { cfg.UpstreamSocketQueries = k })
	var wg sync.WaitGroup
	for i := range n {
		name := fmt.Sprintf("q%d.allowed.test.", i)
		h.up.setZone(name, []string{fmt.Sprintf("192.0.2.%d", i+1)})
		wg.Go(func() {
			r := h.exchange("udp", mkQuery(name, dns.TypeA))
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != fmt.Sprintf("192.0.2.%d", i+1) {
				t.Errorf("%s: answer %v; want its own address", name, r.Answer)
			}
		})
	}
	wg.Wait()
	ids, ports := map[uint16]bool{}, map[uint16]int{}
	for _, s := range h.up.queries() {
		ids[s.msg.Id] = true
		ports[s.remote.Port()]++
	}
	if len(ids) < n-2 {
		t.Errorf("%d distinct upstream IDs over %d queries; want ~%d", len(ids), n, n)
	}
	for port, c := range ports {
		if c > k {
			t.Errorf("source port %d carried %d queries; want at most %d", port, c, k)
		}
	}
	if len(ports) < n/k {
		t.Errorf("%d source ports over %d queries; want at least %d", len(ports), n, n/k)
	}
}
