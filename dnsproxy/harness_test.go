package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// harness_test.go: a real miekg/dns upstream server on loopback that can be
// told to misbehave, a proxy in front of it, and clients that speak real
// DNS (or raw bytes) over loopback sockets.

// seen is one query the upstream received.
type seen struct {
	msg    *dns.Msg
	remote netip.AddrPort
	tcp    bool
}

// upstream is a miekg/dns server on 127.0.0.1 (UDP and TCP on one port).
type upstream struct {
	addr netip.AddrPort
	mu   sync.Mutex
	// zone answers A queries by default: name (normal form) → addresses.
	zone map[string][]string
	// behave, when set, replaces the default answer.
	behave func(w dns.ResponseWriter, r *dns.Msg)
	seen   []seen
}

func startUpstream(t *testing.T) *upstream { return startUpstreamAt(t, "127.0.0.1") }

func startUpstreamTB(t testing.TB) *upstream { return startUpstreamAt(t, "127.0.0.1") }

// startUpstreamAt starts the upstream on host (an IPv4 or IPv6 literal).
func startUpstreamAt(t testing.TB, host string) *upstream {
	t.Helper()
	u := &upstream{zone: map[string][]string{}}
	fam := "4"
	if strings.Contains(host, ":") {
		fam = "6"
	}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp"+fam, net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp"+fam, pc.LocalAddr().String())
		if err == nil {
			break
		}
		_ = pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no free port for UDP and TCP at once")
	}
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	h := dns.HandlerFunc(u.serve)
	var started sync.WaitGroup
	started.Add(2)
	su := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: started.Done}
	st := &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: started.Done}
	go func() { _ = su.ActivateAndServe() }()
	go func() { _ = st.ActivateAndServe() }()
	started.Wait()
	t.Cleanup(func() {
		_ = su.Shutdown()
		_ = st.Shutdown()
	})
	return u
}

func (u *upstream) serve(w dns.ResponseWriter, r *dns.Msg) {
	ra := w.RemoteAddr()
	var remote netip.AddrPort
	_, tcp := ra.(*net.TCPAddr)
	switch a := ra.(type) {
	case *net.UDPAddr:
		remote = a.AddrPort()
	case *net.TCPAddr:
		remote = a.AddrPort()
	}
	u.mu.Lock()
	u.seen = append(u.seen, seen{msg: r.Copy(), remote: remote, tcp: tcp})
	behave := u.behave
	u.mu.Unlock()
	if behave != nil {
		behave(w, r)
		return
	}
	_ = w.WriteMsg(u.answer(r))
}

// answer is the well-behaved answer from the zone.
func (u *upstream) answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	u.mu.Lock()
	ips, ok := u.zone[strings.ToLower(q.Name)]
	u.mu.Unlock()
	if !ok {
		m.Rcode = dns.RcodeNameError
		return m
	}
	for _, ip := range ips {
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
		}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	return m
}

func (u *upstream) setBehave(f func(w dns.ResponseWriter, r *dns.Msg)) {
	u.mu.Lock()
	u.behave = f
	u.mu.Unlock()
}

func (u *upstream) queries() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

// Test identities.
const (
	testClientID policy.ID = 1000
	testDNSID    policy.ID = 300
)

var testEndpoint = EndpointInfo{Identity: testClientID, Namespace: "default", Name: "client"}

// testPolicy allows *.allowed.test and allowed.test over UDP and TCP on
// every port (the upstream's port is random) and selects *.allowed.test
// and cname.test for toFQDNs.
func testPolicy() Policy {
	rules := []policy.DNSAllow{
		{Rule: &policy.DNSRule{MatchPattern: "*.allowed.test"}},
		{Rule: &policy.DNSRule{MatchName: "allowed.test"}},
		{Rule: &policy.DNSRule{MatchName: "cname.test"}},
	}
	return Policy{
		Endpoints: map[EndpointKey][]policy.DNSRuleSet{
			testEndpoint.Key(): {
				{Proto: policy.ProtoUDP, Rules: rules},
				{Proto: policy.ProtoTCP, Rules: rules},
			},
		},
		FQDNs: []policy.FQDNSelection{
			{Selector: policy.FQDNSelector{MatchPattern: "*.allowed.test"}, Identity: 16777217},
			{Selector: policy.FQDNSelector{MatchName: "target.allowed.test"}, Identity: 16777218},
		},
	}
}

