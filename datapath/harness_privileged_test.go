package datapath

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"

	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// Helpers for the privileged tests: a datapath with its own pin root, two
// pods, echo servers inside pods, and an event collector.

// testPinRoot returns a fresh pin root and removes it when the test ends,
// whatever happened: a test that fails between Open and registering its own
// cleanup (a load error, say) must not leave pins behind.
func testPinRoot(t *testing.T) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	root := "/sys/fs/bpf/moat-test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("remove pin root %s: %v", root, err)
		}
	})
	return root
}

func openTestDatapath(t *testing.T, root string) *Datapath {
	t.Helper()
	d, err := Open(Config{PinRoot: root, VerdictEvents: true, EventsPerSecond: 1_000_000, EventsBurst: 100_000})
	testutil.Require(t, "datapath load", err)
	return d
}

type twoPods struct {
	a, b     *testutil.Pod
	idA, idB policy.ID
}

func newTwoPods(t *testing.T) *twoPods {
	t.Helper()
	return &twoPods{
		a:   testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.1.1")}),
		b:   testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.2.1")}),
		idA: 1001,
		idB: 1002,
	}
}

func (tp *twoPods) ifaces() map[EndpointKey]int {
	return map[EndpointKey]int{
		{Namespace: "t", Name: "a"}: tp.a.HostIfIndex,
		{Namespace: "t", Name: "b"}: tp.b.HostIfIndex,
	}
}

// attach attaches d's programs to both pods' host veths.
func (tp *twoPods) attach(t *testing.T, d *Datapath) {
	t.Helper()
	for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex} {
		if err := d.Attach(idx); err != nil {
			t.Fatal(err)
		}
	}
}

// plan builds a Plan for pods a and b with the given direction plans.
func (tp *twoPods) plan(aEgress, bIngress policy.DirectionPlan) *policy.Plan {
	return &policy.Plan{
		Endpoints: []policy.EndpointPlan{
			{Namespace: "t", Name: "a", Identity: tp.idA, Addresses: []netip.Addr{tp.a.Addr}, Egress: aEgress},
			{Namespace: "t", Name: "b", Identity: tp.idB, Addresses: []netip.Addr{tp.b.Addr}, Ingress: bIngress},
		},
		IPCache: []policy.IPCacheEntry{
			{Prefix: netip.PrefixFrom(tp.a.Addr, 32), Identity: tp.idA},
			{Prefix: netip.PrefixFrom(tp.b.Addr, 32), Identity: tp.idB},
		},
	}
}

// echoServer serves TCP and UDP echo inside a pod on ephemeral ports.
type echoServer struct {
	tcp     net.Listener
	udp     net.PacketConn
	tcpPort uint16
	udpPort uint16
}

func startEcho(t *testing.T, pod *testutil.Pod) *echoServer {
	t.Helper()
	s := &echoServer{}
	err := pod.Do(func() error {
		var err error
		if s.tcp, err = net.Listen("tcp4", pod.Addr.String()+":0"); err != nil {
			return err
		}
		s.udp, err = net.ListenPacket("udp4", pod.Addr.String()+":0")
		return err
	})
	if err != nil {
		t.Fatalf("start echo servers: %v", err)
	}
	s.tcpPort = uint16(s.tcp.Addr().(*net.TCPAddr).Port)
	s.udpPort = uint16(s.udp.LocalAddr().(*net.UDPAddr).Port)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := s.tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := s.udp.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = s.udp.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		s.tcp.Close()
		s.udp.Close()
		wg.Wait()
	})
	return s
}

const probeTimeout = 700 * time.Millisecond

// dialTCP connects from pod to dst inside the pod's netns.
func dialTCP(pod *testutil.Pod, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := pod.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", dst.String(), probeTimeout)
		return err
	})
	return c, err
}

// establish opens a TCP flow from pod to dst, proves it with one echo and
// closes it when the test ends.
func establish(t *testing.T, pod *testutil.Pod, dst netip.AddrPort) net.Conn {
	t.Helper()
	conn, err := dialTCP(pod, dst)
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := echoOnce(conn, "before"); err != nil {
		t.Fatalf("echo on a new flow to %s: %v", dst, err)
	}
	return conn
}

func echoOnce(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
		return err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, []byte(msg)) {
		return fmt.Errorf("echo mismatch: %q", buf)
	}
	return nil
}

func probeTCP(pod *testutil.Pod, dst netip.AddrPort) error {
	c, err := dialTCP(pod, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOnce(c, "hello tcp")
}

func probeUDP(pod *testutil.Pod, dst netip.AddrPort) error {
	var c net.Conn
	if err := pod.Do(func() error {
		var err error
		c, err = net.Dial("udp4", dst.String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	return echoOnce(c, "hello udp")
}

func probeICMP(pod *testutil.Pod, dst netip.Addr) error {
	pg, err := pod.NewPinger()
	if err != nil {
		return err
	}
	defer pg.Close()
	return pg.Ping(dst, probeTimeout)
}

// eventLog collects datapath events.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

func collectEvents(t *testing.T, d *Datapath) *eventLog {
	t.Helper()
	l := &eventLog{notify: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.ReadEvents(ctx, func(ev Event) {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
			select {
			case l.notify <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("read events: %v", err)
		}
	})
	return l
}

// waitFor waits until an event satisfying match arrives.
func (l *eventLog) waitFor(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	seen := 0
	for {
		l.mu.Lock()
		for ; seen < len(l.events); seen++ {
			if match(l.events[seen]) {
				ev := l.events[seen]
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		select {
		case <-l.notify:
		case <-deadline.C:
			t.Fatalf("no %s event within 5s", what)
		}
	}
}
