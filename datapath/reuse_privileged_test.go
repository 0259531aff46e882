package datapath

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedTupleReuse: a client that reconnects from the same port
// reuses a closed connection's tuple while its CT entry is still in its
// closing lifetime (clients with tcp_tw_reuse, or whenever the server
// closed first and holds the TIME_WAIT). The new connection's SYN must
// start a new flow: decided afresh and tracked with an established flow's
// lifetime. Before, it inherited the closed flow's entry, closing flag
// included, so an idle moment longer than the closing lifetime cut its
// replies where the return direction is default deny.
func TestPrivilegedTupleReuse(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	const closing = 2 * time.Second
	d, err := Open(Config{PinRoot: testPinRoot(t), CTLifetimeClosing: closing})
	testutil.Require(t, "datapath load", err)
	t.Cleanup(func() { _ = d.Cleanup() })

	srv := startCloseFirst(t, tp.b)
	dst := netip.AddrPortFrom(tp.b.Addr, srv.port)
	// Both pods default deny in the direction their replies take.
	deny := policy.DirectionPlan{Enforced: true}
	plan := tp.plan(allowTCP(tp.idB, srv.port), allowTCP(tp.idA, srv.port))
	plan.Endpoints[0].Ingress = deny
	plan.Endpoints[1].Egress = deny
	if err := d.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)

	const clientPort = 41234
	// The first connection: one echo, then the server closes first.
	first := dialFrom(t, tp.a, clientPort, dst)
	if err := echoOnce(first, "bye"); err != nil {
		t.Fatalf("echo on the first connection: %v", err)
	}
	_ = first.SetReadDeadline(time.Now().Add(probeTimeout))
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("first connection: want the server's FIN, got %v", err)
	}
	first.Close()

	// The same tuple again, well inside the closing lifetime.
	second := dialFrom(t, tp.a, clientPort, dst)
	defer second.Close()
	if err := echoOnce(second, "second"); err != nil {
		t.Fatalf("echo on the reconnection: %v", err)
	}
	// Idle for longer than the closing lifetime (plus a CT tick).
	time.Sleep(closing + 2*time.Second)
	if err := echoOnce(second, "after idle"); err != nil {
		t.Fatalf("the reconnection lost its replies after %v idle (its entry kept the closed flow's lifetime): %v",
			closing+2*time.Second, err)
	}
}

// TestPrivilegedTupleReusePolicyChange: the closing entry of an allowed
// flow grants nothing to a reconnection from the same port. Its SYN is
// decided afresh, so after the policy or the ipcache stops allowing it, it
// is dropped, and once allowed again it passes.
func TestPrivilegedTupleReusePolicyChange(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	events := collectEvents(t, d)
	srv := startCloseFirst(t, tp.b)
	dst := netip.AddrPortFrom(tp.b.Addr, srv.port)
	allowed := tp.plan(allowTCP(tp.idB, srv.port), allowTCP(tp.idA, srv.port))
	sync := func(p *policy.Plan) {
		t.Helper()
		if err := d.Sync(p, tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
	}
	sync(allowed)
	tp.attach(t, d)

	const clientPort = 41235
	// connectClose connects from clientPort, says bye and waits for the
	// server's FIN: the tuple's entries are left closing.
	connectClose := func(what string) {
		t.Helper()
		c := dialFrom(t, tp.a, clientPort, dst)
		defer c.Close()
		if err := echoOnce(c, "bye"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(probeTimeout))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: want the server's FIN, got %v", what, err)
		}
	}
	// refused checks that a reconnection from clientPort is dropped.
	refused := func(what string) {
		t.Helper()
		c, err := dialFromOnce(tp.a, clientPort, dst)
		if err == nil {
			c.Close()
			t.Fatalf("%s: the reconnection got through", what)
		}
		events.waitFor(t, what+" drop", func(ev Event) bool {
			return ev.Kind == EventDrop && ev.Src.Port() == clientPort && ev.Dst == dst
		})
	}

	connectClose("first connection")
	connectClose("reconnection under the same policy")
	events.waitFor(t, "verdict of the reopened flow", func(ev Event) bool {
		return ev.Kind == EventVerdict && ev.Src.Port() == clientPort && ev.Dst == dst && ev.Direction == policy.Ingress
	})

	// b's ingress no longer allows a.
	sync(tp.plan(allowTCP(tp.idB, srv.port), allowTCP(tp.idA+100, srv.port)))
	refused("reconnection after the policy stopped allowing it")
	sync(allowed)
	connectClose("reconnection once allowed again")

	// a's address now belongs to another identity, which b does not allow.
	moved := tp.plan(allowTCP(tp.idB, srv.port), allowTCP(tp.idA, srv.port))
	moved.IPCache[0].Identity = tp.idA + 100
	sync(moved)
	refused("reconnection after the ipcache gave a another identity")
}

// dialFromOnce is dialFrom without retries or fatal errors.
func dialFromOnce(pod *testutil.Pod, port uint16, dst netip.AddrPort) (net.Conn, error) {
	dialer := net.Dialer{
		Timeout:   probeTimeout,
		LocalAddr: &net.TCPAddr{IP: pod.Addr.AsSlice(), Port: int(port)},
		Control:   reuseAddr,
	}
	var c net.Conn
	err := pod.Do(func() error {
		var derr error
		c, derr = dialer.Dial("tcp4", dst.String())
		return derr
	})
	return c, err
}

// reuseAddr sets SO_REUSEADDR, so that a client may bind the port of a
// connection that is still closing.
func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// closeFirstServer echoes what it reads and closes the connection after
// echoing "bye", so that the server side holds the TIME_WAIT and the client
// may reuse its port.
type closeFirstServer struct{ port uint16 }

func startCloseFirst(t *testing.T, pod *testutil.Pod) *closeFirstServer {
	t.Helper()
	var l net.Listener
	if err := pod.Do(func() error {
		var err error
		l, err = net.Listen("tcp4", pod.Addr.String()+":0")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", pod.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
					if string(buf[:n]) == "bye" {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return &closeFirstServer{port: uint16(l.Addr().(*net.TCPAddr).Port)}
}

// dialFrom connects from pod's fixed port to dst, retrying while the
// tuple's previous socket is still closing on the client side.
func dialFrom(t *testing.T, pod *testutil.Pod, port uint16, dst netip.AddrPort) net.Conn {
	t.Helper()
	dialer := net.Dialer{
		Timeout:   probeTimeout,
		LocalAddr: &net.TCPAddr{IP: pod.Addr.AsSlice(), Port: int(port)},
		Control:   reuseAddr,
	}
	var c net.Conn
	var err error
	for try := 0; try < 20; try++ {
		err = pod.Do(func() error {
			var derr error
			c, derr = dialer.Dial("tcp4", dst.String())
			return derr
		})
		if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dial %s from port %d: %v", dst, port, err)
	}
	return c
}
