package datapath

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

// The property test of Sync's order (syncplan.go): random policy, endpoint
// and proxy changes go through the real compiler and DesiredState; for each
// transition the operations of planSync are applied one at a time to the
// model of the maps, and after each one every pkt packet's decision must
// be its decision under the old maps or under the new ones.

var (
	orderPrefixes = []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/24", "192.168.0.0/16", "192.168.1.0/24", "172.16.0.0/12", "fd00::/8", "fd00::/120"}
	orderApps     = []string{"web", "db", "client"}
	orderPorts    = []string{`{port: "80", protocol: TCP}`, `{port: "8000", endPort: 8080, protocol: TCP}`, `{port: "443", protocol: TCP}`, `{port: "53", protocol: UDP}`, `{port: "80", protocol: ANY}`}
	orderNode     = netip.MustParseAddr("10.9.0.1")
)

// orderWorld is the state the random changes act on.
type orderWorld struct {
	rng       *rand.Rand
	policies  map[string][]byte // name -> YAML
	endpoints map[string]policy.Endpoint
	proxies   ProxyPorts
}

func (w *orderWorld) pick(n int) int { return w.rng.IntN(n) }

// epAddr gives endpoint i one of two addresses: inside 10.1.0.0/24 or
// inside 192.168.1.0/24 (so that an endpoint address is also inside
// policy prefixes).
func epAddr(i, variant int) netip.Addr {
	if variant == 0 {
		return netip.AddrFrom4([4]byte{10, 1, 0, byte(10 + i)})
	}
	return netip.AddrFrom4([4]byte{192, 168, 1, byte(10 + i)})
}

func (w *orderWorld) peer(dir string, deny bool) string {
	switch w.pick(6) {
	case 0:
		pf := orderPrefixes[w.pick(len(orderPrefixes))]
		return fmt.Sprintf("%sCIDR: [%s]", dir, pf)
	case 1:
		return fmt.Sprintf("%sCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/24]}]", dir)
	case 2:
		return fmt.Sprintf("%sEndpoints: [{matchLabels: {app: %s}}]", dir, orderApps[w.pick(len(orderApps))])
	case 3:
		return fmt.Sprintf("%sEntities: [%s]", dir, []string{"world", "all", "host"}[w.pick(3)])
	case 4:
		return fmt.Sprintf("%sEndpoints: [{}]", dir)
	}
	return "" // every peer (toPorts only)
}

func (w *orderWorld) peerRule(dir string, deny, egress bool) string {
	var b strings.Builder
	b.WriteString("  - ")
	peer := w.peer(dir, deny)
	if peer != "" {
		b.WriteString(peer + "\n    ")
	}
	switch n := w.pick(5); {
	case n == 0 && peer != "":
		// no ports: every port
	case n == 1 && !deny:
		// L7: an HTTP rule on TCP 80 (a redirect), or DNS on UDP 53.
		if egress && w.pick(2) == 0 {
			b.WriteString("toPorts: [{ports: [{port: \"53\", protocol: UDP}], rules: {dns: [{matchPattern: \"*\"}]}}]")
		} else {
			b.WriteString("toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]")
		}
	default:
		b.WriteString("toPorts: [{ports: [" + orderPorts[w.pick(len(orderPorts))] + "]}]")
	}
	b.WriteString("\n")
	return b.String()
}

func (w *orderWorld) policyYAML(name string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: %s, namespace: default}\nspec:\n", name)
	fmt.Fprintf(&b, "  endpointSelector: {matchLabels: {app: %s}}\n", orderApps[w.pick(len(orderApps))])
	sections := 0
	for _, sec := range []struct {
		name, dir   string
		deny, egres bool
	}{{"ingress", "from", false, false}, {"egress", "to", false, true}, {"ingressDeny", "from", true, false}, {"egressDeny", "to", true, true}} {
		if w.pick(3) != 0 && !(sections == 0 && sec.name == "egressDeny") {
			continue
		}
		sections++
		b.WriteString("  " + sec.name + ":\n")
		for range 1 + w.pick(2) {
			b.WriteString(strings.ReplaceAll(w.peerRule(sec.dir, sec.deny, sec.egres), "\n    ", "\n    "))
		}
	}
	return []byte(b.String())
}

