package datapath

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

// simMaps is moat_svc and moat_svc_be as a reader sees them.
type simMaps struct {
	svc map[Frontend]sockaddrSvcVal
	be  map[svcSlot]netip.AddrPort
}

func newSimMaps() *simMaps {
	return &simMaps{svc: map[Frontend]sockaddrSvcVal{}, be: map[svcSlot]netip.AddrPort{}}
}

func (m *simMaps) apply(op svcOp) {
	switch op.kind {
	case opWriteSlot:
		m.be[svcSlot{op.id, op.slot}] = op.backend
	case opWriteSvc:
		m.svc[op.fe] = sockaddrSvcVal{Id: op.id, Count: op.count, Rev: op.rev}
	case opDelSvc:
		delete(m.svc, op.fe)
	case opDelSlot:
		delete(m.be, svcSlot{op.id, op.slot})
	}
}

// table reads the maps back as planServices' input.
func (m *simMaps) table() svcTable {
	t := svcTable{svcs: map[Frontend]installedService{}}
	ids := map[uint32]Frontend{}
	for f, v := range m.svc {
		t.svcs[f] = installedService{id: v.Id, rev: v.Rev, slots: make([]netip.AddrPort, v.Count)}
		ids[v.Id] = f
	}
	for k, b := range m.be {
		f, ok := ids[k.id]
		if !ok || int(k.slot) >= len(t.svcs[f].slots) {
			t.orphans = append(t.orphans, k)
			continue
		}
		t.svcs[f].slots[k.slot] = b
	}
	return t
}

// pickable returns what a reader may get for f: every slot below the
// count, and whether a slot below the count is missing.
func (m *simMaps) pickable(f Frontend) (got []netip.AddrPort, count int, missing bool) {
	v, ok := m.svc[f]
	if !ok {
		return nil, -1, false
	}
	for i := range uint32(v.Count) {
		b, ok := m.be[svcSlot{v.Id, i}]
		if !ok {
			missing = true
			continue
		}
		got = append(got, b)
	}
	return got, int(v.Count), missing
}

var (
	feA = Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: policy.ProtoTCP}
	feB = Frontend{Addr: netip.MustParseAddr("10.96.0.11"), Port: 53, Proto: policy.ProtoUDP}
	fe6 = Frontend{Addr: netip.MustParseAddr("fd00:96::10"), Port: 443, Proto: policy.ProtoTCP}
)

