package dnsproxy

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policy/fqdn"
)

// fuzz_test.go: fuzz targets over the query path and the response path.
// Their seed corpora live in testdata/fuzz/<Target>/ and run on every
// `go test`; TestWriteFuzzSeeds (MOAT_WRITE_FUZZ_SEEDS=1) regenerates them.

// fuzzProxy is a proxy that is never bound: the fuzz targets drive its
// pipeline directly, with no network.
func fuzzProxy(t testing.TB) *Proxy {
	p, err := New(Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: netip.MustParseAddrPort("127.0.0.1:53"),
		Endpoints:         EndpointsFunc(func(netip.Addr) (EndpointInfo, bool) { return testEndpoint, true }),
		Remotes:           RemotesFunc(func(netip.Addr) policy.ID { return testDNSID }),
		HoldTimeout:       time.Second,
		OnLearn:           func(context.Context, string, []netip.Addr, []policy.FQDNSelection) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Queries are judged but never forwarded: no rule allows anything on
	// the fuzz port (53) except through a set the target does not use.
	if err := p.SetPolicy(testPolicy()); err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzQuery: any bytes from an endpoint get a defined result without a
// panic: nothing, or an answer that packs, carries the query's ID and the
// response bit, and never an answer record.
func FuzzQuery(f *testing.F) {
	for _, s := range querySeeds() {
		f.Add(s.raw)
	}
	p := fuzzProxy(f)
	// Deny everything so that handle never reaches the network: the
	// judgement up to the decision is what is fuzzed here.
	if err := p.SetPolicy(Policy{Endpoints: map[EndpointKey][]policy.DNSRuleSet{
		testEndpoint.Key(): {{Proto: policy.ProtoUDP, Rules: []policy.DNSAllow{{Rule: &policy.DNSRule{MatchName: "never.invalid"}}}}},
	}}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		q := &query{raw: raw, client: netip.MustParseAddrPort("127.0.0.1:5555"), server: netip.MustParseAddrPort("127.0.0.1:53"), proto: policy.ProtoUDP, start: time.Now()}
		m, prob := checkQuery(raw)
		if prob == nil {
			if len(m.Question) != 1 || fqdn.ValidateName(m.Question[0].Name) != nil || m.Question[0].Qclass != dns.ClassINET {
				t.Fatalf("accepted a query of bad shape: %v", m)
			}
		}
		resp := p.handle(context.Background(), q)
		if resp == nil {
			if prob == nil || prob.rcode != rcodeDrop {
				t.Fatalf("no answer for a query that should get one (problem %+v)", prob)
			}
			return
		}
		if prob == nil && resp.Rcode != dns.RcodeRefused && !(len(m.Question) == 1 && strings.EqualFold(m.Question[0].Name, "never.invalid.")) {
			t.Fatalf("well-formed query got rcode %s, want REFUSED (deny-all policy)", dns.RcodeToString[resp.Rcode])
		}
		resp.Truncate(dns.MinMsgSize)
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v", err)
		}
		if len(b) < 12 || binary.BigEndian.Uint16(b) != binary.BigEndian.Uint16(raw) || b[2]&0x80 == 0 || len(resp.Answer) != 0 {
			t.Fatalf("answer %x: want the query's ID, QR set and no records", b)
		}
	})
}

// The fixed query FuzzResponse's packets answer.
const fuzzRespID = 0x1234

