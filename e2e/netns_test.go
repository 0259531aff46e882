package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
)

// peer is one end of probed traffic: an endpoint's netns, a netns the test
// made outside the endpoints file ("world"), or the host itself.
type peer struct {
	name  string     // for messages
	ref   string     // what `moat policy trace --from/--to` takes
	netns string     // netns path; "" is the host (the test process's netns)
	addr  netip.Addr // the address the peer sends from and listens on
}

// do runs fn with sockets it opens belonging to the peer's netns.
func (p peer) do(fn func() error) error {
	if p.netns == "" {
		// Goroutines that are not locked to a switched thread always run
		// in the process's own netns (testutil.InNetns restores before it
		// unlocks).
		return fn()
	}
	return testutil.InNetns(p.netns, fn)
}

// endpointPeer names an endpoint the agent created.
func endpointPeer(a *testAgent, name string, addr string) peer {
	return peer{name: name, ref: "default/" + name, netns: a.netnsPath("default", name), addr: netip.MustParseAddr(addr)}
}

// worldPeer creates a netns that is not an endpoint: a veth to the host with
// addr, a host route to it and a default route back, like a machine outside
// the cluster. It is removed with t.Cleanup.
func worldPeer(t *testing.T, name, addr, gateway string) peer {
	t.Helper()
	pod := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr(addr), Gateway: netip.MustParseAddr(gateway)})
	return peer{name: name, ref: addr, netns: pod.NsPath, addr: pod.Addr}
}

// hostPeer is the host netns; traffic it sends to a pod leaves from the
// endpoints' gateway address 169.254.42.1.
func hostPeer() peer {
	return peer{name: "host", ref: "169.254.42.1", addr: netip.MustParseAddr("169.254.42.1")}
}

// serveEcho runs TCP and UDP echo servers on 0.0.0.0 in the peer's netns on
// the given ports, closed with t.Cleanup.
func serveEcho(t *testing.T, p peer, tcpPorts, udpPorts []uint16) {
	t.Helper()
	var (
		lns   []net.Listener
		pcs   []net.PacketConn
		wg    sync.WaitGroup
		conns sync.Map
	)
	err := p.do(func() error {
		for _, port := range tcpPorts {
			ln, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(int(port)))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		for _, port := range udpPorts {
			pc, err := net.ListenPacket("udp4", "0.0.0.0:"+strconv.Itoa(int(port)))
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		for _, pc := range pcs {
			pc.Close()
		}
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Store(c, nil)
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer conns.Delete(c)
					defer c.Close()
					_, _ = io.Copy(c, c)
				}()
			}
		}()
	}
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}()
	}
}

// proto is the protocol of a probe, spelled as `moat policy trace --port`
// spells it.
type proto string

const (
	protoTCP  proto = "TCP"
	protoUDP  proto = "UDP"
	protoICMP proto = "ICMP"
)

// icmpEcho is the ICMP type of an echo request, the "port" of ICMP probes.
const icmpEcho = 8

// errNoAnswer is a probe that got no answer within its timeout: the
// signature of a packet dropped by policy.
var errNoAnswer = errors.New("no answer")

// probe sends real traffic from src to dst and reports whether it got
// through: nil when the echo came back, errNoAnswer when nothing came back
// in time (dropped), another error for anything unexpected (a refused
// connection means the packet passed but nothing listened).
func probe(src peer, dst netip.Addr, pr proto, port uint16, timeout time.Duration) error {
	switch pr {
	case protoTCP:
		return probeTCP(src, netip.AddrPortFrom(dst, port), timeout)
	case protoUDP:
		return probeUDP(src, netip.AddrPortFrom(dst, port), timeout)
	case protoICMP:
		return probeICMP(src, dst, timeout)
	}
	return fmt.Errorf("probe: unknown protocol %q", pr)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialTCP connects from src to dst; errNoAnswer when the handshake times out.
func dialTCP(src peer, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := src.do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", dst.String(), timeout)
		return err
	})
	if isTimeout(err) {
		return nil, errNoAnswer
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s -> %s: %w", src.name, dst, err)
	}
	return c, nil
}

func probeTCP(src peer, dst netip.AddrPort, timeout time.Duration) error {
	c, err := dialTCP(src, dst, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOnce(c, "moat e2e tcp", timeout)
}

func probeUDP(src peer, dst netip.AddrPort, timeout time.Duration) error {
	var c net.Conn
	if err := src.do(func() error {
		var err error
		c, err = net.Dial("udp4", dst.String())
		return err
	}); err != nil {
		return fmt.Errorf("open udp socket in %s: %w", src.name, err)
	}
	defer c.Close()
	return echoOnce(c, "moat e2e udp", timeout)
}

// echoOnce writes msg and expects it back; a timeout is errNoAnswer.
func echoOnce(c net.Conn, msg string, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		if isTimeout(err) {
			return errNoAnswer
		}
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(buf, []byte(msg)) {
		return fmt.Errorf("echo mismatch: %q", buf)
	}
	return nil
}

func probeICMP(src peer, dst netip.Addr, timeout time.Duration) error {
	pg, err := newPinger(src)
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := pg.Send(dst, 1); err != nil {
		return err
	}
	_, err = pg.Recv(dst, time.Now().Add(timeout))
	return noAnswer(err)
}

// newPinger opens an ICMP echo pinger in src's netns.
func newPinger(src peer) (*testutil.Pinger, error) {
	pg, err := testutil.OpenPinger(src.do)
	if err != nil {
		return nil, fmt.Errorf("pinger in %s: %w", src.name, err)
	}
	return pg, nil
}

// noAnswer maps the pinger's no-reply error onto errNoAnswer.
func noAnswer(err error) error {
	if errors.Is(err, testutil.ErrNoReply) {
		return errNoAnswer
	}
	return err
}

// isRefused reports a connection refused: the packet passed policy.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