type harness struct {
	t     *testing.T
	p     *Proxy
	up    *upstream
	udp   netip.AddrPort
	tcp   netip.AddrPort
	reg   *prometheus.Registry
	mu    sync.Mutex
	flows []flow.Flow
}

// newHarness starts an upstream and a proxy forwarding to it; mod edits
// the config before New.
func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, up: startUpstream(t), reg: prometheus.NewRegistry()}
	cfg := Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: h.up.addr,
		Endpoints: EndpointsFunc(func(ip netip.Addr) (EndpointInfo, bool) {
			if ip == netip.MustParseAddr("127.0.0.1") {
				return testEndpoint, true
			}
			return EndpointInfo{}, false
		}),
		Remotes:         RemotesFunc(func(netip.Addr) policy.ID { return testDNSID }),
		Registerer:      h.reg,
		UpstreamTimeout: 2 * time.Second,
		OnFlow: func(f flow.Flow) {
			h.mu.Lock()
			h.flows = append(h.flows, f)
			h.mu.Unlock()
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetPolicy(testPolicy()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Bind(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop within 10s")
		}
	})
	h.p = p
	udp, tcp := p.Addrs()
	h.udp, h.tcp = udp[0], tcp[0]
	return h
}

// exchange sends m over net ("udp" or "tcp") and returns the answer.
func (h *harness) exchange(netw string, m *dns.Msg) *dns.Msg {
	h.t.Helper()
	r, err := h.tryExchange(netw, m)
	if err != nil {
		h.t.Fatalf("exchange %s %s: %v", netw, m.Question[0].Name, err)
	}
	return r
}

func (h *harness) tryExchange(netw string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second, UDPSize: 65535}
	addr := h.udp
	if netw == "tcp" {
		addr = h.tcp
	}
	r, _, err := c.Exchange(m, addr.String())
	return r, err
}

func mkQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// rawExchange sends raw bytes over UDP and returns the first datagram back,
// or nil if none arrives before the answer to a valid follow-up query on
// the same socket (the positive control that proves a drop without
// sleeping).
func (h *harness) rawExchange(raw []byte) []byte {
	h.t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(h.udp))
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(raw); err != nil {
		h.t.Fatal(err)
	}
	ctrl := mkQuery("control.allowed.test.", dns.TypeA)
	ctrl.Id = 0xC0DE
	cb, _ := ctrl.Pack()
	// The control goes out after the raw packet; the proxy handles
	// datagrams concurrently, so the raw packet's answer may come second:
	// read up to two datagrams.
	if _, err := c.Write(cb); err != nil {
		h.t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 65535)
	for range 2 {
		n, err := c.Read(buf)
		if err != nil {
			h.t.Fatalf("read: %v (no answer to the control query)", err)
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) == 0xC0DE && (len(raw) < 2 || binary.BigEndian.Uint16(raw) != 0xC0DE) {
			if got != nil {
				return got
			}
			// The control answered first: the raw packet's answer, if
			// any, is still in flight. One more short read decides.
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n2, err := c.Read(buf)
			if err != nil {
				return nil
			}
			return append([]byte(nil), buf[:n2]...)
		}
		got = append([]byte(nil), buf[:n]...)
	}
	return got
}

// counter reads moat_dnsproxy_rejected_total{reason, result}.
func (h *harness) rejected(reason, result string) float64 {
	return testutil.ToFloat64(h.p.m.rejected.WithLabelValues(reason, result))
}

func (h *harness) flowsCopy() []flow.Flow {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.flows)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errNoAnswer = errors.New("no answer")

func (u *upstream) setZone(name string, ips []string) {
	u.mu.Lock()
	u.zone[name] = ips
	u.mu.Unlock()
}
