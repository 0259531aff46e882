package datapath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// Helpers for the redirect tests: two endpoints in a scratch host netns (so
// the proxy routing rule never touches the real host), the datapath attached
// to their host veths, a transparent "proxy" listener in the scratch host
// netns and a real server inside pod b.

// rdTimeout bounds a connection attempt or exchange that must succeed;
// rdDropWait bounds one that must fail (a dropped SYN only times out).
const (
	rdTimeout  = 5 * time.Second
	rdDropWait = 700 * time.Millisecond
)

type redirectEnv struct {
	m        *EndpointManager
	d        *Datapath
	events   *eventLog
	a, b     policy.Endpoint
	la, lb   EndpointLink
	idA, idB policy.ID
}

func newRedirectEnv(t *testing.T, subnet byte) *redirectEnv {
	t.Helper()
	env := newEpTestEnv(t) // gates on testutil.Privileged
	m := env.manager(t)
	ctx := t.Context()

	e := &redirectEnv{
		m:   m,
		a:   epTestEndpoint("a", netip.AddrFrom4([4]byte{10, 202, subnet, 1}).String(), fmt.Sprintf("fd00:202:%d::1", subnet)),
		b:   epTestEndpoint("b", netip.AddrFrom4([4]byte{10, 202, subnet, 2}).String(), fmt.Sprintf("fd00:202:%d::2", subnet)),
		idA: 1101,
		idB: 1102,
	}
	var err error
	if e.la, err = m.Ensure(ctx, e.a); err != nil {
		t.Fatalf("Ensure(a): %v", err)
	}
	if e.lb, err = m.Ensure(ctx, e.b); err != nil {
		t.Fatalf("Ensure(b): %v", err)
	}
	testutil.Require(t, "proxy routing", m.EnsureProxyRouting(ctx))
	// Deleting the scratch netns removes the rule and route as well; remove
	// them explicitly anyway so a failure here is visible.
	t.Cleanup(func() {
		if err := m.RemoveProxyRouting(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	e.d = openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := e.d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	e.events = collectEvents(t, e.d)
	t.Cleanup(func() {
		if t.Failed() {
			e.events.mu.Lock()
			defer e.events.mu.Unlock()
			for _, ev := range e.events.events {
				t.Logf("datapath event: %+v", ev)
			}
		}
	})
	e.syncPlan(t, policy.DirectionPlan{}, policy.DirectionPlan{}, nil)
	// The veths live in the scratch netns: attach from inside it.
	err = m.DoHost(func() error {
		for _, idx := range []int{e.la.HostIfindex, e.lb.HostIfindex} {
			if err := e.d.Attach(idx); err != nil {
				return err
			}
		}
		return nil
	})
	testutil.Require(t, "attach tc programs", err)
	return e
}

func (e *redirectEnv) ifaces() map[EndpointKey]int {
	return map[EndpointKey]int{
		{Namespace: e.a.Namespace, Name: e.a.Name}: e.la.HostIfindex,
		{Namespace: e.b.Namespace, Name: e.b.Name}: e.lb.HostIfindex,
	}
}

// sync returns a function that writes a plan for a's egress and b's
// ingress (curried so that it takes redirectCase.plan's results directly).
func (e *redirectEnv) sync(t *testing.T) func(aEgress, bIngress policy.DirectionPlan, proxies ProxyPorts) {
	return func(aEgress, bIngress policy.DirectionPlan, proxies ProxyPorts) {
		t.Helper()
		e.syncPlan(t, aEgress, bIngress, proxies)
	}
}

func (e *redirectEnv) syncPlan(t *testing.T, aEgress, bIngress policy.DirectionPlan, proxies ProxyPorts) {
	t.Helper()
	plan := &policy.Plan{
		Endpoints: []policy.EndpointPlan{
			{Namespace: e.a.Namespace, Name: e.a.Name, Identity: e.idA, Addresses: []netip.Addr{e.a.IPv4, e.a.IPv6}, Egress: aEgress},
			{Namespace: e.b.Namespace, Name: e.b.Name, Identity: e.idB, Addresses: []netip.Addr{e.b.IPv4, e.b.IPv6}, Ingress: bIngress},
		},
		IPCache: []policy.IPCacheEntry{
			{Prefix: netip.PrefixFrom(e.a.IPv4, 32), Identity: e.idA},
			{Prefix: netip.PrefixFrom(e.b.IPv4, 32), Identity: e.idB},
			{Prefix: netip.PrefixFrom(e.a.IPv6, 128), Identity: e.idA},
			{Prefix: netip.PrefixFrom(e.b.IPv6, 128), Identity: e.idB},
		},
	}
	if err := e.d.Sync(plan, e.ifaces(), proxies); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

// tcpEntry is a one-port TCP entry.
func tcpEntry(id policy.ID, port uint16, v policy.Verdict) policy.Entry {
	e := policy.Entry{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: port, To: port}}, Verdict: v}
	if v == policy.VerdictRedirect {
		e.L7 = policy.L7HTTP
	}
	return e
}

// accepted describes one connection a test server accepted.
type accepted struct {
	local, remote netip.AddrPort
}

// echoListener accepts connections, reports each on conns and echoes what it
// reads until the peer closes.
type echoListener struct {
	ln    net.Listener
	port  uint16
	conns chan accepted
}

func serveEcho(t *testing.T, ln net.Listener) *echoListener {
	t.Helper()
	s := &echoListener{ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port), conns: make(chan accepted, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		var cwg sync.WaitGroup
		defer cwg.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case s.conns <- accepted{local: addrPortOf(c.LocalAddr()), remote: addrPortOf(c.RemoteAddr())}:
			default:
				t.Errorf("listener %v: too many connections", ln.Addr())
			}
			cwg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		s.close()
		wg.Wait()
	})
	return s
}

