package agent

import (
	"context"
	"maps"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/moatnet/moat/policy"
)

const adoptPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDR: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
`

// TestRestartAdoptsPinnedLocalIdentities: an agent started over pinned
// maps gives every CIDR prefix the local identity the maps hold for it,
// although a fresh start numbers them in sort order (10/8 → 1, 172.16/12
// → 2, 192.168/16 → 3); a pinned number whose prefix is gone stays in
// quarantine, so a new prefix takes the lowest number neither adopted nor
// quarantined.
func TestRestartAdoptsPinnedLocalIdentities(t *testing.T) {
	a := lifecycleAgent(t, nil)
	writeFile(t, filepath.Join(a.cfg.Policies, "web.yaml"), adoptPolicy)
	l := func(n policy.ID) policy.ID { return policy.IDLocalFlag | n }
	r := newRecorder()
	r.pinned = map[netip.Prefix]policy.ID{
		netip.MustParsePrefix("10.0.0.0/8"):     l(2),
		netip.MustParsePrefix("192.168.0.0/16"): l(1),
		netip.MustParsePrefix("10.99.0.0/16"):   l(3), // no policy uses it any more
	}
	closed := false
	a.openNode = func(context.Context) (*nodeParts, error) {
		return &nodeParts{maps: fakeMaps{r}, plumb: fakePlumbing{r}, close: func() { closed = true }}, nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
		if !closed {
			t.Error("the node's parts were not closed")
		}
	}()

	evs := r.waitFor(t, "a sync with the policy's prefixes", func(evs []event) bool {
		return indexOf(evs, func(e event) bool { return isSync(e) && len(e.locals) > 0 }) >= 0
	})
	got := evs[indexOf(evs, func(e event) bool { return isSync(e) && len(e.locals) > 0 })].locals
	want := map[string]policy.ID{
		"10.0.0.0/8":     l(2), // adopted
		"192.168.0.0/16": l(1), // adopted
		"172.16.0.0/12":  l(4), // new: 3 is quarantined
	}
	if !maps.Equal(got, want) {
		t.Errorf("first sync's local identities = %v, want %v", got, want)
	}
}
