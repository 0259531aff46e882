package dnsproxy

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy/fqdn"
)

// check.go owns the judgement of messages as messages, before and after
// policy: what a query must look like to be considered at all, what an
// upstream answer must look like to be accepted for a query, and which of
// its records belong to the question's CNAME chain. Every outcome is a
// reason (metrics.go) and a result; nothing here does I/O.

// rcodeDrop is the "rcode" of an outcome that sends nothing back.
const rcodeDrop = -1

// queryProblem is why a query is not judged by policy: reason for the
// metric, rcode the answer (rcodeDrop for none).
type queryProblem struct {
	reason string
	rcode  int
}

// checkQuery parses raw as a query and checks its shape. On a problem, m
// is the parsed message when parsing got that far (so the answer can echo
// the question) and nil otherwise.
func checkQuery(raw []byte) (m *dns.Msg, p *queryProblem) {
	if len(raw) < 12 {
		return nil, &queryProblem{ReasonShortHeader, rcodeDrop}
	}
	flags := binary.BigEndian.Uint16(raw[2:])
	if flags&0x8000 != 0 {
		// Never answer a response: that is how reflection loops start.
		return nil, &queryProblem{ReasonNotQuery, rcodeDrop}
	}
	if opcode := int(flags>>11) & 0xF; opcode != dns.OpcodeQuery {
		return nil, &queryProblem{ReasonOpcode, dns.RcodeNotImplemented}
	}
	if binary.BigEndian.Uint16(raw[4:]) != 1 {
		return nil, &queryProblem{ReasonQuestionCount, dns.RcodeFormatError}
	}
	if binary.BigEndian.Uint16(raw[6:]) != 0 || binary.BigEndian.Uint16(raw[8:]) != 0 {
		return nil, &queryProblem{ReasonRecordsInQuery, dns.RcodeFormatError}
	}
	m = new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return nil, &queryProblem{unpackReason(err, false), dns.RcodeFormatError}
	}
	if len(m.Question) != 1 {
		return nil, &queryProblem{ReasonQuestionCount, dns.RcodeFormatError}
	}
	opts := 0
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts++
		}
	}
	if opts > 1 {
		// RFC 6891 6.1.1: more than one OPT is FORMERR.
		return nil, &queryProblem{ReasonMalformed, dns.RcodeFormatError}
	}
	q := m.Question[0]
	if !validQueryName(q.Name) {
		return m, &queryProblem{ReasonInvalidName, dns.RcodeRefused}
	}
	if q.Qclass != dns.ClassINET {
		return m, &queryProblem{ReasonQclass, dns.RcodeRefused}
	}
	switch q.Qtype {
	case dns.TypeNone, dns.TypeAXFR, dns.TypeIXFR, dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeMAILA, dns.TypeMAILB, dns.TypeReserved:
		return m, &queryProblem{ReasonQtypeNotAllowed, dns.RcodeRefused}
	}
	if _, ok := dns.TypeToString[q.Qtype]; !ok {
		return m, &queryProblem{ReasonUnknownQtype, dns.RcodeRefused}
	}
	return m, nil
}

// validQueryName accepts what the policy matcher can judge: a valid
// hostname-like name in presentation form. miekg/dns presents a label with
// a dot, a NUL or any other unusual byte in escaped form ("a\.b", "\000"),
// which fails here, so such names are refused before any rule sees them.
func validQueryName(name string) bool {
	return fqdn.ValidateName(name) == nil
}

// unpackReason classifies a miekg/dns unpack error.
func unpackReason(err error, response bool) string {
	if response {
		return ReasonRespMalformed
	}
	switch {
	case errors.Is(err, dns.ErrLongDomain):
		return ReasonNameTooLong
	case strings.Contains(err.Error(), "compression pointers"):
		return ReasonCompressionLoop
	case errors.Is(err, dns.ErrBuf) || errors.Is(err, dns.ErrShortRead) ||
		strings.Contains(err.Error(), "overflow") || strings.Contains(err.Error(), "bad rdlength"):
		return ReasonTruncatedMessage
	}
	return ReasonMalformed
}

// errorReply builds the answer to a query with a problem: the question
// echoed when it parsed, else the header alone (ID, opcode, RD copied).
func errorReply(raw []byte, m *dns.Msg, rcode int) *dns.Msg {
	r := new(dns.Msg)
	if m != nil {
		r.SetRcode(m, rcode)
		r.Extra = nil
		return r
	}
	flags := binary.BigEndian.Uint16(raw[2:])
	r.Id = binary.BigEndian.Uint16(raw)
	r.Response = true
	r.Opcode = int(flags>>11) & 0xF
	r.RecursionDesired = flags&0x0100 != 0
	r.Rcode = rcode
	return r
}

