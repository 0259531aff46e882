package datapath

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// The map layouts of the committed object testdata/upgrade/moat-4f12d15.o
// (its bpf/moat.h), written the way that version's loader wrote them.
type (
	oldPolicyKey struct {
		Prefixlen, Endpoint, Identity uint32 // identity big endian
		Direction, Proto              uint8
		Dport                         uint16
	}
	oldPolicyVal struct {
		Verdict, L7 uint8
		ProxyPort   uint16
		Rule        uint32
	}
	oldIPCacheKey struct {
		Prefixlen uint32
		Addr      [16]byte
	}
	oldIPCacheVal      struct{ Identity, Flags uint32 }
	oldEndpointConfig  struct{ Identity, Flags, IngressRev, EgressRev uint32 }
	oldEndpointSetting struct {
		ifindex int
		cfg     oldEndpointConfig
	}
)

const (
	oldEPIngressEnforced = 1 << 0
	oldEPIngressEntries  = 1 << 2
	oldPolicyPrefix      = 80 // POLICY_PREFIX_STATIC: endpoint, identity, direction, proto
)

// startOldDatapath loads the 4f12d15 object with its maps pinned under
// root, fills them for the given endpoints, ipcache and ingress entries, and
// attaches and pins its programs on every endpoint's host veth as that
// version's loader did (TCX links under root/links, named <ifindex>-tc-<hook>).
func startOldDatapath(t *testing.T, root string, eps []oldEndpointSetting, ipc map[netip.Addr]policy.ID, ingress map[oldPolicyKey]oldPolicyVal) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec("testdata/upgrade/moat-4f12d15.o")
	if err != nil {
		t.Fatalf("load the old object: %v", err)
	}
	if err := ensurePinRoot(root); err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: root}})
	testutil.Require(t, "load the old object's programs", err)
	defer coll.Close()
	for a, id := range ipc {
		k := oldIPCacheKey{Prefixlen: 128, Addr: a.As16()}
		if err := coll.Maps["moat_ipcache"].Put(&k, &oldIPCacheVal{Identity: uint32(id)}); err != nil {
			t.Fatalf("old ipcache: %v", err)
		}
	}
	for k, v := range ingress {
		if err := coll.Maps["moat_policy"].Put(&k, &v); err != nil {
			t.Fatalf("old policy: %v", err)
		}
	}
	for _, ep := range eps {
		if err := coll.Maps["moat_endpoints"].Put(uint32(ep.ifindex), &ep.cfg); err != nil {
			t.Fatalf("old endpoint config: %v", err)
		}
	}
	for _, ep := range eps {
		for _, h := range []struct {
			prog string
			at   ebpf.AttachType
			name string
		}{{"from_endpoint", ebpf.AttachTCXIngress, "ingress"}, {"to_endpoint", ebpf.AttachTCXEgress, "egress"}} {
			l, err := link.AttachTCX(link.TCXOptions{Interface: ep.ifindex, Program: coll.Programs[h.prog], Attach: h.at})
			if err != nil {
				t.Fatalf("attach the old %s: %v", h.prog, err)
			}
			if err := l.Pin(filepath.Join(root, "links", fmt.Sprintf("%d-tc-%s", ep.ifindex, h.name))); err != nil {
				t.Fatalf("pin the old link: %v", err)
			}
			l.Close()
		}
	}
}

