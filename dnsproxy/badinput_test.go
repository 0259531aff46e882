package dnsproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
)

// rawMsg builds a DNS message from a header and body bytes.
func rawMsg(id, flags, qd, an, ns, ar uint16, body ...[]byte) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, flags, qd, an, ns, ar} {
		binary.BigEndian.PutUint16(b[2*i:], v)
	}
	for _, x := range body {
		b = append(b, x...)
	}
	return b
}

// wireName encodes labels as given (dots and NULs inside a label stay).
func wireName(labels ...string) []byte {
	var b []byte
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func question(name []byte, qtype, qclass uint16) []byte {
	return append(append(append([]byte(nil), name...), u16(qtype)...), u16(qclass)...)
}

var okName = wireName("www", "allowed", "test")

// TestBadQueries sends malformed and unusual queries on the wire and checks
// each gets its defined result, is counted by reason, and never reaches the
// upstream.
func TestBadQueries(t *testing.T) {
	const rd = 0x0100
	long := make([]string, 5)
	for i := range long {
		long[i] = strings.Repeat("a", 63)
	}
	valid := rawMsg(0x1111, rd, 1, 0, 0, 0, question(okName, dns.TypeA, dns.ClassINET))
	opt := []byte{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0}
	cases := []struct {
		name   string
		raw    []byte
		rcode  int // rcodeDrop: no answer
		reason string
	}{
		{"two questions", rawMsg(1, rd, 2, 0, 0, 0, question(okName, dns.TypeA, dns.ClassINET), question(wireName("b", "allowed", "test"), dns.TypeA, dns.ClassINET)), dns.RcodeFormatError, ReasonQuestionCount},
		{"no question", rawMsg(2, rd, 0, 0, 0, 0), dns.RcodeFormatError, ReasonQuestionCount},
		{"count says one, none there", rawMsg(3, rd, 1, 0, 0, 0), dns.RcodeFormatError, ReasonQuestionCount},
		{"label with a dot", rawMsg(4, rd, 1, 0, 0, 0, question(wireName("a.b", "allowed", "test"), dns.TypeA, dns.ClassINET)), dns.RcodeRefused, ReasonInvalidName},
		{"label with a NUL", rawMsg(5, rd, 1, 0, 0, 0, question(wireName("a\x00b", "allowed", "test"), dns.TypeA, dns.ClassINET)), dns.RcodeRefused, ReasonInvalidName},
		{"label with a space", rawMsg(6, rd, 1, 0, 0, 0, question(wireName("a b", "allowed", "test"), dns.TypeA, dns.ClassINET)), dns.RcodeRefused, ReasonInvalidName},
		{"name over 255 octets", rawMsg(7, rd, 1, 0, 0, 0, question(wireName(long...), dns.TypeA, dns.ClassINET)), dns.RcodeFormatError, ReasonNameTooLong},
		{"compression loop", rawMsg(8, rd, 1, 0, 0, 0, []byte{0xC0, 12}, u16(dns.TypeA), u16(dns.ClassINET)), dns.RcodeFormatError, ReasonCompressionLoop},
		{"compression pointer forward loop", rawMsg(9, rd, 1, 0, 0, 0, []byte{1, 'a', 0xC0, 12}, u16(dns.TypeA), u16(dns.ClassINET)), dns.RcodeFormatError, ReasonCompressionLoop},
		{"truncated inside the name", valid[:17], dns.RcodeFormatError, ReasonTruncatedMessage},
		{"short header", valid[:5], rcodeDrop, ReasonShortHeader},
		{"response bit set", rawMsg(10, 0x8000|rd, 1, 0, 0, 0, question(okName, dns.TypeA, dns.ClassINET)), rcodeDrop, ReasonNotQuery},
		{"opcode update", rawMsg(11, 5<<11, 1, 0, 0, 0, question(okName, dns.TypeSOA, dns.ClassINET)), dns.RcodeNotImplemented, ReasonOpcode},
		{"opcode notify", rawMsg(12, 4<<11, 1, 0, 0, 0, question(okName, dns.TypeSOA, dns.ClassINET)), dns.RcodeNotImplemented, ReasonOpcode},
		{"unknown qtype", rawMsg(13, rd, 1, 0, 0, 0, question(okName, 0xFF00, dns.ClassINET)), dns.RcodeRefused, ReasonUnknownQtype},
		{"zone transfer", rawMsg(14, rd, 1, 0, 0, 0, question(okName, dns.TypeAXFR, dns.ClassINET)), dns.RcodeRefused, ReasonQtypeNotAllowed},
		{"qtype OPT", rawMsg(15, rd, 1, 0, 0, 0, question(okName, dns.TypeOPT, dns.ClassINET)), dns.RcodeRefused, ReasonQtypeNotAllowed},
		{"class CHAOS", rawMsg(16, rd, 1, 0, 0, 0, question(wireName("version", "bind"), dns.TypeTXT, dns.ClassCHAOS)), dns.RcodeRefused, ReasonQclass},
		{"class CHAOS allowed name", rawMsg(17, rd, 1, 0, 0, 0, question(okName, dns.TypeTXT, dns.ClassCHAOS)), dns.RcodeRefused, ReasonQclass},
		{"answer record in a query", rawMsg(18, rd, 1, 1, 0, 0, question(okName, dns.TypeA, dns.ClassINET), okName, u16(dns.TypeA), u16(dns.ClassINET), []byte{0, 0, 0, 60, 0, 4, 1, 2, 3, 4}), dns.RcodeFormatError, ReasonRecordsInQuery},
		{"two OPT records", rawMsg(19, rd, 1, 0, 0, 2, question(okName, dns.TypeA, dns.ClassINET), opt, opt), dns.RcodeFormatError, ReasonMalformed},
		{"garbage after header", rawMsg(20, rd, 1, 0, 0, 0, []byte{0xFF, 0xFF, 0xFF}), dns.RcodeFormatError, ReasonTruncatedMessage},
	}
	h := newHarness(t, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.rejected(tc.reason, rcodeResult(tc.rcode))
			got := h.rawExchange(tc.raw)
			if tc.rcode == rcodeDrop {
				if got != nil {
					t.Errorf("got a %d-byte answer, want none", len(got))
				}
			} else {
				if got == nil {
					t.Fatalf("no answer, want %s", dns.RcodeToString[tc.rcode])
				}
				m := new(dns.Msg)
				if err := m.Unpack(got); err != nil {
					t.Fatalf("answer does not parse: %v", err)
				}
				if m.Rcode != tc.rcode || !m.Response || m.Id != binary.BigEndian.Uint16(tc.raw) || len(m.Answer) != 0 {
					t.Errorf("answer rcode %s response=%v id %d with %d records, want %s to id %d and no records",
						dns.RcodeToString[m.Rcode], m.Response, m.Id, len(m.Answer), dns.RcodeToString[tc.rcode], binary.BigEndian.Uint16(tc.raw))
				}
			}
			if d := h.rejected(tc.reason, rcodeResult(tc.rcode)) - before; d != 1 {
				t.Errorf("rejected{reason=%s,result=%s} grew by %v, want 1", tc.reason, rcodeResult(tc.rcode), d)
			}
		})
	}
	for _, s := range h.up.queries() {
		if s.msg.Question[0].Name != "control.allowed.test." {
			t.Errorf("upstream saw %q: a bad query was forwarded", s.msg.Question[0].Name)
		}
	}
	if n := len(h.up.queries()); n != len(cases) {
		t.Errorf("upstream saw %d control queries, want %d (the positive controls)", n, len(cases))
	}
	if len(h.p.Cache().Entries()) != 0 {
		t.Errorf("cache learned from bad queries: %v", h.p.Cache().Entries())
	}
}

