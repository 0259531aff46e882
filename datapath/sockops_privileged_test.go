package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/moatnet/moat/internal/testutil"
)

// sockopsHelperEnv makes the test binary act as a tiny TCP client:
// "<mode> <addr>". The privileged tests run it in a test cgroup, so that
// only its sockets are watched.
const sockopsHelperEnv = "MOAT_SOCKOPS_HELPER"

// runSockopsHelper is not a test: it is the client process of
// TestPrivilegedSockOps, started with sockopsHelperEnv set, and TestMain
// dispatches to it before any test runs. Modes:
//
//	echo   dial, write "ping", read it back, close
//	dial   dial with a 3s timeout, then exit
//	read   dial, read until EOF or error
//	hold   dial, print "connected", wait for a line on stdin, write 64 KiB,
//	       read until EOF or error
//	serve  listen on addr, print the address, echo 4 bytes of one
//	       connection, close
func runSockopsHelper(arg string) int {
	mode, addr, _ := strings.Cut(arg, " ")
	if err := sockopsHelper(mode, addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func sockopsHelper(mode, addr string) error {
	if mode == "serve" {
		return sockopsServe(addr)
	}
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if mode == "dial" {
		if err == nil {
			c.Close()
		}
		return nil
	}
	if mode == "read" && errors.Is(err, syscall.ECONNRESET) {
		return nil // the reset came before connect returned
	}
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	switch mode {
	case "echo":
		if _, err := c.Write([]byte("ping")); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("read echo: %w", err)
		}
		return nil
	case "read":
		_, _ = io.Copy(io.Discard, c)
		return nil
	case "hold":
		fmt.Println("connected")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		if _, err := c.Write(make([]byte, 64<<10)); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_, _ = io.Copy(io.Discard, c)
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func sockopsServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	fmt.Println(ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if _, err := c.Write(buf); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// sockopsTestCgroup creates a cgroup v2 directory for the test and removes it at
// cleanup (after the processes in it have exited).
func sockopsTestCgroup(t *testing.T) (path string, fd int) {
	t.Helper()
	root := DefaultCgroupRoot()
	_, err := cgroupInode(root)
	testutil.Require(t, "cgroup v2 file system", err)
	path = filepath.Join(root, "moat-t-"+filepath.Base(testPinRoot(t)))
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	t.Cleanup(func() {
		f.Close()
		if err := os.Remove(path); err != nil {
			t.Errorf("remove cgroup %s: %v", path, err)
		}
	})
	return path, int(f.Fd())
}

// sockopsClient is a helper process in the test cgroup.
type sockopsClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	done   chan error
}

func startSockopsClient(t *testing.T, cgroupFD int, mode string, addr netip.AddrPort) *sockopsClient {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(os.Environ(), sockopsHelperEnv+"="+mode+" "+addr.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("stdin pipe: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper in cgroup: %v", err)
	}
	c := &sockopsClient{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout), done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

// wait waits for the helper to exit and fails the test when it failed.
func (c *sockopsClient) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			t.Fatalf("helper client: %v", err)
		}
	case <-t.Context().Done():
		t.Fatal("helper client did not exit")
	case <-time.After(30 * time.Second):
		t.Fatal("helper client did not exit within 30s")
	}
}

type tcpEventLog struct {
	mu     sync.Mutex
	events []TCPEvent
	change chan struct{}
}

func collectTCPEvents(t *testing.T, s *SockOps) *tcpEventLog {
	l := &tcpEventLog{change: make(chan struct{}, 1)}
	ctx := t.Context()
	done := make(chan error, 1)
	go func() {
		done <- s.ReadEvents(ctx, func(ev TCPEvent) {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
			select {
			case l.change <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("read tcp events: %v", err)
		}
	})
	return l
}

// waitFor returns the first event that matches, failing after 20s.
func (l *tcpEventLog) waitFor(t *testing.T, what string, match func(TCPEvent) bool) TCPEvent {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if match(ev) {
				l.mu.Unlock()
				return ev
			}
		}
		seen := fmt.Sprint(l.events)
		l.mu.Unlock()
		select {
		case <-l.change:
		case <-deadline:
			t.Fatalf("no %s event within 20s; seen: %s", what, seen)
		case <-t.Context().Done():
			t.Fatalf("no %s event: %v", what, t.Context().Err())
		}
	}
}

