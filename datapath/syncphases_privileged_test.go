package datapath

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedSyncPhasesMatchKernel runs random changes (the property
// test's) through the real Sync and, after each, reads the kernel maps
// back: they hold exactly the desired state, as the Datapath believes,
// and no transit identity is left. (The order of the writes is checked
// without a kernel by TestSyncMakeBeforeBreak; this checks that the apply
// layer writes what the operations say.)
func TestPrivilegedSyncPhasesMatchKernel(t *testing.T) {
	testutil.Privileged(t)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	w := &orderWorld{rng: rand.New(rand.NewPCG(7, 10)), policies: map[string][]byte{}, endpoints: map[string]policy.Endpoint{}, proxies: ProxyPorts{}}
	c := policy.NewCompiler(policy.Options{}, policy.NewMemoryAllocator())
	c.SetNode(policy.Node{Name: "n", Addresses: []netip.Addr{orderNode}})
	for step := range 150 {
		what, err := w.change(c)
		if err != nil {
			t.Fatal(err)
		}
		ifaces := map[EndpointKey]int{}
		for k, idx := range w.ifaces() {
			ifaces[k] = 1_000_000 + idx // never attached: Sync only writes maps
		}
		p := c.Plan()
		if err := d.Sync(p, ifaces, w.proxies); err != nil {
			t.Fatalf("step %d: sync: %v\nchange: %s", step, err, what)
		}
		want, err := DesiredState(p, ifaces, w.proxies)
		if err != nil {
			t.Fatal(err)
		}
		var k syncState
		if err := k.load(&d.objs); err != nil {
			t.Fatalf("step %d: read maps back: %v", step, err)
		}
		for key, v := range k.policy {
			if key.Identity&policy.IDTransitFlag != 0 {
				t.Fatalf("step %d: transit entry %s left in the policy map", step, key)
			}
			de, ok := want.Policy[key]
			if !ok {
				t.Fatalf("step %d: stale policy entry %s\nchange: %s", step, key, what)
			}
			if v.Verdict != de.Value.Verdict || v.L7 != de.Value.L7 || v.ProxyPort != de.Value.ProxyPort || v.Rule == 0 {
				t.Fatalf("step %d: policy entry %s = %+v, want %+v with a rule index", step, key, v, de.Value)
			}
		}
		if len(k.policy) != len(want.Policy) {
			t.Fatalf("step %d: %d policy entries in the maps, want %d", step, len(k.policy), len(want.Policy))
		}
		if !maps.Equal(k.ipcache, want.IPCache) {
			t.Fatalf("step %d: ipcache in the maps %v, want %v", step, k.ipcache, want.IPCache)
		}
		if !maps.Equal(k.local, want.Local) {
			t.Fatalf("step %d: local endpoints in the maps %v, want %v", step, k.local, want.Local)
		}
		flags := endpointFlags(want)
		if len(k.endpoints) != len(flags) {
			t.Fatalf("step %d: %d endpoint configs, want %d", step, len(k.endpoints), len(flags))
		}
		for id, cfg := range k.endpoints {
			if cfg.Flags != flags[id] || cfg.Identity != uint32(want.Endpoints[id].Identity) {
				t.Fatalf("step %d: endpoint %d config %+v, want flags %#x identity %d", step, id, cfg, flags[id], want.Endpoints[id].Identity)
			}
		}
		d.mu.Lock()
		same := maps.Equal(k.policy, d.state.policy) && maps.Equal(k.ipcache, d.state.ipcache) && maps.Equal(k.endpoints, d.state.endpoints)
		d.mu.Unlock()
		if !same {
			t.Fatalf("step %d: the Datapath's record of the maps differs from the maps", step)
		}
		c.ConfirmApplied(p.Generation)
	}
}
