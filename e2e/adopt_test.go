package e2e

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/policy"
)

const adoptEndpoints = `endpoints:
- name: a
  labels: {app: a}
  ipv4: 10.219.0.1
`

func adoptPolicy(cidrs string) string {
	return cnp + `metadata: {name: a-egress}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [` + cidrs + `]
`
}

// localIPCache is a plan's ipcache entries with a local (CIDR) identity.
func localIPCache(p *policy.Plan) map[netip.Prefix]policy.ID {
	out := map[netip.Prefix]policy.ID{}
	for _, e := range p.IPCache {
		if e.Identity.IsLocal() {
			out[e.Prefix] = e.Identity
		}
	}
	return out
}

// TestPrivilegedRestartKeepsLocalIdentities: an agent restarted over its
// pinned maps gives each CIDR prefix the local identity the pinned ipcache
// holds for it, although the policy gained a prefix that sorts first (a
// fresh start would number 9/8 → 1, 10/8 → 2, 192.168/16 → 3); the new
// prefix takes the next free number.
func TestPrivilegedRestartKeepsLocalIdentities(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "ad", endpoints: adoptEndpoints,
		policies: map[string]string{"p.yaml": adoptPolicy("10.0.0.0/8, 192.168.0.0/16")}})
	l := func(n policy.ID) policy.ID { return policy.IDLocalFlag | n }
	p := netip.MustParsePrefix
	plan, err := a.plan()
	if err != nil {
		t.Fatal(err)
	}
	before := map[netip.Prefix]policy.ID{p("10.0.0.0/8"): l(1), p("192.168.0.0/16"): l(2)}
	if got := localIPCache(plan); !maps.Equal(got, before) {
		t.Fatalf("test premise: first agent's local identities = %v, want %v", got, before)
	}

	a.stop()
	a.setPolicy("p.yaml", adoptPolicy("9.0.0.0/8, 10.0.0.0/8, 192.168.0.0/16"))
	a.start()
	want := map[netip.Prefix]policy.ID{p("10.0.0.0/8"): l(1), p("192.168.0.0/16"): l(2), p("9.0.0.0/8"): l(3)}
	var got map[netip.Prefix]policy.ID
	deadline := time.Now().Add(15 * time.Second)
	for {
		plan, err := a.plan()
		if err == nil {
			got = localIPCache(plan)
			if len(got) == len(want) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted agent's plan never had the 3 prefixes: %v (last error %v)", got, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
	if !maps.Equal(got, want) {
		t.Errorf("restarted agent's local identities = %v, want %v", fmtIDs(got), fmtIDs(want))
	}
}

func fmtIDs(m map[netip.Prefix]policy.ID) string {
	var out []string
	for pf, id := range m {
		out = append(out, fmt.Sprintf("%s=local|%d", pf, id&^policy.IDLocalFlag))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