// change makes one random change and describes it.
func (w *orderWorld) change(c *policy.Compiler) (string, error) {
	switch op := w.pick(10); {
	case op < 4:
		name := fmt.Sprintf("p%d", w.pick(4))
		y := w.policyYAML(name)
		pols, err := policy.ParseBytes(name+".yaml", y)
		if err != nil {
			return "", fmt.Errorf("generated policy does not parse: %w\n%s", err, y)
		}
		w.policies[name] = y
		for _, p := range pols {
			c.UpsertPolicy(p)
		}
		return "upsert policy:\n" + string(y), nil
	case op == 4:
		name := fmt.Sprintf("p%d", w.pick(4))
		delete(w.policies, name)
		c.DeletePolicy(policy.KindCiliumNetworkPolicy, "default", name)
		return "delete policy " + name, nil
	case op < 8:
		i := w.pick(4)
		ep := policy.Endpoint{Name: fmt.Sprintf("e%d", i), Namespace: "default",
			Labels: map[string]string{"app": orderApps[w.pick(len(orderApps))]}, IPv4: epAddr(i, w.pick(2))}
		if w.pick(2) == 0 {
			ep.IPv6 = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(0x10 + i)})
		}
		w.endpoints[ep.Name] = ep
		return fmt.Sprintf("upsert endpoint %s app=%s %s", ep.Name, ep.Labels["app"], ep.IPv4), c.UpsertEndpoint(ep)
	case op == 8:
		name := fmt.Sprintf("e%d", w.pick(4))
		delete(w.endpoints, name)
		_, err := c.DeleteEndpoint("default", name)
		return "delete endpoint " + name, err
	}
	keys := []ProxyKey{{policy.Ingress, policy.L7HTTP}, {policy.Egress, policy.L7HTTP}, {policy.Egress, policy.L7DNS}}
	k := keys[w.pick(len(keys))]
	if _, ok := w.proxies[k]; ok {
		delete(w.proxies, k)
		return fmt.Sprintf("proxy %v gone", k), nil
	}
	w.proxies[k] = 15000 + uint16(k.Direction)*10 + uint16(k.L7)
	return fmt.Sprintf("proxy %v acked", k), nil
}

