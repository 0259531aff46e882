package dnsproxy

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

// TestDecisionMatchesTrace is a differential test: for random DNS rule sets
// and queries, the proxy's compiled decision must equal what
// `moat policy trace --dns-query` (policy.Trace) says about the same Plan.
func TestDecisionMatchesTrace(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	labels := []string{"a", "b", "ab", "www", "x-y", "API", "s3", "_srv"}
	randName := func() string {
		n := 1 + r.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = labels[r.IntN(len(labels))]
		}
		s := strings.Join(parts, ".")
		switch r.IntN(10) {
		case 0:
			s += "."
		case 1:
			s = strings.ToUpper(s)
		case 2:
			s = "a..b" // invalid: matches nothing
		}
		return s
	}
	randPattern := func() string {
		switch r.IntN(6) {
		case 0:
			return "*"
		case 1:
			return "**." + randName()
		case 2:
			return "*." + randName()
		case 3:
			return labels[r.IntN(len(labels))] + "*." + randName()
		case 4:
			return "*.*" // invalid in a pattern? either way both sides agree
		}
		return randName()
	}
	remotes := []policy.ID{300, 301, policy.IDWorld}
	servers := map[policy.ID]netip.Addr{300: netip.MustParseAddr("10.1.0.1"), 301: netip.MustParseAddr("10.1.0.2"), policy.IDWorld: netip.MustParseAddr("8.8.8.8")}
	var checked, allowed int
	for iter := range 300 {
		var sets []policy.DNSRuleSet
		for range 1 + r.IntN(3) {
			s := policy.DNSRuleSet{Proto: []policy.Protocol{policy.ProtoUDP, policy.ProtoTCP}[r.IntN(2)]}
			switch r.IntN(3) {
			case 0:
				s.Ports = policy.PortRange{From: 53, To: 53}
			case 1:
				s.Ports = policy.PortRange{From: 5000, To: 6000}
			}
			for range r.IntN(5) {
				var a policy.DNSAllow
				for _, id := range remotes {
					if r.IntN(3) == 0 {
						a.Remotes = append(a.Remotes, id)
					}
				}
				switch r.IntN(8) {
				case 0: // nil rule: every query
				case 1, 2, 3:
					a.Rule = &policy.DNSRule{MatchName: randName()}
				default:
					a.Rule = &policy.DNSRule{MatchPattern: randPattern()}
				}
				s.Rules = append(s.Rules, a)
			}
			sets = append(sets, s)
		}
		plan := &policy.Plan{
			Endpoints: []policy.EndpointPlan{{
				Namespace: "default", Name: "client", Identity: testClientID,
				Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
				Egress: policy.DirectionPlan{Enforced: true, DNS: sets, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Identity: policy.IDAny, Proto: policy.ProtoUDP}, Verdict: policy.VerdictRedirect, L7: policy.L7DNS},
					{L4Key: policy.L4Key{Identity: policy.IDAny, Proto: policy.ProtoTCP}, Verdict: policy.VerdictRedirect, L7: policy.L7DNS},
				}},
			}},
			IPCache: []policy.IPCacheEntry{
				{Prefix: netip.MustParsePrefix("10.1.0.1/32"), Identity: 300},
				{Prefix: netip.MustParsePrefix("10.1.0.2/32"), Identity: 301},
			},
		}
		cp, _ := compilePolicy(PolicyFromPlan(plan))
		for range 20 {
			remote := remotes[r.IntN(len(remotes))]
			proto := []policy.Protocol{policy.ProtoUDP, policy.ProtoTCP}[r.IntN(2)]
			port := []uint16{53, 5353}[r.IntN(2)]
			q := randName()
			if r.IntN(3) == 0 && len(sets[0].Rules) > 0 && sets[0].Rules[0].Rule != nil && sets[0].Rules[0].Rule.MatchName != "" {
				q = sets[0].Rules[0].Rule.MatchName // bias towards hits
			}
			res := policy.Trace(plan, policy.TraceRequest{
				From:  policy.TracePeer{Namespace: "default", Name: "client"},
				To:    policy.TracePeer{IP: servers[remote]},
				Proto: proto, Port: port, DNSQuery: q,
			})
			if len(res.Steps) == 0 || res.Error != "" {
				t.Fatalf("trace: no step (%s)", res.Error)
			}
			st := res.Steps[0]
			want := st.DNS != nil && st.DNS.Allowed
			got := cp.decide(EndpointKey{"default", "client"}, proto, port, remote, q) == decisionAllow
			checked++
			if got {
				allowed++
			}
			if got != want {
				t.Fatalf("iteration %d: query %q to identity %d %s/%d: proxy allows=%v, trace allows=%v (%s)\nrule sets: %+v",
					iter, q, remote, proto, port, got, want, st.Reason, sets)
			}
		}
	}
	// Guard against a generator that only ever produces one outcome.
	if allowed < checked/20 || allowed > checked-checked/20 {
		t.Errorf("%d of %d decisions allowed: the generator does not exercise both outcomes", allowed, checked)
	}
	t.Logf("%d decisions compared, %d allowed", checked, allowed)
}