// misbehave returns an upstream behaviour that first sends bad (raw bytes
// built from the query), then the good answer if thenGood.
func misbehave(u *upstream, bad func(w dns.ResponseWriter, r *dns.Msg) []byte, thenGood bool) func(w dns.ResponseWriter, r *dns.Msg) {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		if b := bad(w, r); b != nil {
			_, _ = w.Write(b)
		}
		if thenGood {
			_ = w.WriteMsg(u.answer(r))
		}
	}
}

func packed(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// TestBadResponses makes the upstream misbehave and checks that what does
// not answer the query is dropped and counted, while the proxy keeps
// waiting for the real answer until the timeout.
func TestBadResponses(t *testing.T) {
	type tc struct {
		name     string
		bad      func(u *upstream, w dns.ResponseWriter, r *dns.Msg) []byte
		thenGood bool
		reason   string
	}
	good := func(u *upstream, r *dns.Msg) *dns.Msg { return u.answer(r) }
	cases := []tc{
		{"wrong ID", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Id ^= 0x5555
			return packed(m)
		}, false, ReasonRespID},
		{"wrong ID then the answer", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Id ^= 0x5555
			return packed(m)
		}, true, ReasonRespID},
		{"wrong question name", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Question[0].Name = "www.other.test."
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "www.other.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(203, 0, 113, 9)}}
			return packed(m)
		}, true, ReasonRespQuestion},
		{"wrong question type", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Question[0].Qtype = dns.TypeAAAA
			return packed(m)
		}, false, ReasonRespQuestion},
		{"two questions", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Question = append(m.Question, m.Question[0])
			return packed(m)
		}, false, ReasonRespQuestion},
		{"from another port", func(u *upstream, w dns.ResponseWriter, r *dns.Msg) []byte {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err == nil {
				_, _ = c.WriteTo(packed(good(u, r)), w.RemoteAddr())
				_ = c.Close()
			}
			return nil
		}, false, ReasonRespSource},
		{"compression loop", func(_ *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			return rawMsg(r.Id, 0x8180, 1, 1, 0, 0, []byte{0xC0, 12}, u16(dns.TypeA), u16(dns.ClassINET))
		}, false, ReasonRespMalformed},
		{"truncated packet", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			b := packed(good(u, r))
			return b[:len(b)-3]
		}, true, ReasonRespMalformed},
		{"not a response", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Response = false
			return packed(m)
		}, true, ReasonRespNotResponse},
		{"no question but records", func(u *upstream, _ dns.ResponseWriter, r *dns.Msg) []byte {
			m := good(u, r)
			m.Question = nil
			return packed(m)
		}, false, ReasonRespQuestion},
	}
	for _, shared := range []int{1, 64} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/socket_queries=%d", c.name, shared), func(t *testing.T) {
				testBadResponse(t, c.bad, c.thenGood, c.reason, shared)
			})
		}
	}
}