func sockopsListen(t *testing.T, pod *testutil.Pod, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}
	var err error
	if pod != nil {
		err = pod.Do(listen)
	} else {
		err = listen()
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func sockopsAddrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

// sockopsAccept accepts one connection in the background; cleanup closes
// the listener and a connection the test did not take.
func sockopsAccept(t *testing.T, ln net.Listener) <-chan *net.TCPConn {
	ch := make(chan *net.TCPConn, 1)
	go func() {
		defer close(ch)
		if c, err := ln.Accept(); err == nil {
			ch <- c.(*net.TCPConn)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range ch {
			c.Close()
		}
	})
	return ch
}

func sockopsRecvConn(t *testing.T, ch <-chan *net.TCPConn) *net.TCPConn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept failed")
		}
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no connection within 20s")
	}
	return nil
}

func TestPrivilegedSockOps(t *testing.T) {
	testutil.Privileged(t)
	root := testPinRoot(t)
	cg, cgFD := sockopsTestCgroup(t)
	s, err := OpenSockOps(SockOpsConfig{
		PinRoot: root, Cgroup: cg, EventsPerSecond: 1_000_000, EventsBurst: 100_000,
		SYNTimeout: 500 * time.Millisecond, RTTInterval: time.Nanosecond, RetransInterval: time.Nanosecond,
	})
	testutil.Require(t, "sockops load", err)
	t.Cleanup(func() {
		if err := s.Cleanup(); err != nil {
			t.Errorf("cleanup sockops: %v", err)
		}
		_ = os.RemoveAll(root)
	})
	testutil.Require(t, "sockops cgroup attach", s.Attach(""))
	events := collectTCPEvents(t, s)

	t.Run("established-rtt-closed", func(t *testing.T) {
		ln := sockopsListen(t, nil, "127.0.0.1:0")
		srv := sockopsAddrPort(ln.Addr())
		conns := sockopsAccept(t, ln)
		c := startSockopsClient(t, cgFD, "echo", srv)
		conn := sockopsRecvConn(t, conns)
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil {
			t.Fatalf("server read: %v", err)
		}
		if _, err := conn.Write(buf); err != nil {
			t.Fatalf("server write: %v", err)
		}
		c.wait(t)
		conn.Close()
		est := events.waitFor(t, "established", func(e TCPEvent) bool { return e.Kind == TCPEstablished && e.Remote == srv })
		if !est.Active || est.Local.Addr() != srv.Addr() || est.Local.Port() == 0 || est.Cookie == 0 {
			t.Errorf("established event: %+v", est)
		}
		rtt := events.waitFor(t, "rtt", func(e TCPEvent) bool { return e.Kind == TCPRTT && e.Remote == srv })
		if rtt.RTT <= 0 || rtt.SRTT <= 0 || rtt.NewState != TCPStateEstablished || rtt.Cookie != est.Cookie {
			t.Errorf("rtt event: %+v", rtt)
		}
		if est.SRTT <= 0 {
			t.Errorf("established event without handshake RTT: %+v", est)
		}
		closed := events.waitFor(t, "closed", func(e TCPEvent) bool { return e.Kind == TCPClosed && e.Remote == srv })
		if closed.BytesAcked < 4 || closed.BytesReceived < 4 || closed.Duration <= 0 || closed.NewState != TCPStateClose {
			t.Errorf("closed event: %+v", closed)
		}
	})

	t.Run("passive", func(t *testing.T) {
		c := startSockopsClient(t, cgFD, "serve", netip.MustParseAddrPort("127.0.0.1:0"))
		line, err := c.stdout.ReadString('\n')
		if err != nil {
			t.Fatalf("helper address: %v", err)
		}
		srv, err := netip.ParseAddrPort(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("helper address %q: %v", line, err)
		}
		conn, err := net.Dial("tcp", srv.String())
		if err != nil {
			t.Fatalf("dial helper: %v", err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("pong")); err != nil {
			t.Fatalf("write: %v", err)
		}
		if _, err := io.ReadFull(conn, make([]byte, 4)); err != nil {
			t.Fatalf("read echo: %v", err)
		}
		c.wait(t)
		client := sockopsAddrPort(conn.LocalAddr())
		est := events.waitFor(t, "passive established", func(e TCPEvent) bool { return e.Kind == TCPEstablished && e.Local == srv })
		if est.Active || est.Remote != client {
			t.Errorf("passive established event: %+v (client %v)", est, client)
		}
		events.waitFor(t, "passive closed", func(e TCPEvent) bool {
			return (e.Kind == TCPClosed || e.Kind == TCPReset) && e.Local == srv && e.Remote == client
		})
	})

	t.Run("reset", func(t *testing.T) {
		ln := sockopsListen(t, nil, "127.0.0.1:0")
		srv := sockopsAddrPort(ln.Addr())
		conns := sockopsAccept(t, ln)
		c := startSockopsClient(t, cgFD, "read", srv)
		conn := sockopsRecvConn(t, conns)
		if err := conn.SetLinger(0); err != nil {
			t.Fatalf("set linger: %v", err)
		}
		conn.Close() // RST
		c.wait(t)
		ev := events.waitFor(t, "reset", func(e TCPEvent) bool { return e.Kind == TCPReset && e.Remote == srv })
		if ev.OldState != TCPStateEstablished || ev.NewState != TCPStateClose {
			t.Errorf("reset event: %+v", ev)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ln := sockopsListen(t, nil, "127.0.0.1:0")
		srv := sockopsAddrPort(ln.Addr())
		ln.Close() // nothing listens: the SYN gets an RST
		c := startSockopsClient(t, cgFD, "dial", srv)
		c.wait(t)
		events.waitFor(t, "refused", func(e TCPEvent) bool { return e.Kind == TCPRefused && e.Remote == srv })
	})

	t.Run("syn-timeout", func(t *testing.T) {
		pod := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.209.1.1")})
		// Without a route back, the pod cannot answer: SYNs go unanswered.
		testutil.RunCmd(t, "ip", "-n", pod.Name, "route", "del", "default")
		dst := netip.AddrPortFrom(pod.Addr, 8080)
		c := startSockopsClient(t, cgFD, "dial", dst)
		ev := events.waitFor(t, "syn-timeout", func(e TCPEvent) bool { return e.Kind == TCPSYNTimeout && e.Remote == dst })
		if ev.Duration < 500*time.Millisecond || ev.RTOs == 0 {
			t.Errorf("syn-timeout event: %+v", ev)
		}
		c.wait(t)
	})

	t.Run("retransmit", func(t *testing.T) {
		_, err := exec.LookPath("nft")
		testutil.Require(t, "nft", err)
		pod := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.209.2.1")})
		ln := sockopsListen(t, pod, netip.AddrPortFrom(pod.Addr, 0).String())
		srv := sockopsAddrPort(ln.Addr())
		conns := sockopsAccept(t, ln)
		c := startSockopsClient(t, cgFD, "hold", srv)
		if line, err := c.stdout.ReadString('\n'); err != nil || line != "connected\n" {
			t.Fatalf("helper: %q, %v", line, err)
		}
		conn := sockopsRecvConn(t, conns)
		// Eat the client's data at the pod: it has to retransmit.
		testutil.RunCmd(t, "ip", "netns", "exec", pod.Name, "nft", "add table inet moatt; "+
			"add chain inet moatt in { type filter hook input priority 0; policy accept; }; "+
			fmt.Sprintf("add rule inet moatt in tcp dport %d drop", srv.Port()))
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatalf("signal helper: %v", err)
		}
		ev := events.waitFor(t, "retransmit", func(e TCPEvent) bool { return e.Kind == TCPRetransmit && e.Remote == srv })
		if ev.TotalRetrans == 0 {
			t.Errorf("retransmit event: %+v", ev)
		}
		testutil.RunCmd(t, "ip", "netns", "exec", pod.Name, "nft", "delete table inet moatt")
		if _, err := io.CopyN(io.Discard, conn, 64<<10); err != nil {
			t.Fatalf("server read after loss: %v", err)
		}
		conn.Close()
		c.wait(t)
	})

	t.Run("restart-adopts-link", func(t *testing.T) {
		ino, err := cgroupInode(cg)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := OpenSockOps(SockOpsConfig{PinRoot: root, Cgroup: cg})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s2.Close()
		if got := s2.Attached(); len(got) != 1 || got[0] != ino {
			t.Errorf("adopted %v, want [%d]", got, ino)
		}
		if _, err := os.Stat(filepath.Join(root, "links", sockopsPinName(ino))); err != nil {
			t.Errorf("pinned link: %v", err)
		}
	})
}

func TestPrivilegedSockOpsCleanup(t *testing.T) {
	testutil.Privileged(t)
	root := testPinRoot(t)
	cg, _ := sockopsTestCgroup(t)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	s, err := OpenSockOps(SockOpsConfig{PinRoot: root, Cgroup: cg})
	testutil.Require(t, "sockops load", err)
	testutil.Require(t, "sockops cgroup attach", s.Attach(cg))
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := CleanupSockOps(SockOpsConfig{PinRoot: root}); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "links"))
	if err != nil {
		t.Fatalf("read links: %v", err)
	}
	if len(entries) != 0 {
		t.Errorf("links left: %v", entries)
	}
	for _, m := range []string{"moat_tcp_events", "moat_tcp_stats", "moat_tcp_sk"} {
		if _, err := os.Stat(filepath.Join(root, m)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("map pin %s left: %v", m, err)
		}
	}
	// The cgroup has no sock_ops program left.
	out := testutil.RunCmd(t, "bpftool", "cgroup", "show", cg)
	if strings.Contains(out, "sock_ops") {
		t.Errorf("sock_ops still attached:\n%s", out)
	}
}