// close stops accepting; connections already accepted stay open.
func (s *echoListener) close() { _ = s.ln.Close() }

// next returns the next accepted connection or fails the test.
func (s *echoListener) next(t *testing.T, what string) accepted {
	t.Helper()
	select {
	case a := <-s.conns:
		return a
	case <-time.After(rdTimeout):
		t.Fatalf("%s: no connection accepted within %v", what, rdTimeout)
		return accepted{}
	}
}

// none fails the test if the listener accepted a connection.
func (s *echoListener) none(t *testing.T, what string) {
	t.Helper()
	select {
	case a := <-s.conns:
		t.Errorf("%s: unexpected connection %v -> %v", what, a.remote, a.local)
	default:
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// listenTransparent opens an IP_TRANSPARENT TCP listener on 0.0.0.0:0 in the
// scratch host netns, like the proxy's listeners.
func (e *redirectEnv) listenTransparent(t *testing.T) *echoListener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		})
		return errors.Join(err, serr)
	}}
	var ln net.Listener
	err := e.m.DoHost(func() (err error) {
		ln, err = lc.Listen(t.Context(), "tcp4", "0.0.0.0:0")
		return err
	})
	testutil.Require(t, "transparent listener (CAP_NET_ADMIN)", err)
	return serveEcho(t, ln)
}

// listenPod opens a TCP echo server on ep's IPv4 address in ep's netns.
func (e *redirectEnv) listenPod(t *testing.T, ep policy.Endpoint) *echoListener {
	t.Helper()
	return e.listenPodAddr(t, ep, ep.IPv4)
}

// listenPodAddr opens a TCP echo server on addr (one of ep's) in ep's netns.
func (e *redirectEnv) listenPodAddr(t *testing.T, ep policy.Endpoint, addr netip.Addr) *echoListener {
	t.Helper()
	var ln net.Listener
	err := e.m.Do(ep, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ep.Name, err)
	}
	return serveEcho(t, ln)
}

// dialPod connects from ep's netns to dst.
func (e *redirectEnv) dialPod(ep policy.Endpoint, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := e.m.Do(ep, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), timeout)
		return err
	})
	return c, err
}

// dialMarked connects from the scratch host netns to dst with SO_MARK mark,
// like the proxy's upstream connections.
func (e *redirectEnv) dialMarked(dst netip.AddrPort, mark uint32, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		return errors.Join(err, serr)
	}}
	var c net.Conn
	err := e.m.DoHost(func() (err error) {
		c, err = d.Dial("tcp4", dst.String())
		return err
	})
	return c, err
}

// roundTrip writes msg on c and waits for the echo.
func roundTrip(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(rdTimeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

// mustProxyMark returns the from-proxy mark of direction d for id.
func mustProxyMark(t *testing.T, d policy.Direction, id policy.ID) uint32 {
	t.Helper()
	mark, err := policy.ProxyMark(d, id)
	if err != nil {
		t.Fatalf("ProxyMark(%v, %d): %v", d, id, err)
	}
	return mark
}