// restart returns a new compiler fed with the world (label-set identities
// from the same allocator, as the agent's file allocator keeps them).
func (w *orderWorld) restart(t *testing.T, alloc policy.Allocator) *policy.Compiler {
	t.Helper()
	c := policy.NewCompiler(policy.Options{}, alloc)
	c.SetNode(policy.Node{Name: "n", Addresses: []netip.Addr{orderNode}})
	for _, name := range slices.Sorted(maps.Keys(w.policies)) {
		pols, err := policy.ParseBytes(name+".yaml", w.policies[name])
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pols {
			c.UpsertPolicy(p)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(w.endpoints)) {
		if err := c.UpsertEndpoint(w.endpoints[name]); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (w *orderWorld) ifaces() map[EndpointKey]int {
	m := map[EndpointKey]int{}
	for name := range w.endpoints {
		var i int
		fmt.Sscanf(name, "e%d", &i)
		m[EndpointKey{Namespace: "default", Name: name}] = 11 + i
	}
	return m
}

// orderProbes are the packets checked: at each endpoint, both directions,
// from/to every endpoint address, addresses inside the prefixes only, the
// node, the world; on the ports the policies use and one they do not.
func orderProbes() ([]pkt, []netip.Addr) {
	var addrs []netip.Addr
	for i := range 4 {
		addrs = append(addrs, epAddr(i, 0), epAddr(i, 1))
	}
	for i := range 4 {
		addrs = append(addrs, netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(0x10 + i)}))
	}
	for _, s := range []string{"10.1.0.99", "10.1.5.1", "10.7.0.1", "192.168.7.1", "172.16.3.4", "8.8.8.8", "fd00::99", "fd00::1:1", "2001:db8::1"} {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	addrs = append(addrs, orderNode)
	type pp struct {
		proto policy.Protocol
		port  uint16
	}
	ports := []pp{{policy.ProtoTCP, 80}, {policy.ProtoTCP, 8080}, {policy.ProtoTCP, 443}, {policy.ProtoUDP, 53}}
	var probes []pkt
	for ep := uint32(11); ep <= 14; ep++ {
		for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
			for ai, a := range addrs {
				for _, p := range ports {
					probes = append(probes, pkt{ep: ep, dir: dir, remote: a, addr: ai, proto: p.proto, port: p.port})
				}
			}
		}
	}
	return probes, addrs
}

// changes reports whether op would change the model m.
func changes(m *mapModel, op syncOp) bool {
	switch op.Kind {
	case opPutPolicy:
		v, ok := m.s.policy[op.Key]
		return !ok || v != op.Value
	case opPutEndpoint:
		c, ok := m.s.endpoints[op.Endpoint]
		cfg := op.Config
		cfg.IngressRev, cfg.EgressRev = 0, 0
		return !ok || c != cfg
	}
	return true
}

// affected lists the probes whose decision op can change.
func affected(op syncOp, probes []pkt) []int {
	var out []int
	for i, p := range probes {
		switch op.Kind {
		case opPutPolicy, opDeletePolicy:
			if p.ep != op.Key.Endpoint || p.dir != op.Key.Direction {
				continue
			}
		case opPutIPCache, opDeleteIPCache:
			if !op.Prefix.Contains(p.remote) {
				continue
			}
		case opPutEndpoint, opDeleteEndpoint:
			if p.ep != op.Endpoint {
				continue
			}
		default:
			continue
		}
		out = append(out, i)
	}
	return out
}

type planner func(cur *syncState, want *MapState, slots map[uint32]uint32) []syncOp

// orderViolation is the first intermediate decision that was neither the
// old nor the new one.
type orderViolation struct {
	step   int
	change string
	op     int
	ops    []syncOp
	pkt    pkt
	old    outcome
	new    outcome
	got    outcome
}

func (v *orderViolation) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "step %d, after op %d of %d: %s decided %s; old plan %s, new plan %s\nchange: %s\nops:\n", v.step, v.op+1, len(v.ops), v.pkt, v.got, v.old, v.new, v.change)
	for i, op := range v.ops {
		mark := "  "
		if i == v.op {
			mark = "> "
		}
		fmt.Fprintf(&b, "%s%s\n", mark, opString(op))
	}
	return b.String()
}

func opString(op syncOp) string {
	switch op.Kind {
	case opPutPolicy:
		return fmt.Sprintf("%-16s put policy %s -> %s proxy=%d", op.Phase, op.Key, op.Value.Verdict, op.Value.ProxyPort)
	case opDeletePolicy:
		return fmt.Sprintf("%-16s delete policy %s", op.Phase, op.Key)
	case opPutIPCache:
		return fmt.Sprintf("%-16s put ipcache %s -> %#x", op.Phase, op.Prefix, uint32(op.Identity))
	case opDeleteIPCache:
		return fmt.Sprintf("%-16s delete ipcache %s", op.Phase, op.Prefix)
	case opPutEndpoint:
		return fmt.Sprintf("%-16s put endpoint %d flags=%#x", op.Phase, op.Endpoint, op.Config.Flags)
	case opDeleteEndpoint:
		return fmt.Sprintf("%-16s delete endpoint %d", op.Phase, op.Endpoint)
	}
	return fmt.Sprintf("%-16s local %s -> %d (kind %d)", op.Phase, op.Addr, op.Endpoint, op.Kind)
}

