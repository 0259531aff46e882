package datapath

import (
	"net/netip"
	"testing"

	"github.com/moatnet/moat/policy"
)

// The redirect path end to end: the tc programs hand a flow to a transparent
// listener (the proxy), the proxy's upstream connection carries a from-proxy
// mark and reaches the real server, and a missing listener drops.

// redirectCase puts a redirect of a -> b:port on a's egress or b's ingress.
type redirectCase struct {
	name string
	dir  policy.Direction // the direction whose policy redirects
}

var redirectCases = []redirectCase{
	{name: "egress", dir: policy.Egress},
	{name: "ingress", dir: policy.Ingress},
}

// plan returns the direction plans and proxy ports of the case: the
// redirecting direction sends a's TCP to port to the proxy listening on
// proxyPort; with an egress redirect, b's ingress allows only a on port.
// extra entries are added to the redirecting direction.
func (rc redirectCase) plan(e *redirectEnv, port, proxyPort uint16, extra ...policy.Entry) (aEgress, bIngress policy.DirectionPlan, proxies ProxyPorts) {
	if rc.dir == policy.Egress {
		aEgress = policy.DirectionPlan{Enforced: true, Entries: append([]policy.Entry{tcpEntry(e.idB, port, policy.VerdictRedirect)}, extra...)}
		bIngress = policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{tcpEntry(e.idA, port, policy.VerdictAllow)}}
	} else {
		bIngress = policy.DirectionPlan{Enforced: true, Entries: append([]policy.Entry{tcpEntry(e.idA, port, policy.VerdictRedirect)}, extra...)}
	}
	return aEgress, bIngress, ProxyPorts{{Direction: rc.dir, L7: policy.L7HTTP}: proxyPort}
}

// ifindex returns the host veth whose program redirects in this case.
func (rc redirectCase) ifindex(e *redirectEnv) uint32 {
	if rc.dir == policy.Egress {
		return uint32(e.la.HostIfindex)
	}
	return uint32(e.lb.HostIfindex)
}