func TestPrivilegedSockOpsRateLimit(t *testing.T) {
	testutil.Privileged(t)
	root := testPinRoot(t)
	cg, cgFD := sockopsTestCgroup(t)
	// One event per CPU per second, bucket of one: a connection's
	// established, RTT and closed events cannot all pass.
	s, err := OpenSockOps(SockOpsConfig{PinRoot: root, Cgroup: cg, EventsPerSecond: 1, EventsBurst: 1, RTTInterval: time.Nanosecond})
	testutil.Require(t, "sockops load", err)
	t.Cleanup(func() {
		if err := s.Cleanup(); err != nil {
			t.Errorf("cleanup sockops: %v", err)
		}
		_ = os.RemoveAll(root)
	})
	testutil.Require(t, "sockops cgroup attach", s.Attach(cg))
	ln := sockopsListen(t, nil, "127.0.0.1:0")
	conns := sockopsAccept(t, ln)
	c := startSockopsClient(t, cgFD, "echo", sockopsAddrPort(ln.Addr()))
	conn := sockopsRecvConn(t, conns)
	if _, err := io.CopyN(conn, conn, 4); err != nil {
		t.Fatalf("server echo: %v", err)
	}
	c.wait(t)
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.EventStats()
		if err != nil {
			t.Fatalf("event stats: %v", err)
		}
		if st.RateLimited > 0 && st.Emitted > 0 {
			if n, err := ebpf.PossibleCPU(); err != nil || st.Emitted > uint64(n) {
				t.Errorf("emitted %d events, want at most one per CPU (%+v)", st.Emitted, st)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rate limiting within 10s: %+v", st)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