// pingStream sends echo requests at a steady rate and records the replies.
type pingStream struct {
	pg       *testutil.Pinger
	dst      netip.Addr
	sent     atomic.Int64
	until    atomic.Int64
	mu       sync.Mutex
	received map[uint16]bool
	errs     []error
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startPingStream(t *testing.T, from *testutil.Pod, dst netip.Addr, every time.Duration) *pingStream {
	t.Helper()
	pg, err := from.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	s := &pingStream{pg: pg, dst: dst, received: map[uint16]bool{}, stop: make(chan struct{})}
	s.until.Store(1 << 40)
	s.wg.Add(2)
	go func() { // receiver
		defer s.wg.Done()
		for {
			seq, err := pg.Recv(dst, time.Now().Add(50*time.Millisecond))
			if errors.Is(err, testutil.ErrNoReply) {
				select {
				case <-s.stop:
					return
				default:
					continue
				}
			}
			if err != nil {
				s.fail(err)
				return
			}
			s.mu.Lock()
			s.received[seq] = true
			s.mu.Unlock()
		}
	}()
	go func() { // sender
		defer s.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for s.sent.Load() < s.until.Load() {
			if err := pg.Send(dst, uint16(s.sent.Load())); err != nil {
				s.fail(err)
				return
			}
			s.sent.Add(1)
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *pingStream) fail(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func (s *pingStream) replies() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.received)
}

// finish stops sending after n pings in all, waits (bounded) for the
// outstanding replies and returns the sequence numbers without a reply.
func (s *pingStream) finish(t *testing.T, n int64, wantReplies bool) (lost []int64) {
	t.Helper()
	s.until.Store(n)
	waitCond(t, "the pings are sent", 60*time.Second, func() bool { return s.sent.Load() >= n })
	if wantReplies {
		// Bounded: a lost reply never comes, the wait only spares a
		// loaded machine from counting a slow reply as lost.
		deadline := time.Now().Add(5 * time.Second)
		for int64(s.replies()) < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(s.stop)
	s.wg.Wait()
	s.pg.Close()
	for _, err := range s.errs {
		t.Errorf("ping %s: %v", s.dst, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq := int64(0); seq < n; seq++ {
		if !s.received[uint16(seq)] {
			lost = append(lost, seq)
		}
	}
	return lost
}

// TestPrivilegedUpgradeFromOlderLayout upgrades over the pins of an agent
// whose maps have another layout (the committed 4f12d15 object): b allows
// everything from a and denies c; a lets nothing in (its ingress is
// enforced without entries), so replies to a pass only on a's tracked
// flows. While a pings b at 500 per second and c pings b, the new datapath
// opens over the old pins, syncs the same policy into new maps beside the
// old ones and swaps the programs: not one of a's pings is lost, c never
// gets a reply, and a TCP connection that a opened before the upgrade
// still works after it (its tracked entries were converted: a TCP packet
// past the handshake never makes a new entry).
func TestPrivilegedUpgradeFromOlderLayout(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	c := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.3.1")})
	const idC = policy.ID(1003)
	root := testPinRoot(t)
	t.Cleanup(func() { _ = Cleanup(Config{PinRoot: root}) })

	be32 := bits.ReverseBytes32
	startOldDatapath(t, root,
		[]oldEndpointSetting{
			{tp.a.HostIfIndex, oldEndpointConfig{Identity: uint32(tp.idA), Flags: oldEPIngressEnforced, IngressRev: 1, EgressRev: 2}},
			{tp.b.HostIfIndex, oldEndpointConfig{Identity: uint32(tp.idB), Flags: oldEPIngressEnforced | oldEPIngressEntries, IngressRev: 3, EgressRev: 4}},
			{c.HostIfIndex, oldEndpointConfig{Identity: uint32(idC), IngressRev: 5, EgressRev: 6}},
		},
		map[netip.Addr]policy.ID{tp.a.Addr: tp.idA, tp.b.Addr: tp.idB, c.Addr: idC},
		map[oldPolicyKey]oldPolicyVal{
			{Prefixlen: oldPolicyPrefix, Endpoint: uint32(tp.b.HostIfIndex), Identity: be32(uint32(tp.idA))}: {Verdict: uint8(policy.VerdictAllow)},
			{Prefixlen: oldPolicyPrefix, Endpoint: uint32(tp.b.HostIfIndex), Identity: be32(uint32(idC))}:    {Verdict: uint8(policy.VerdictDeny)},
		})
	oldProgs := tcxProgramIDs(t, tp.b.HostIfIndex)
	srv := startEcho(t, tp.b)
	conn, err := dialTCP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort))
	if err != nil {
		t.Fatalf("a->b tcp through the old programs: %v", err)
	}
	defer conn.Close()
	if err := echoOnce(conn, "before the upgrade"); err != nil {
		t.Fatalf("a->b tcp through the old programs: %v", err)
	}

	// The old programs enforce: a reaches b, c does not.
	pg, err := tp.a.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Ping(tp.b.Addr, 2*time.Second); err != nil {
		t.Fatalf("a->b through the old programs: %v", err)
	}
	pg.Close()
	if pc, err := c.NewPinger(); err != nil {
		t.Fatal(err)
	} else {
		if err := pc.Ping(tp.b.Addr, 300*time.Millisecond); !errors.Is(err, testutil.ErrNoReply) {
			t.Fatalf("c->b through the old programs: %v, want no reply", err)
		}
		pc.Close()
	}

	allowed := startPingStream(t, tp.a, tp.b.Addr, 2*time.Millisecond) // 500 per second
	denied := startPingStream(t, c, tp.b.Addr, 5*time.Millisecond)
	waitCond(t, "250 pings through the old programs", 30*time.Second, func() bool { return allowed.sent.Load() >= 250 })

	d := openTestDatapath(t, root)
	defer d.Close()
	d.mu.Lock()
	staged := d.upgrade != nil
	var stale []string
	if staged {
		for name := range d.upgrade.stale {
			stale = append(stale, name)
		}
	}
	d.mu.Unlock()
	if !staged {
		t.Fatal("Open over pins of another layout staged no upgrade")
	}
	for _, want := range []string{"moat_endpoints", "moat_ep_stats", "moat_rule_stats", "moat_ct"} {
		if !strings.Contains(strings.Join(stale, ","), want) {
			t.Errorf("stale maps %v: %s missing", stale, want)
		}
	}
	openedAt := allowed.sent.Load()
	// The agent's order: attach (the old programs stay until the swap),
	// then sync.
	ifaces := tp.ifaces()
	ifaces[EndpointKey{Namespace: "t", Name: "c"}] = c.HostIfIndex
	for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex, c.HostIfIndex} {
		if err := d.Attach(idx); err != nil {
			t.Fatal(err)
		}
	}
	if got := tcxProgramIDs(t, tp.b.HostIfIndex); !slices.Equal(got, oldProgs) {
		t.Errorf("programs on b before the first sync: %v, want the old ones %v", got, oldProgs)
	}
	plan := tp.plan(policy.DirectionPlan{}, policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
		{L4Key: policy.L4Key{Identity: idC, Proto: policy.ProtoAny}, Verdict: policy.VerdictDeny},
	}})
	plan.Endpoints[0].Ingress = policy.DirectionPlan{Enforced: true}
	plan.Endpoints = append(plan.Endpoints, policy.EndpointPlan{Namespace: "t", Name: "c", Identity: idC, Addresses: []netip.Addr{c.Addr}})
	plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(c.Addr, 32), Identity: idC})
	if err := d.Sync(plan, ifaces, nil); err != nil {
		t.Fatalf("sync (and swap): %v", err)
	}
	swappedAt := allowed.sent.Load()

	lost := allowed.finish(t, swappedAt+500, true)
	deniedReplies := denied.replies()
	denied.finish(t, denied.sent.Load(), false)
	t.Logf("upgrade: %d pings a->b (opened at #%d, swapped at #%d), %d lost; %d pings c->b, %d replies",
		swappedAt+500, openedAt, swappedAt, len(lost), denied.sent.Load(), deniedReplies)
	if len(lost) > 0 {
		t.Errorf("lost %d pings a->b across the upgrade; first: %v", len(lost), lost[:min(len(lost), 20)])
	}
	if deniedReplies > 0 || denied.replies() > 0 {
		t.Errorf("c->b got %d replies across the upgrade, want 0", denied.replies())
	}
	if denied.sent.Load() < 100 {
		t.Errorf("only %d pings c->b: the check proves nothing", denied.sent.Load())
	}

	if err := echoOnce(conn, "after the upgrade"); err != nil {
		t.Errorf("a tcp connection opened before the upgrade: %v", err)
	}
	if err := probeICMP(tp.b, tp.a.Addr); !errors.Is(err, testutil.ErrNoReply) {
		t.Errorf("b->a ping after the upgrade: %v, want no reply (a lets nothing in)", err)
	}

	// The new programs, bound to the new maps, run; the pins are the new maps.
	d.mu.Lock()
	pending := d.upgrade != nil
	d.mu.Unlock()
	if pending {
		t.Fatal("the upgrade still waits after a successful sync")
	}
	for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex, c.HostIfIndex} {
		got := tcxProgramIDs(t, idx)
		want := []ebpf.ProgramID{programID(t, d.objs.FromEndpoint), programID(t, d.objs.ToEndpoint)}
		if !slices.Equal(got, want) {
			t.Errorf("ifindex %d runs programs %v, want the new %v", idx, got, want)
		}
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(root, "moat_endpoints"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if vs := m.ValueSize(); vs != d.objs.MoatEndpoints.ValueSize() {
		t.Errorf("pinned moat_endpoints has %d-byte values, want the new %d", vs, d.objs.MoatEndpoints.ValueSize())
	}
	m.Close()
	if left, _ := filepath.Glob(filepath.Join(root, upgradePinPrefix+"*")); len(left) > 0 {
		t.Errorf("temporary pins left: %v", left)
	}

	// A restart over the upgraded pins is a plain in-place swap.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openTestDatapath(t, root)
	defer d2.Close()
	if d2.upgrade != nil {
		t.Errorf("a restart over the upgraded pins staged another upgrade: %v", d2.upgrade.why)
	}
	if err := d2.Sync(plan, ifaces, nil); err != nil {
		t.Fatal(err)
	}
	pg, err = tp.a.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if err := pg.Ping(tp.b.Addr, 2*time.Second); err != nil {
		t.Errorf("a->b after the restart: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatal(err)
	}
}

func tcxProgramIDs(t *testing.T, ifindex int) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err != nil {
			t.Fatalf("query tcx programs on %d: %v", ifindex, err)
		}
		for _, p := range res.Programs {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

func programID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// waitCond waits until ok holds, failing the test at the deadline.
func waitCond(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}