// checkResponse accepts an upstream packet as the answer to the query
// sent with id and question q to server, or says why not.
func checkResponse(raw []byte, from, server netip.AddrPort, id uint16, q dns.Question) (*dns.Msg, string) {
	if from.Addr().Unmap() != server.Addr().Unmap() || from.Port() != server.Port() {
		return nil, ReasonRespSource
	}
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return nil, ReasonRespMalformed
	}
	if !m.Response {
		return nil, ReasonRespNotResponse
	}
	if m.Id != id {
		return nil, ReasonRespID
	}
	switch len(m.Question) {
	case 0:
		// Some servers answer errors with the header alone; accept
		// that only when it carries no records to learn from.
		if m.Rcode == dns.RcodeSuccess || len(m.Answer) > 0 || len(m.Ns) > 0 {
			return nil, ReasonRespQuestion
		}
	case 1:
		rq := m.Question[0]
		if rq.Qtype != q.Qtype || rq.Qclass != q.Qclass || !strings.EqualFold(rq.Name, q.Name) {
			return nil, ReasonRespQuestion
		}
	default:
		return nil, ReasonRespQuestion
	}
	return m, ""
}

// chainResult is what an accepted answer teaches.
type chainResult struct {
	// names is the CNAME chain in normal form, the question's name first.
	names []string
	// ips are the addresses of the chain's end, with the TTL each may be
	// trusted for (the smallest TTL along the chain).
	ips []Learned
	// ipStrings and rrtypes feed flow records.
	ipStrings []string
	rrtypes   []string
	ttl       uint32
	// outOfChain counts answer records removed because their owner is
	// not on the chain.
	outOfChain int
}

// followChain keeps in m.Answer only the records whose owner is on the
// CNAME chain that starts at qname, and collects the chain's addresses of
// the types qtype asked for. Records of other owners are removed (and
// counted): an answer never teaches anything about a name not asked.
func followChain(m *dns.Msg, qname string, qtype uint16) chainResult {
	var res chainResult
	start := fqdn.Normalize(qname)
	onChain := map[string]bool{start: true}
	res.names = []string{start}
	minTTL := uint32(0)
	haveTTL := false
	// Each pass adds at least one name or stops; bounded by the number of
	// CNAME records.
	for changed := true; changed; {
		changed = false
		for _, rr := range m.Answer {
			c, ok := rr.(*dns.CNAME)
			if !ok || c.Hdr.Class != dns.ClassINET || !onChain[fqdn.Normalize(c.Hdr.Name)] {
				continue
			}
			t := fqdn.Normalize(c.Target)
			if !haveTTL || c.Hdr.Ttl < minTTL {
				minTTL, haveTTL = c.Hdr.Ttl, true
			}
			if !onChain[t] {
				onChain[t] = true
				res.names = append(res.names, t)
				changed = true
			}
		}
	}
	kept := m.Answer[:0]
	wantA := qtype == dns.TypeA || qtype == dns.TypeANY
	wantAAAA := qtype == dns.TypeAAAA || qtype == dns.TypeANY
	for _, rr := range m.Answer {
		h := rr.Header()
		if !onChain[fqdn.Normalize(h.Name)] {
			res.outOfChain++
			continue
		}
		kept = append(kept, rr)
		res.rrtypes = append(res.rrtypes, dns.TypeToString[h.Rrtype])
		if len(kept) == 1 || h.Ttl < res.ttl {
			res.ttl = h.Ttl
		}
		var ip netip.Addr
		switch r := rr.(type) {
		case *dns.A:
			if wantA && h.Class == dns.ClassINET {
				ip, _ = netip.AddrFromSlice(r.A.To4())
			}
		case *dns.AAAA:
			if wantAAAA && h.Class == dns.ClassINET {
				ip, _ = netip.AddrFromSlice(r.AAAA.To16())
			}
		}
		if !ip.IsValid() || ip.IsUnspecified() {
			continue
		}
		ttl := h.Ttl
		if haveTTL && minTTL < ttl {
			ttl = minTTL
		}
		res.ips = append(res.ips, Learned{IP: ip.Unmap(), TTL: time.Duration(ttl) * time.Second})
		res.ipStrings = append(res.ipStrings, ip.Unmap().String())
	}
	for i := len(kept); i < len(m.Answer); i++ {
		m.Answer[i] = nil
	}
	m.Answer = kept
	return res
}