// runOrderProperty runs steps random changes from seed and checks every
// intermediate state; it returns the first violation.
func runOrderProperty(t *testing.T, seed uint64, steps int, plan planner) *orderViolation {
	t.Helper()
	w := &orderWorld{rng: rand.New(rand.NewPCG(seed, 10)), policies: map[string][]byte{}, endpoints: map[string]policy.Endpoint{}, proxies: ProxyPorts{}}
	alloc := policy.NewMemoryAllocator()
	c := policy.NewCompiler(policy.Options{}, alloc)
	c.SetNode(policy.Node{Name: "n", Addresses: []netip.Addr{orderNode}})
	probes, addrs := orderProbes()
	cur := newModel(&syncState{})
	oldD, newD, got := make([]outcome, len(probes)), make([]outcome, len(probes)), make([]outcome, len(probes))
	var stop int
	var failed bool
	for step := range steps {
		what, err := w.change(c)
		if err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
		// Sometimes several changes reach one Sync (the agent batches).
		for w.pick(4) == 0 {
			more, err := w.change(c)
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			what += "\nand " + more
		}
		if w.pick(50) == 0 {
			// An agent restart over the pinned maps: a new compiler whose
			// local identities are numbered afresh (in sorted order), so
			// numbers the maps hold may now mean other prefixes.
			c = w.restart(t, alloc)
			what += "\n(and an agent restart: local identities renumbered)"
		}
		p := c.Plan()
		want, err := DesiredState(p, w.ifaces(), w.proxies)
		if err != nil {
			t.Fatalf("seed %d step %d: desired state: %v\nchange: %s", seed, step, err, what)
		}
		slots := map[uint32]uint32{}
		for id := range want.Endpoints {
			slots[id] = id
		}
		ops := plan(cur.s, want, slots)

		// The new decisions: all operations applied; that must be want.
		final := newModel(cur.s)
		for _, op := range ops {
			final.apply(op)
		}
		checkFinal(t, seed, step, final.s, want)
		if step == 0 || failed {
			cur.decideAll(probes, addrs, oldD, nil)
		} else {
			copy(oldD, newD) // the maps as the last Sync left them
		}
		copy(newD, oldD)
		// Only the probes some operation can affect may change.
		affects := make([][]int, len(ops))
		touched := make([]bool, len(probes))
		var union []int
		for i, op := range ops {
			if !changes(cur, op) {
				continue
			}
			affects[i] = affected(op, probes)
			for _, j := range affects[i] {
				if !touched[j] {
					touched[j] = true
					union = append(union, j)
				}
			}
		}
		final.decideAll(probes, addrs, newD, union)
		copy(got, oldD)
		// Now and then a Sync fails partway: the next one starts from
		// whatever it left (transit entries included).
		stop, failed = len(ops), false
		if len(ops) > 1 && w.pick(20) == 0 {
			stop, failed = w.pick(len(ops)), true
		}
		for i, op := range ops[:stop] {
			if !cur.apply(op) {
				continue // nothing changed
			}
			idx := affects[i]
			cur.decideAll(probes, addrs, got, idx)
			for _, j := range idx {
				if got[j] != oldD[j] && got[j] != newD[j] {
					return &orderViolation{step: step, change: what, op: i, ops: ops, pkt: probes[j], old: oldD[j], new: newD[j], got: got[j]}
				}
			}
		}
		if failed {
			continue
		}
		// The agent confirms each applied Plan (proxy ACK included), the
		// earliest moment a released local identity may be reused.
		c.ConfirmApplied(p.Generation)
	}
	return nil
}

// checkFinal: after all operations the model holds exactly want.
func checkFinal(t *testing.T, seed uint64, step int, final *syncState, want *MapState) {
	t.Helper()
	pol := map[PolicyKey]PolicyValue{}
	for k, de := range want.Policy {
		pol[k] = de.Value
	}
	flags := endpointFlags(want)
	eps := map[uint32]uint32{}
	for id, cfg := range final.endpoints {
		eps[id] = cfg.Flags
	}
	switch {
	case !reflect.DeepEqual(final.policy, pol):
		t.Fatalf("seed %d step %d: policy after all ops differs from the desired state", seed, step)
	case !reflect.DeepEqual(final.ipcache, want.IPCache):
		t.Fatalf("seed %d step %d: ipcache after all ops differs from the desired state", seed, step)
	case !reflect.DeepEqual(final.local, want.Local):
		t.Fatalf("seed %d step %d: local endpoints after all ops differ from the desired state", seed, step)
	case !reflect.DeepEqual(eps, flags):
		t.Fatalf("seed %d step %d: endpoint flags after all ops %v, want %v", seed, step, eps, flags)
	}
}