// connectViaProxy dials b:dst from a and checks that the proxy, not b,
// accepts it with the original destination as local address and a as peer.
func connectViaProxy(t *testing.T, e *redirectEnv, rc redirectCase, proxy, srv *echoListener, dst netip.AddrPort) {
	t.Helper()
	c, err := e.dialPod(e.a, dst, rdTimeout)
	if err != nil {
		t.Fatalf("dial %v from a: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	got := proxy.next(t, rc.name+" proxy")
	if want := addrPortOf(c.LocalAddr()); got.local != dst || got.remote != want {
		t.Errorf("proxy accepted %v -> %v, want %v -> %v (original destination)", got.remote, got.local, want, dst)
	}
	if err := roundTrip(c, "through the "+rc.name+" proxy"); err != nil {
		t.Fatalf("exchange through the proxy: %v", err)
	}
	srv.none(t, "b's server behind a redirect")
	ev := e.events.waitFor(t, "to-proxy", func(ev Event) bool {
		return ev.Kind == EventToProxy && ev.Endpoint == rc.ifindex(e) && ev.Dst == dst && ev.Src == got.remote
	})
	if ev.ProxyPort != proxy.port || ev.Direction != rc.dir || ev.SrcIdentity != e.idA || ev.DstIdentity != e.idB || ev.L7 != policy.L7HTTP {
		t.Errorf("to-proxy event = %+v, want proxy port %d, direction %v, identities %d -> %d, l7 http",
			ev, proxy.port, rc.dir, e.idA, e.idB)
	}
}

// upstreamReaches dials dst from the proxy's netns with mark and checks that
// b's real server accepts it (never the proxy) and echoes.
func upstreamReaches(t *testing.T, e *redirectEnv, mark uint32, proxy, srv *echoListener, dst netip.AddrPort) {
	t.Helper()
	up, err := e.dialMarked(dst, mark, rdTimeout)
	if err != nil {
		t.Fatalf("upstream dial %v with mark %#x: %v", dst, mark, err)
	}
	defer up.Close()
	got := srv.next(t, "b's server")
	if want := addrPortOf(up.LocalAddr()); got.remote != want || got.local != dst {
		t.Errorf("b's server accepted %v -> %v, want %v -> %v", got.remote, got.local, want, dst)
	}
	if err := roundTrip(up, "upstream"); err != nil {
		t.Fatalf("upstream exchange: %v", err)
	}
	proxy.none(t, "proxy, for its own upstream")
}

func TestPrivilegedRedirectEgress(t *testing.T) {
	e := newRedirectEnv(t, 1)
	rc := redirectCases[0]
	srv := e.listenPod(t, e.b)
	proxy := e.listenTransparent(t)
	dst := netip.AddrPortFrom(e.b.IPv4, srv.port)
	e.sync(t)(rc.plan(e, srv.port, proxy.port))

	connectViaProxy(t, e, rc, proxy, srv, dst)

	t.Run("upstream with the source identity reaches the server", func(t *testing.T) {
		upstreamReaches(t, e, mustProxyMark(t, policy.Egress, e.idA), proxy, srv, dst)
		ev := e.events.waitFor(t, "verdict of the upstream", func(ev Event) bool {
			return ev.Kind == EventVerdict && ev.Endpoint == uint32(e.lb.HostIfindex) && ev.Dst == dst && ev.FromProxy
		})
		if ev.SrcIdentity != e.idA || ev.Direction != policy.Ingress || ev.Verdict != policy.VerdictAllow {
			t.Errorf("upstream verdict event = %+v, want allow from identity %d at b's ingress", ev, e.idA)
		}
	})
	t.Run("upstream with another identity is dropped", func(t *testing.T) {
		const other policy.ID = 4242
		if up, err := e.dialMarked(dst, mustProxyMark(t, policy.Egress, other), rdDropWait); err == nil {
			up.Close()
			t.Fatalf("upstream with identity %d got through b's ingress policy", other)
		}
		ev := e.events.waitFor(t, "drop of the upstream", func(ev Event) bool {
			return ev.Kind == EventDrop && ev.Endpoint == uint32(e.lb.HostIfindex) && ev.Dst == dst && ev.FromProxy
		})
		if ev.Reason != DropPolicyDenied || ev.SrcIdentity != other || ev.Direction != policy.Ingress {
			t.Errorf("upstream drop event = %+v, want POLICY_DENIED from identity %d at b's ingress", ev, other)
		}
		srv.none(t, "b's server")
		proxy.none(t, "proxy")
	})
}

func TestPrivilegedRedirectIngress(t *testing.T) {
	e := newRedirectEnv(t, 2)
	rc := redirectCases[1]
	srv := e.listenPod(t, e.b)
	proxy := e.listenTransparent(t)
	dst := netip.AddrPortFrom(e.b.IPv4, srv.port)
	e.sync(t)(rc.plan(e, srv.port, proxy.port))

	connectViaProxy(t, e, rc, proxy, srv, dst)

	// The ingress proxy has applied b's ingress policy already; its upstream
	// must reach b whatever identity the mark carries (Envoy's ingress
	// cluster sends identity 0: see envoy/cluster.go).
	for _, tc := range []struct {
		name string
		id   policy.ID
	}{
		{name: "source identity", id: e.idA},
		{name: "unknown identity", id: policy.IDUnknown},
	} {
		t.Run("upstream with "+tc.name+" is not redirected again", func(t *testing.T) {
			upstreamReaches(t, e, mustProxyMark(t, policy.Ingress, tc.id), proxy, srv, dst)
		})
	}
}

// TestPrivilegedRedirectFailClosed closes the proxy listener: new
// connections must drop (PROXY_UNAVAILABLE), never reach b directly.
func TestPrivilegedRedirectFailClosed(t *testing.T) {
	for i, rc := range redirectCases {
		t.Run(rc.name, func(t *testing.T) {
			e := newRedirectEnv(t, byte(3+i))
			srv := e.listenPod(t, e.b)
			proxy := e.listenTransparent(t)
			dst := netip.AddrPortFrom(e.b.IPv4, srv.port)
			e.sync(t)(rc.plan(e, srv.port, proxy.port))
			connectViaProxy(t, e, rc, proxy, srv, dst)

			proxy.close()
			if c, err := e.dialPod(e.a, dst, rdDropWait); err == nil {
				c.Close()
				t.Fatalf("connection to %v got through without a proxy listener", dst)
			}
			ev := e.events.waitFor(t, "drop PROXY_UNAVAILABLE", func(ev Event) bool {
				return ev.Kind == EventDrop && ev.Reason == DropProxyUnavailable && ev.Dst == dst
			})
			if ev.Endpoint != rc.ifindex(e) || ev.Direction != rc.dir || ev.SrcIdentity != e.idA || ev.DstIdentity != e.idB {
				t.Errorf("drop event = %+v, want endpoint %d, direction %v, identities %d -> %d",
					ev, rc.ifindex(e), rc.dir, e.idA, e.idB)
			}
			srv.none(t, "b's server without a proxy")
		})
	}
}

// TestPrivilegedRedirectSurvivesSync keeps a redirected connection open
// across Syncs that keep the redirect: one that changes the redirecting
// direction's entries (revision bump, tracked flows re-checked) and one that
// changes nothing.
func TestPrivilegedRedirectSurvivesSync(t *testing.T) {
	for i, rc := range redirectCases {
		t.Run(rc.name, func(t *testing.T) {
			e := newRedirectEnv(t, byte(5+i))
			srv := e.listenPod(t, e.b)
			proxy := e.listenTransparent(t)
			dst := netip.AddrPortFrom(e.b.IPv4, srv.port)
			e.sync(t)(rc.plan(e, srv.port, proxy.port))

			c, err := e.dialPod(e.a, dst, rdTimeout)
			if err != nil {
				t.Fatalf("dial %v from a: %v", dst, err)
			}
			defer c.Close()
			proxy.next(t, "proxy")
			if err := roundTrip(c, "before"); err != nil {
				t.Fatalf("exchange before sync: %v", err)
			}
			other := tcpEntry(policy.IDAny, srv.port+1, policy.VerdictAllow)
			for _, step := range []struct {
				name  string
				extra []policy.Entry
			}{
				{name: "entries changed", extra: []policy.Entry{other}},
				{name: "nothing changed", extra: []policy.Entry{other}},
				{name: "entries changed back"},
			} {
				e.sync(t)(rc.plan(e, srv.port, proxy.port, step.extra...))
				if err := roundTrip(c, "after sync: "+step.name); err != nil {
					t.Fatalf("established connection after sync (%s): %v", step.name, err)
				}
			}
			srv.none(t, "b's server")
			// New connections still go to the proxy.
			connectViaProxy(t, e, rc, proxy, srv, dst)
		})
	}
}
