package datapath

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// A Sync that fails after writing some entries still bumps the revisions
// they owe on the next Sync, even though that Sync finds the entries
// already in place.
func TestPrivilegedSyncRetryBumpsRevision(t *testing.T) {
	testutil.Privileged(t)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	const ifindex = 1_000_001 // never attached: Sync only writes maps
	key := EndpointKey{Namespace: "t", Name: "a"}
	ifaces := map[EndpointKey]int{key: ifindex}
	plan := func(ports ...uint16) *policy.Plan {
		dp := policy.DirectionPlan{Enforced: true}
		for _, p := range ports {
			dp.Entries = append(dp.Entries, tcpEntry(1002, p, policy.VerdictAllow))
		}
		return &policy.Plan{Endpoints: []policy.EndpointPlan{{
			Namespace: "t", Name: "a", Identity: 1001,
			Addresses: []netip.Addr{netip.MustParseAddr("10.201.9.1")}, Egress: dp,
		}}}
	}
	egressRev := func(t *testing.T) uint32 {
		t.Helper()
		var cfg moatEndpointConfig
		id := uint32(ifindex)
		if err := d.objs.MoatEndpoints.Lookup(&id, &cfg); err != nil {
			t.Fatalf("read endpoint config: %v", err)
		}
		return cfg.EgressRev
	}
	cases := []struct {
		name     string
		from, to *policy.Plan
	}{
		{name: "additions", from: plan(80), to: plan(80, 443)},
		{name: "deletions", from: plan(80, 443), to: plan(443)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Sync(tc.from, ifaces, nil); err != nil {
				t.Fatalf("sync: %v", err)
			}
			before := egressRev(t)
			injected := errors.New("injected endpoint write failure")
			d.putEndpointHook = func(uint32, *moatEndpointConfig) error { return injected }
			err := d.Sync(tc.to, ifaces, nil)
			d.putEndpointHook = nil
			if !errors.Is(err, injected) {
				t.Fatalf("sync with a failing endpoint write = %v, want the injected error", err)
			}
			if got := egressRev(t); got != before {
				t.Fatalf("egress revision %d after the failed sync, want %d (nothing written)", got, before)
			}
			if err := d.Sync(tc.to, ifaces, nil); err != nil {
				t.Fatalf("retry sync: %v", err)
			}
			after := egressRev(t)
			if after == before {
				t.Fatalf("egress revision still %d after the retry: tracked flows would never be re-checked", after)
			}
			if err := d.Sync(tc.to, ifaces, nil); err != nil {
				t.Fatalf("third sync: %v", err)
			}
			if got := egressRev(t); got != after {
				t.Errorf("egress revision %d after an unchanged sync, want %d (owed bump cleared)", got, after)
			}
		})
	}
}

// An established flow that a policy change now sends to a proxy is cut on
// its next packet (a proxy cannot take it mid-stream); a new connection is
// redirected, and here, without a proxy, fails closed.
func TestPrivilegedRecheckAllowToRedirect(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	events := collectEvents(t, d)
	allow := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{tcpEntry(tp.idB, srv.tcpPort, policy.VerdictAllow)}}
	if err := d.Sync(tp.plan(allow, policy.DirectionPlan{}), tp.ifaces(), nil); err != nil {
		t.Fatalf("sync: %v", err)
	}
	for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex} {
		if err := d.Attach(idx); err != nil {
			t.Fatalf("attach: %v", err)
		}
	}
	dst := netip.AddrPortFrom(tp.b.Addr, srv.tcpPort)
	c, err := dialTCP(tp.a, dst)
	if err != nil {
		t.Fatalf("dial %v: %v", dst, err)
	}
	defer c.Close()
	if err := echoOnce(c, "before"); err != nil {
		t.Fatalf("echo on the allowed flow: %v", err)
	}
	src := addrPortOf(c.LocalAddr())

	redirect := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{tcpEntry(tp.idB, srv.tcpPort, policy.VerdictRedirect)}}
	if err := d.Sync(tp.plan(redirect, policy.DirectionPlan{}), tp.ifaces(), nil); err != nil {
		t.Fatalf("sync redirect: %v", err)
	}
	if err := echoOnce(c, "after"); err == nil {
		t.Fatal("echo on the established flow passed after its port became redirected")
	}
	ev := events.waitFor(t, "drop CT_INVALID of the re-checked flow", func(ev Event) bool {
		return ev.Kind == EventDrop && ev.Reason == DropCTInvalid && ev.Endpoint == uint32(tp.a.HostIfIndex) &&
			ev.Src == src && ev.Dst == dst
	})
	if ev.Verdict != policy.VerdictRedirect || ev.Direction != policy.Egress {
		t.Errorf("drop event = %+v, want verdict redirect, direction egress", ev)
	}
	if err := probeTCP(tp.a, dst); err == nil {
		t.Fatal("new connection passed a redirect without a proxy")
	}
	events.waitFor(t, "drop PROXY_UNAVAILABLE of a new connection", func(ev Event) bool {
		return ev.Kind == EventDrop && ev.Reason == DropProxyUnavailable && ev.Endpoint == uint32(tp.a.HostIfIndex) &&
			ev.Dst == dst && ev.Src != src
	})
}

// TestPrivilegedRecheckIdentityChange: the ipcache gives a tracked flow's
// peer another identity while the policy stays the same. The flow is
// re-checked with the new identity: cut when no entry allows that
// identity, kept when one does.
func TestPrivilegedRecheckIdentityChange(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	events := collectEvents(t, d)
	const idC policy.ID = 1003
	dst := netip.AddrPortFrom(tp.b.Addr, srv.tcpPort)
	bIngress := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: srv.tcpPort, To: srv.tcpPort}}, Verdict: policy.VerdictAllow},
	}}
	// as builds the plan with a's address in the ipcache as identity id.
	as := func(id policy.ID, extra ...policy.Entry) *policy.Plan {
		in := bIngress
		in.Entries = append(slices.Clone(in.Entries), extra...)
		p := tp.plan(policy.DirectionPlan{}, in)
		p.Endpoints[0].Identity = id
		p.IPCache[0].Identity = id
		return p
	}
	if err := d.Sync(as(tp.idA), tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)

	t.Run("another allowed identity keeps the flow", func(t *testing.T) {
		conn := establish(t, tp.a, dst)
		also := policy.Entry{L4Key: policy.L4Key{Identity: idC, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: srv.tcpPort, To: srv.tcpPort}}, Verdict: policy.VerdictAllow}
		if err := d.Sync(as(tp.idA, also), tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(as(idC, also), tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
		if err := echoOnce(conn, "after"); err != nil {
			t.Fatalf("flow of a peer whose new identity is allowed broke: %v", err)
		}
	})
	t.Run("a denied identity cuts the flow", func(t *testing.T) {
		if err := d.Sync(as(tp.idA), tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
		conn := establish(t, tp.a, dst)
		// Same entries for b (no revision bump), a's address now idC.
		if err := d.Sync(as(idC), tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
		if err := echoOnce(conn, "after"); err == nil {
			t.Fatal("tracked flow still passes after its peer's identity lost its allow")
		}
		events.waitFor(t, "drop after the identity change", func(ev Event) bool {
			return ev.Kind == EventDrop && ev.Reason == DropPolicyDenied && ev.Dst.Port() == srv.tcpPort && ev.SrcIdentity == idC
		})
	})
}