// TestSyncMakeBeforeBreak: at every intermediate step of every Sync, every
// pkt packet's decision is the old plan's or the new plan's; 10,000
// random changes.
func TestSyncMakeBeforeBreak(t *testing.T) {
	t.Parallel()
	const seeds, steps = 20, 500
	for seed := range uint64(seeds) {
		if v := runOrderProperty(t, seed, steps, planSync); v != nil {
			t.Fatalf("seed %d: %v", seed, v)
		}
	}
}

// TestSyncPropertyCatchesLegacyOrder: the property test fails on the order
// Sync used before its phases (ipcache first, then policy writes, then the
// endpoints' final flags, then deletions): it must find a violation.
func TestSyncPropertyCatchesLegacyOrder(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		if v := runOrderProperty(t, seed, 500, legacyPlanSync); v != nil {
			t.Logf("seed %d: the old order breaks the property (as expected):\n%v", seed, v)
			return
		}
	}
	t.Fatal("the property test found no violation in the old order: it has no teeth")
}

// legacyPlanSync is the order of Sync before syncplan.go, kept here to
// show that the property test tells it apart.
func legacyPlanSync(cur *syncState, want *MapState, slots map[uint32]uint32) []syncOp {
	var ops []syncOp
	var hostAdd, trieAdd []netip.Prefix
	for p, id := range want.IPCache {
		if cid, ok := cur.ipcache[p]; !ok || cid != id {
			if isHostPrefix(p) {
				hostAdd = append(hostAdd, p)
			} else {
				trieAdd = append(trieAdd, p)
			}
		}
	}
	for _, p := range append(hostAdd, trieAdd...) {
		ops = append(ops, syncOp{Kind: opPutIPCache, Prefix: p, Identity: want.IPCache[p]})
	}
	var hashPut, triePut []PolicyKey
	for k, de := range want.Policy {
		if v, ok := cur.policy[k]; !ok || v != de.Value {
			if k.inHash() {
				hashPut = append(hashPut, k)
			} else {
				triePut = append(triePut, k)
			}
		}
	}
	for _, k := range append(hashPut, triePut...) {
		ops = append(ops, syncOp{Kind: opPutPolicy, Key: k, Value: want.Policy[k].Value})
	}
	flags := endpointFlags(want)
	for id, es := range want.Endpoints {
		ops = append(ops, syncOp{Kind: opPutEndpoint, Endpoint: id, Config: moatEndpointConfig{Identity: uint32(es.Identity), Flags: flags[id], Slot: slots[id]}, Final: true})
	}
	for a, id := range want.Local {
		if cid, ok := cur.local[a]; !ok || cid != id {
			ops = append(ops, syncOp{Kind: opPutLocal, Addr: a, Endpoint: id})
		}
	}
	for a := range cur.local {
		if _, ok := want.Local[a]; !ok {
			ops = append(ops, syncOp{Kind: opDeleteLocal, Addr: a})
		}
	}
	var hashDel, trieDel []PolicyKey
	for k := range cur.policy {
		if _, ok := want.Policy[k]; !ok {
			if k.inHash() {
				hashDel = append(hashDel, k)
			} else {
				trieDel = append(trieDel, k)
			}
		}
	}
	for _, k := range append(hashDel, trieDel...) {
		ops = append(ops, syncOp{Kind: opDeletePolicy, Key: k})
	}
	var hostDel, trieDelIP []netip.Prefix
	for p := range cur.ipcache {
		if _, ok := want.IPCache[p]; !ok {
			if isHostPrefix(p) {
				hostDel = append(hostDel, p)
			} else {
				trieDelIP = append(trieDelIP, p)
			}
		}
	}
	for _, p := range append(hostDel, trieDelIP...) {
		ops = append(ops, syncOp{Kind: opDeleteIPCache, Prefix: p})
	}
	var gone []uint32
	for id := range cur.endpoints {
		if _, ok := want.Endpoints[id]; !ok {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		ops = append(ops, syncOp{Kind: opDeleteEndpoint, Endpoint: id})
	}
	return ops
}

// checkTransition applies the operations of plan from old to new to the
// model one at a time and returns every probe decision that is neither
// old's nor new's.
func checkTransition(t *testing.T, plan planner, oldPlan, newPlan *policy.Plan, ifaces map[EndpointKey]int, probes []pkt, addrs []netip.Addr) []*orderViolation {
	t.Helper()
	cur := newModel(&syncState{})
	wantOld, err := DesiredState(oldPlan, ifaces, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range planSync(cur.s, wantOld, map[uint32]uint32{}) {
		cur.apply(op)
	}
	want, err := DesiredState(newPlan, ifaces, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops := plan(cur.s, want, map[uint32]uint32{})
	final := newModel(cur.s)
	for _, op := range ops {
		final.apply(op)
	}
	oldD, newD, got := make([]outcome, len(probes)), make([]outcome, len(probes)), make([]outcome, len(probes))
	cur.decideAll(probes, addrs, oldD, nil)
	final.decideAll(probes, addrs, newD, nil)
	var out []*orderViolation
	for i, op := range ops {
		cur.apply(op)
		cur.decideAll(probes, addrs, got, nil)
		for j := range probes {
			if got[j] != oldD[j] && got[j] != newD[j] {
				out = append(out, &orderViolation{change: "see test", op: i, ops: ops, pkt: probes[j], old: oldD[j], new: newD[j], got: got[j]})
			}
		}
	}
	return out
}

// TestSyncRenumberedPrefix is the case: a client may reach
// 192.168.0.0/16 (0x1000001); a new policy adds 10.0.0.0/8 and, numbered
// by sort position as a restarted agent (or the old compiler) does, 10/8
// takes 0x1000001 and 192.168/16 moves to 0x1000002. 10.0.0.1 must never
// be allowed in between: the old order wrote the ipcache first, so 10/8
// inherited 192.168/16's allow until the stale entry was deleted.
func TestSyncRenumberedPrefix(t *testing.T) {
	client := policy.Endpoint{Name: "client", Namespace: "default", Labels: map[string]string{"app": "client"}, IPv4: netip.MustParseAddr("10.200.0.1")}
	parse := func(y string) []policy.Policy {
		pols, err := policy.ParseBytes("p.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return pols
	}
	allow192 := parse("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: client}}\n  egress:\n  - toCIDR: [192.168.0.0/16]\n")
	ingress10 := parse("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: client}}\n  ingress:\n  - fromCIDR: [10.0.0.0/8]\n")
	oldPlan, err := policy.Compile(policy.Input{Policies: allow192, Endpoints: []policy.Endpoint{client}})
	if err != nil {
		t.Fatal(err)
	}
	newPlan, err := policy.Compile(policy.Input{Policies: append(allow192, ingress10...), Endpoints: []policy.Endpoint{client}})
	if err != nil {
		t.Fatal(err)
	}
	idOf := func(p *policy.Plan, s string) policy.ID {
		for _, e := range p.IPCache {
			if e.Prefix == netip.MustParsePrefix(s) {
				return e.Identity
			}
		}
		return 0
	}
	if idOf(oldPlan, "192.168.0.0/16") != idOf(newPlan, "10.0.0.0/8") {
		t.Fatalf("setup: want 10/8 in the new plan on 192.168/16's old number, got %#x and %#x", uint32(idOf(oldPlan, "192.168.0.0/16")), uint32(idOf(newPlan, "10.0.0.0/8")))
	}
	ifaces := map[EndpointKey]int{{Namespace: "default", Name: "client"}: 11}
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("8.8.8.8")}
	var probes []pkt
	for ai, a := range addrs {
		for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
			probes = append(probes, pkt{ep: 11, dir: dir, remote: a, addr: ai, proto: policy.ProtoTCP, port: 80})
		}
	}
	if vs := checkTransition(t, planSync, oldPlan, newPlan, ifaces, probes, addrs); len(vs) > 0 {
		t.Fatalf("phased sync: %v", vs[0])
	}
	vs := checkTransition(t, legacyPlanSync, oldPlan, newPlan, ifaces, probes, addrs)
	for _, v := range vs {
		if v.pkt.remote == addrs[0] && v.pkt.dir == policy.Egress && v.got == outAllow {
			t.Logf("the old order lets 10.0.0.1 out (as the issue says): %v", v)
			return
		}
	}
	t.Fatalf("the old order never allowed 10.0.0.1 (%d other violations): the test cannot tell the orders apart", len(vs))
}