// testBadResponse runs one case of TestBadResponses with socketQueries
// queries per upstream UDP socket.
func testBadResponse(t *testing.T, bad func(u *upstream, w dns.ResponseWriter, r *dns.Msg) []byte, thenGood bool, reason string, socketQueries int) {
	h := newHarness(t, func(cfg *Config) {
		cfg.UpstreamTimeout = 300 * time.Millisecond
		cfg.UpstreamSocketQueries = socketQueries
	})
	h.up.setZone("www.allowed.test.", []string{"192.0.2.10"})
	h.up.setBehave(misbehave(h.up, func(w dns.ResponseWriter, r *dns.Msg) []byte { return bad(h.up, w, r) }, thenGood))
	r := h.exchange("udp", mkQuery("www.allowed.test.", dns.TypeA))
	if thenGood {
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("rcode %s with %d records, want the real answer", dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	} else if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("rcode %s with %d records, want SERVFAIL", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	if v := h.rejected(reason, resultDrop); v != 1 {
		t.Errorf("rejected{%s,drop} = %v, want 1", reason, v)
	}
	for _, e := range h.p.Cache().Entries() {
		if e.IP != netip.MustParseAddr("192.0.2.10") {
			t.Errorf("cache learned %s for %s from a bad response", e.IP, e.Name)
		}
	}
	if !thenGood && len(h.p.Cache().Entries()) != 0 {
		t.Errorf("cache learned from a query that got SERVFAIL: %v", h.p.Cache().Entries())
	}
}

func TestHeaderOnlyErrorAnswer(t *testing.T) {
	h := newHarness(t, nil)
	h.up.setBehave(func(w dns.ResponseWriter, r *dns.Msg) {
		_, _ = w.Write(rawMsg(r.Id, 0x8000|0x0100|dns.RcodeRefused, 0, 0, 0, 0))
	})
	r := h.exchange("udp", mkQuery("www.allowed.test.", dns.TypeA))
	if r.Rcode != dns.RcodeRefused || len(r.Question) != 1 || r.Question[0].Name != "www.allowed.test." {
		t.Errorf("got rcode %s question %v, want the upstream's REFUSED with the question restored", dns.RcodeToString[r.Rcode], r.Question)
	}
}

// TestOutOfChainRecordsNeverLearned: records whose owner is not on the
// question's CNAME chain are stripped from the answer and never learned,
// even for names a toFQDNs selector selects.
func TestOutOfChainRecordsNeverLearned(t *testing.T) {
	var mu sync.Mutex
	var learned []string
	h := newHarness(t, func(c *Config) {
		c.OnLearn = func(_ context.Context, name string, ips []netip.Addr, sels []policy.FQDNSelection) error {
			mu.Lock()
			learned = append(learned, name)
			mu.Unlock()
			return nil
		}
	})
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	h.up.setBehave(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		switch strings.ToLower(r.Question[0].Name) {
		case "www.allowed.test.":
			m.Answer = []dns.RR{
				rr("www.allowed.test. 60 IN A 192.0.2.10"),
				rr("victim.allowed.test. 60 IN A 203.0.113.66"), // selected, but not asked
				rr("other.test. 60 IN A 203.0.113.67"),
			}
			m.Extra = []dns.RR{rr("glue.allowed.test. 60 IN A 203.0.113.68")}
		case "cname.test.":
			m.Answer = []dns.RR{
				rr("Cname.Test. 30 IN CNAME mid.example."),
				rr("mid.example. 300 IN CNAME Target.Allowed.Test."),
				rr("target.allowed.test. 600 IN A 192.0.2.20"),
				rr("target.allowed.test. 600 IN A 192.0.2.21"),
				rr("stray.allowed.test. 600 IN A 203.0.113.69"),
			}
		case "allowed.test.":
			m.Answer = []dns.RR{rr("allowed.test. 60 IN A 192.0.2.30")}
		}
		_ = w.WriteMsg(m)
	})
	r := h.exchange("udp", mkQuery("www.allowed.test.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.10" {
		t.Errorf("answer %v, want only www.allowed.test's own record", r.Answer)
	}
	r = h.exchange("udp", mkQuery("cname.test.", dns.TypeA))
	if len(r.Answer) != 4 {
		t.Errorf("cname answer has %d records, want the chain's 4: %v", len(r.Answer), r.Answer)
	}
	// allowed.test is allowed but no selector selects it: not learned.
	h.exchange("udp", mkQuery("allowed.test.", dns.TypeA))

	c := h.p.Cache()
	if got := c.Lookup("www.allowed.test"); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("www.allowed.test → %v, want [192.0.2.10]", got)
	}
	if got := c.Lookup("TARGET.allowed.test."); len(got) != 2 {
		t.Errorf("target.allowed.test → %v, want the two chain addresses", got)
	}
	for _, e := range c.Entries() {
		switch e.Name {
		case "www.allowed.test.", "target.allowed.test.":
		default:
			t.Errorf("cache learned %s → %s: not asked or not selected", e.Name, e.IP)
		}
		if !bytes.HasPrefix(e.IP.AsSlice(), []byte{192, 0, 2}) {
			t.Errorf("cache learned out-of-chain address %s for %s", e.IP, e.Name)
		}
	}
	for _, n := range []string{"victim.allowed.test", "glue.allowed.test", "stray.allowed.test", "allowed.test", "cname.test"} {
		if got := c.Lookup(n); got != nil {
			t.Errorf("%s → %v, want nothing", n, got)
		}
	}
	// The chain's TTL is its smallest: the 30 s CNAME bounds the A records.
	for _, e := range c.Entries() {
		if e.Name == "target.allowed.test." && e.Expires.Sub(e.LastSeen) != 30*time.Second {
			t.Errorf("target.allowed.test expires after %s, want 30s (the chain's smallest TTL)", e.Expires.Sub(e.LastSeen))
		}
	}
	if v := h.rejected(ReasonRespOutOfChain, resultStripped); v != 3 {
		t.Errorf("rejected{response_out_of_chain} = %v, want 3", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(learned, ",") != "www.allowed.test.,target.allowed.test." {
		t.Errorf("OnLearn names %v, want www.allowed.test. then target.allowed.test.", learned)
	}
}