func be(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestServicesValidate(t *testing.T) {
	cases := []struct {
		name string
		svcs Services
		want string // substring of the error; "" for none
	}{
		{"ok", Services{feA: {be("10.0.0.1:8080")}, fe6: {be("[fd00::1]:8443")}, feB: nil}, ""},
		{"mixed family", Services{feA: {be("[fd00::1]:80")}}, "10.96.0.10:80/tcp: backend [fd00::1]:80: address family differs"},
		{"port 0 backend", Services{feA: {be("10.0.0.1:0")}}, "backend 10.0.0.1:0: port must not be 0"},
		{"port 0 frontend", Services{{Addr: feA.Addr, Proto: policy.ProtoTCP}: nil}, "frontend port must not be 0"},
		{"sctp", Services{{Addr: feA.Addr, Port: 1, Proto: policy.ProtoSCTP}: nil}, "protocol must be tcp or udp"},
		{"unspecified", Services{{Addr: netip.IPv4Unspecified(), Port: 1, Proto: policy.ProtoTCP}: nil}, "frontend address must be a unicast address"},
		{"v4-mapped backend of v4 frontend", Services{feA: {be("[::ffff:10.0.0.1]:80")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.svcs.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestPlanServicesOrder(t *testing.T) {
	b1, b2, b3 := be("10.0.0.1:80"), be("10.0.0.2:80"), be("10.0.0.3:80")
	cases := []struct {
		name       string
		from, to   Services
		wantOps    []string
		wantWrites int
	}{
		{"new", nil, Services{feA: {b2, b1}}, []string{"slot 0=10.0.0.1:80", "slot 1=10.0.0.2:80", "svc count=2 rev=1"}, 3},
		{"same", Services{feA: {b1, b2}}, Services{feA: {b2, b1}}, nil, 0},
		{"grow", Services{feA: {b1}}, Services{feA: {b1, b2}}, []string{"slot 1=10.0.0.2:80", "svc count=2 rev=2"}, 2},
		{"shrink keeps the stayer's slot", Services{feA: {b1, b2}}, Services{feA: {b1}}, []string{"svc count=1 rev=2", "del slot 1"}, 2},
		{"shrink moves the stayer down", Services{feA: {b1, b2}}, Services{feA: {b2}}, []string{"slot 0=10.0.0.2:80", "svc count=1 rev=2", "del slot 1"}, 3},
		{"replace in place", Services{feA: {b1, b2}}, Services{feA: {b1, b3}}, []string{"slot 1=10.0.0.3:80", "svc count=2 rev=2"}, 2},
		{"to none", Services{feA: {b1}}, Services{feA: nil}, []string{"svc count=0 rev=2", "del slot 0"}, 2},
		{"delete", Services{feA: {b1, b2}}, Services{}, []string{"del svc", "del slot 0", "del slot 1"}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newSimMaps()
			ops, _, next, err := planServices(m.table(), c.from, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range ops {
				m.apply(op)
			}
			ops, _, _, err = planServices(m.table(), c.to, next)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, op := range ops {
				got = append(got, describeOp(op))
			}
			if !slices.Equal(got, c.wantOps) {
				t.Fatalf("ops %q, want %q", got, c.wantOps)
			}
		})
	}
}

func describeOp(op svcOp) string {
	switch op.kind {
	case opWriteSlot:
		return fmt.Sprintf("slot %d=%s", op.slot, op.backend)
	case opWriteSvc:
		return fmt.Sprintf("svc count=%d rev=%d", op.count, op.rev)
	case opDelSvc:
		return "del svc"
	}
	return fmt.Sprintf("del slot %d", op.slot)
}

// TestPlanServicesModel applies random changes op by op and checks what a
// reader could see after every single map write: a frontend with backends
// before and after always has a complete slot table of old or new
// backends, a new frontend is absent or complete, and after the last write
// the maps hold exactly the new table (no stray slot) and a second plan is
// empty.
func TestPlanServicesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([]netip.AddrPort, 12)
	for i := range pool {
		pool[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 4), byte(i + 1)}), uint16(8000+i%3))
	}
	fes := []Frontend{feA, feB, {Addr: netip.MustParseAddr("10.96.0.12"), Port: 80, Proto: policy.ProtoTCP}}
	randomTable := func() Services {
		s := Services{}
		for _, f := range fes {
			if rng.IntN(5) == 0 {
				continue // absent
			}
			n := rng.IntN(6)
			var bes []netip.AddrPort
			for range n {
				bes = append(bes, pool[rng.IntN(len(pool))])
			}
			s[f] = bes
		}
		return s
	}
	m := newSimMaps()
	var next uint32
	cur := Services{}
	for step := range 3000 {
		want := randomTable()
		ops, after, n, err := planServices(m.table(), want, next)
		if err != nil {
			t.Fatal(err)
		}
		next = n
		oldSets, newSets := sets(cur.normalized()), sets(want.normalized())
		for i, op := range ops {
			m.apply(op)
			for _, f := range fes {
				got, count, missing := m.pickable(f)
				o, inOld := oldSets[f]
				w, inNew := newSets[f]
				ctx := fmt.Sprintf("step %d op %d (%s) frontend %s", step, i, describeOp(op), f)
				if inOld && inNew && len(o) > 0 && len(w) > 0 {
					if count <= 0 || missing {
						t.Fatalf("%s: count %d, missing slot %v: a frontend with backends before and after lost them", ctx, count, missing)
					}
				}
				if !inOld && inNew && count >= 0 && missing {
					t.Fatalf("%s: a new frontend is visible before its slots", ctx)
				}
				for _, b := range got {
					if !o[b] && !w[b] {
						t.Fatalf("%s: slot holds %s, in neither the old nor the new set", ctx, b)
					}
				}
			}
		}
		for _, f := range fes {
			got, count, missing := m.pickable(f)
			w, inNew := newSets[f]
			if !inNew {
				if count != -1 {
					t.Fatalf("step %d: frontend %s still installed", step, f)
				}
				continue
			}
			if missing || count != len(w) || len(got) != len(w) {
				t.Fatalf("step %d: frontend %s has %v (count %d), want %v", step, f, got, count, w)
			}
			for _, b := range got {
				if !w[b] {
					t.Fatalf("step %d: frontend %s holds %s, not wanted", step, f, b)
				}
			}
		}
		total := 0
		for _, s := range after {
			total += len(s.slots)
		}
		if len(m.be) != total {
			t.Fatalf("step %d: %d backend entries, want %d (stray slots)", step, len(m.be), total)
		}
		if again, _, _, _ := planServices(m.table(), want, next); len(again) != 0 {
			t.Fatalf("step %d: a second plan for the same table has %d ops", step, len(again))
		}
		cur = want
	}
}

func sets(s Services) map[Frontend]map[netip.AddrPort]bool {
	out := map[Frontend]map[netip.AddrPort]bool{}
	for f, bes := range s {
		out[f] = map[netip.AddrPort]bool{}
		for _, b := range bes {
			out[f][b] = true
		}
	}
	return out
}

// TestPlanServicesOrphans: backend entries no frontend uses (an
// interrupted sync) are deleted, and a new frontend never takes their id.
func TestPlanServicesOrphans(t *testing.T) {
	m := newSimMaps()
	m.be[svcSlot{7, 0}] = be("10.0.0.9:80")
	m.svc[feA] = sockaddrSvcVal{Id: 1, Count: 1, Rev: 4}
	m.be[svcSlot{1, 0}] = be("10.0.0.1:80")
	m.be[svcSlot{1, 3}] = be("10.0.0.3:80") // above the count
	ops, after, _, err := planServices(m.table(), Services{feA: {be("10.0.0.1:80")}, feB: {be("10.0.0.2:53")}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		m.apply(op)
	}
	if after[feB].id == 7 || after[feB].id == 1 {
		t.Errorf("new frontend took id %d, in use by an orphan or a frontend", after[feB].id)
	}
	if _, ok := m.be[svcSlot{7, 0}]; ok {
		t.Error("orphan (7,0) not deleted")
	}
	if _, ok := m.be[svcSlot{1, 3}]; ok {
		t.Error("slot above the count not deleted")
	}
	if after[feA].rev != 4 {
		t.Errorf("unchanged frontend's revision moved to %d", after[feA].rev)
	}
	if len(slices.Collect(maps.Keys(m.be))) != 2 {
		t.Errorf("backend entries %v, want 2", m.be)
	}
}

func TestSockAddrPinNames(t *testing.T) {
	for _, h := range sockAddrHooks {
		k := sockAddrLink{ino: 42, hook: h.name}
		got, ok := parseSockAddrPinName(sockAddrPinName(k))
		if !ok || got != k {
			t.Errorf("round trip of %+v: %+v, %v", k, got, ok)
		}
		if _, ok := parseSockopsPinName(sockAddrPinName(k)); ok {
			t.Errorf("%s parses as a sock_ops pin", sockAddrPinName(k))
		}
		if _, ok := parsePinName(sockAddrPinName(k)); ok {
			t.Errorf("%s parses as a tc pin", sockAddrPinName(k))
		}
	}
	for _, bad := range []string{"cgroup-42-sockops", "cgroup-42-svc-bind4", "cgroup-x-svc-connect4", "7-tc-ingress", "3-xdp"} {
		if _, ok := parseSockAddrPinName(bad); ok {
			t.Errorf("%q parsed as a sock_addr pin", bad)
		}
	}
}

func TestSvcAddrEncoding(t *testing.T) {
	for _, s := range []string{"10.96.0.10:80", "[fd00::1]:8443", "[::ffff:1.2.3.4]:53"} {
		ap := be(s)
		got := addrPortOfSvc(svcAddrOf(ap))
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if got != want {
			t.Errorf("%s round trip: %s", s, got)
		}
	}
	// The bytes the program compares: the address in network order, the
	// port in network order, IPv4 as IPv4-mapped.
	k := svcKeyOf(feA)
	if k.Addr[2] != 0xffff0000 || k.Addr[3] != 0x0a00600a || k.Port != 80<<8 {
		t.Errorf("key of %s: %+v", feA, k)
	}
}
