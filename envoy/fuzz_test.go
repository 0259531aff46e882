package envoy

import (
	"net/netip"
	"testing"

	"github.com/moatnet/moat/policy"
)

// planFromBytes decodes a small Plan from fuzz input: every byte steers one
// choice, so any input is a Plan.
func planFromBytes(data []byte) *policy.Plan {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	pick := func(opts []string) string { return opts[int(next())%len(opts)] }
	ids := []policy.ID{0, policy.IDWorld, 256, 257, 258, policy.IDLocalFlag | 1, 1 << 29}
	id := func() policy.ID { return ids[int(next())%len(ids)] }
	regexes := []string{"", "GET", "/a/.*", "(", "[a-z]+", "POST|PUT", `api\.example\.com`, "\x00", "a{2000}"}
	headers := []string{"X-Token", "x_under", "", "Bad Name", ":path", "ok-header"}
	plan := &policy.Plan{}
	for range int(next()) % 8 {
		bits := int(next()) % 33
		plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{
			Prefix:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, next() % 4, next() % 4}), bits),
			Identity: id(),
		})
	}
	for e := range int(next()) % 4 {
		ep := policy.EndpointPlan{Name: pick([]string{"a", "b", "c"}), Namespace: "ns", Identity: id()}
		for range int(next()) % 3 {
			if next()%5 == 0 {
				ep.Addresses = append(ep.Addresses, netip.AddrFrom16([16]byte{0: 0xfd, 15: next() % 4}))
			} else {
				ep.Addresses = append(ep.Addresses, netip.AddrFrom4([4]byte{10, 0, byte(e), next() % 4}))
			}
		}
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			for range int(next()) % 3 {
				rs := policy.HTTPRuleSet{
					Proto: []policy.Protocol{policy.ProtoTCP, policy.ProtoAny, policy.ProtoUDP}[int(next())%3],
					Ports: policy.PortRange{From: uint16(next()) * 300, To: uint16(next()) * 300},
				}
				for range int(next()) % 4 {
					a := policy.HTTPAllow{}
					for range int(next()) % 3 {
						a.Remotes = append(a.Remotes, id())
					}
					if next()%4 != 0 {
						r := &policy.HTTPRule{Method: pick(regexes), Path: pick(regexes), Host: pick(regexes)}
						for range int(next()) % 3 {
							r.Headers = append(r.Headers, policy.HeaderMatch{Name: pick(headers), Value: pick([]string{"", "v"}), HasValue: next()%2 == 0})
						}
						a.Rule = r
					}
					rs.Rules = append(rs.Rules, a)
				}
				dp := ep.Direction(d)
				dp.HTTP = append(dp.HTTP, rs)
			}
		}
		plan.Endpoints = append(plan.Endpoints, ep)
	}
	return plan
}

// FuzzTranslate: any small Plan translates into valid resources or fails
// with an error; it never panics.
func FuzzTranslate(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 24, 0, 1, 2, 1, 2, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 2, 1, 1, 1, 0, 0})
	f.Add([]byte{7, 16, 1, 1, 2, 32, 0, 0, 3, 3, 1, 1, 2, 1, 2, 1, 0, 2, 2, 3, 1, 1, 1, 6, 6, 6, 2, 0, 1, 1})
	f.Add([]byte{0, 3, 0, 2, 2, 0, 1, 1, 0, 1, 2, 1, 1, 3, 1, 0, 1, 0, 2, 2, 1, 0, 0, 1, 2, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Translate(planFromBytes(data), Config{})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if err := res.Validate(); err != nil {
			t.Fatalf("Translate returned invalid resources: %v", err)
		}
	})
}