func fuzzRespQuestion() dns.Question {
	return dns.Question{Name: "www.allowed.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
}

// FuzzResponse: any bytes from the upstream are either rejected with a
// reason or accepted; an accepted answer teaches the cache only addresses
// from A records on the question's CNAME chain, for names a selector
// selects, and the answer for the client packs.
func FuzzResponse(f *testing.F) {
	for _, s := range responseSeeds() {
		f.Add(s.raw)
	}
	server := netip.MustParseAddrPort("127.0.0.1:53")
	f.Fuzz(func(t *testing.T, raw []byte) {
		p := fuzzProxy(t)
		q := fuzzRespQuestion()
		m, reason := checkResponse(raw, server, server, fuzzRespID, q)
		if m == nil {
			if reason == "" {
				t.Fatal("rejected without a reason")
			}
			return
		}
		// Owners and addresses of the A records on the chain, computed
		// here independently of followChain.
		onChain := map[string]bool{"www.allowed.test.": true}
		for changed := true; changed; {
			changed = false
			for _, rr := range m.Answer {
				if c, ok := rr.(*dns.CNAME); ok && c.Hdr.Class == dns.ClassINET && onChain[fqdn.Normalize(c.Hdr.Name)] && !onChain[fqdn.Normalize(c.Target)] {
					onChain[fqdn.Normalize(c.Target)] = true
					changed = true
				}
			}
		}
		chainIPs := map[netip.Addr]bool{}
		for _, rr := range m.Answer {
			if a, ok := rr.(*dns.A); ok && a.Hdr.Class == dns.ClassINET && onChain[fqdn.Normalize(a.Hdr.Name)] {
				if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
					chainIPs[ip] = true
				}
			}
		}
		req := new(dns.Msg)
		req.SetQuestion("www.allowed.test.", dns.TypeA)
		req.Id = 77
		x := &exchange{q: &query{proto: policy.ProtoUDP, start: time.Now()}, req: req, ep: testEndpoint, remote: testDNSID}
		out := p.finishAnswer(context.Background(), x, m, append([]byte(nil), raw...))
		for _, rr := range out.Answer {
			if !onChain[fqdn.Normalize(rr.Header().Name)] {
				t.Fatalf("answer keeps an out-of-chain record %s", rr)
			}
		}
		cp := p.pol.Load()
		for _, e := range p.Cache().Entries() {
			if !onChain[e.Name] {
				t.Fatalf("learned %s for %s, not on the chain", e.IP, e.Name)
			}
			if len(cp.selectorsFor(e.Name)) == 0 {
				t.Fatalf("learned %s for %s, which no selector selects", e.IP, e.Name)
			}
			if !chainIPs[e.IP] {
				t.Fatalf("learned %s, not an A record on the chain", e.IP)
			}
		}
		if out.Id != 77 || out.Question[0].Name != "www.allowed.test." {
			t.Fatalf("answer id %d question %v: want the client's", out.Id, out.Question)
		}
		if rr := x.q.rawReply; rr != nil {
			// Relayed as is: it must say what out says.
			rm := new(dns.Msg)
			if err := rm.Unpack(rr); err != nil {
				t.Fatalf("relayed bytes do not parse: %v", err)
			}
			if rm.Id != 77 || len(rm.Question) != 1 || rm.Question[0] != out.Question[0] || len(rm.Answer) != len(out.Answer) {
				t.Fatalf("relayed answer %v differs from %v", rm, out)
			}
			for _, a := range rm.Answer {
				if !onChain[fqdn.Normalize(a.Header().Name)] {
					t.Fatalf("relayed answer keeps an out-of-chain record %s", a)
				}
			}
		}
		out.Truncate(dns.MinMsgSize)
		if _, err := out.Pack(); err != nil {
			// miekg/dns may refuse to pack records it unpacked (odd
			// rdata); the proxy then answers nothing and counts it. Not
			// a failure of the invariants above.
			return
		}
	})
}

type seed struct {
	name string
	raw  []byte
}

func querySeeds() []seed {
	const rd = 0x0100
	good := new(dns.Msg)
	good.SetQuestion("www.allowed.test.", dns.TypeA)
	good.Id = 1
	edns := good.Copy()
	edns.SetEdns0(1232, true)
	aaaa := new(dns.Msg)
	aaaa.SetQuestion("Mixed.Case.Example.", dns.TypeAAAA)
	aaaa.Id = 3
	valid := packed(good)
	long := make([]string, 5)
	for i := range long {
		long[i] = strings.Repeat("a", 63)
	}
	return []seed{
		{"valid_a", valid},
		{"valid_edns_do", packed(edns)},
		{"valid_aaaa", packed(aaaa)},
		{"two_questions", rawMsg(1, rd, 2, 0, 0, 0, question(okName, dns.TypeA, dns.ClassINET), question(okName, dns.TypeAAAA, dns.ClassINET))},
		{"no_question", rawMsg(2, rd, 0, 0, 0, 0)},
		{"label_dot", rawMsg(4, rd, 1, 0, 0, 0, question(wireName("a.b", "allowed", "test"), dns.TypeA, dns.ClassINET))},
		{"label_nul", rawMsg(5, rd, 1, 0, 0, 0, question(wireName("a\x00b", "allowed", "test"), dns.TypeA, dns.ClassINET))},
		{"name_too_long", rawMsg(7, rd, 1, 0, 0, 0, question(wireName(long...), dns.TypeA, dns.ClassINET))},
		{"compression_loop", rawMsg(8, rd, 1, 0, 0, 0, []byte{0xC0, 12}, u16(dns.TypeA), u16(dns.ClassINET))},
		{"truncated", valid[:17]},
		{"short_header", valid[:5]},
		{"response_bit", rawMsg(10, 0x8000|rd, 1, 0, 0, 0, question(okName, dns.TypeA, dns.ClassINET))},
		{"opcode_update", rawMsg(11, 5<<11, 1, 0, 0, 0, question(okName, dns.TypeSOA, dns.ClassINET))},
		{"unknown_qtype", rawMsg(13, rd, 1, 0, 0, 0, question(okName, 0xFF00, dns.ClassINET))},
		{"axfr", rawMsg(14, rd, 1, 0, 0, 0, question(okName, dns.TypeAXFR, dns.ClassINET))},
		{"chaos", rawMsg(16, rd, 1, 0, 0, 0, question(wireName("version", "bind"), dns.TypeTXT, dns.ClassCHAOS))},
		{"answer_in_query", rawMsg(18, rd, 1, 1, 0, 0, question(okName, dns.TypeA, dns.ClassINET), okName, u16(dns.TypeA), u16(dns.ClassINET), []byte{0, 0, 0, 60, 0, 4, 1, 2, 3, 4})},
	}
}

func responseSeeds() []seed {
	q := fuzzRespQuestion()
	base := func() *dns.Msg {
		m := new(dns.Msg)
		m.Id = fuzzRespID
		m.Response = true
		m.Question = []dns.Question{q}
		return m
	}
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return r
	}
	ok := base()
	ok.Answer = []dns.RR{rr("www.allowed.test. 60 IN A 192.0.2.1")}
	chain := base()
	chain.Answer = []dns.RR{rr("www.allowed.test. 30 IN CNAME edge.allowed.test."), rr("edge.allowed.test. 60 IN A 192.0.2.2"), rr("evil.allowed.test. 60 IN A 203.0.113.1")}
	loop := base()
	loop.Answer = []dns.RR{rr("www.allowed.test. 30 IN CNAME a.allowed.test."), rr("a.allowed.test. 30 IN CNAME www.allowed.test."), rr("a.allowed.test. 30 IN A 192.0.2.3")}
	wrongID := ok.Copy()
	wrongID.Id++
	wrongQ := ok.Copy()
	wrongQ.Question[0].Name = "other.test."
	aaaa := base()
	aaaa.Answer = []dns.RR{rr("www.allowed.test. 60 IN AAAA 2001:db8::1"), rr("www.allowed.test. 60 IN A 192.0.2.4")}
	many := base()
	for i := range 100 {
		many.Answer = append(many.Answer, &dns.A{Hdr: dns.RR_Header{Name: "www.allowed.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(198, 51, 100, byte(i))})
	}
	okRaw := packed(ok)
	return []seed{
		{"ok", okRaw},
		{"cname_chain_with_stray", packed(chain)},
		{"cname_loop", packed(loop)},
		{"wrong_id", packed(wrongID)},
		{"wrong_question", packed(wrongQ)},
		{"aaaa_in_a_answer", packed(aaaa)},
		{"many_ips", packed(many)},
		{"truncated", okRaw[:len(okRaw)-3]},
		{"compression_loop", rawMsg(fuzzRespID, 0x8180, 1, 1, 0, 0, question(wireName("www", "allowed", "test"), dns.TypeA, dns.ClassINET), []byte{0xC0, 29}, u16(dns.TypeA), u16(dns.ClassINET), []byte{0, 0, 0, 60, 0, 4, 1, 2, 3, 4})},
		{"header_only_refused", rawMsg(fuzzRespID, 0x8000|dns.RcodeRefused, 0, 0, 0, 0)},
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz from querySeeds and
// responseSeeds when MOAT_WRITE_FUZZ_SEEDS=1; otherwise it checks that the
// committed corpus holds every seed.
func TestWriteFuzzSeeds(t *testing.T) {
	write := os.Getenv("MOAT_WRITE_FUZZ_SEEDS") == "1"
	for target, seeds := range map[string][]seed{"FuzzQuery": querySeeds(), "FuzzResponse": responseSeeds()} {
		dir := filepath.Join("testdata", "fuzz", target)
		for _, s := range seeds {
			content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s.raw)) + ")\n"
			path := filepath.Join(dir, s.name)
			if write {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != content {
				t.Errorf("%s: committed seed missing or stale (run with MOAT_WRITE_FUZZ_SEEDS=1): %v", path, err)
			}
		}
	}
}
