package datapath

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// Privileged tests of Service translation: real sock_addr programs on the
// cgroup v2 root (where every socket of the host sits), scoped to the test
// pods' netns, with the tc programs enforcing the client's egress policy.

func openTestSockAddr(t *testing.T, root string) *SockAddr {
	t.Helper()
	sa, err := OpenSockAddr(SockAddrConfig{PinRoot: root})
	testutil.Require(t, "sock_addr load", err)
	return sa
}

// namedServer answers every TCP connection and UDP datagram with its name.
type namedServer struct {
	name      string
	tcp, udp  netip.AddrPort
	accepted  atomic.Int64
	datagrams atomic.Int64
}

func startNamed(t *testing.T, pod *testutil.Pod, name string) *namedServer {
	t.Helper()
	s := &namedServer{name: name}
	var ln net.Listener
	var pc net.PacketConn
	err := pod.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(pod.Addr, 0).String()); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(pod.Addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("start server %s: %v", name, err)
	}
	s.tcp = ln.Addr().(*net.TCPAddr).AddrPort()
	s.udp = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			_, _ = c.Write([]byte(name))
			c.Close()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.datagrams.Add(1)
			_, _ = pc.WriteTo([]byte(name), from)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
	return s
}

// whoTCP connects from pod to dst and returns the answering server's name
// and the connection's peer address as the application sees it.
func whoTCP(pod *testutil.Pod, dst netip.AddrPort) (string, netip.AddrPort, error) {
	var c net.Conn
	if err := pod.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", dst.String(), probeTimeout)
		return err
	}); err != nil {
		return "", netip.AddrPort{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	return string(b), c.RemoteAddr().(*net.TCPAddr).AddrPort(), nil
}

// whoTCPMapped is whoTCP for an IPv4 dst over an AF_INET6 socket (the
// address IPv4-mapped), with raw system calls: Go would dial IPv4.
func whoTCPMapped(pod *testutil.Pod, dst netip.AddrPort) (string, netip.AddrPort, error) {
	var name string
	var peer netip.AddrPort
	err := pod.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(probeTimeout.Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: netip.AddrFrom16(dst.Addr().As16()).As16(), Port: int(dst.Port())}); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		sa, err := unix.Getpeername(fd)
		if err != nil {
			return err
		}
		if s6, ok := sa.(*unix.SockaddrInet6); ok {
			peer = netip.AddrPortFrom(netip.AddrFrom16(s6.Addr).Unmap(), uint16(s6.Port))
		}
		buf := make([]byte, 16)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return err
		}
		name = string(buf[:n])
		return nil
	})
	return name, peer, err
}

// whoUDP sends one datagram from an unconnected socket in pod to dst and
// returns the reply and the address it came from.
func whoUDP(pod *testutil.Pod, dst netip.AddrPort) (string, netip.AddrPort, error) {
	var pc *net.UDPConn
	if err := pod.Do(func() error {
		var err error
		pc, err = net.ListenUDP("udp", nil)
		return err
	}); err != nil {
		return "", netip.AddrPort{}, err
	}
	defer pc.Close()
	_ = pc.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := pc.WriteToUDPAddrPort([]byte("who"), dst); err != nil {
		return "", netip.AddrPort{}, err
	}
	buf := make([]byte, 512)
	n, from, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

// whoUDPConnected does the same over a connected UDP socket.
func whoUDPConnected(pod *testutil.Pod, dst netip.AddrPort) (string, netip.AddrPort, error) {
	var c net.Conn
	if err := pod.Do(func() error {
		var err error
		c, err = net.Dial("udp", dst.String())
		return err
	}); err != nil {
		return "", netip.AddrPort{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.Write([]byte("who")); err != nil {
		return "", netip.AddrPort{}, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	return string(buf[:n]), c.RemoteAddr().(*net.UDPAddr).AddrPort(), nil
}

// svcRig is a client pod and two backend pods with different identities,
// tc programs on all three and Service translation scoped to the client.
type svcRig struct {
	d                  *Datapath
	sa                 *SockAddr
	client, a, b       *testutil.Pod
	srvA, srvB         *namedServer
	idClient, idA, idB policy.ID
	vip                netip.Addr
}

func newSvcRig(t *testing.T, v6 bool) *svcRig {
	t.Helper()
	addr := func(v4, v6s string) netip.Addr {
		if v6 {
			return netip.MustParseAddr(v6s)
		}
		return netip.MustParseAddr(v4)
	}
	r := &svcRig{
		client:   testutil.NewPod(t, testutil.PodOptions{Addr: addr("10.201.21.1", "fd00:201:21::1")}),
		a:        testutil.NewPod(t, testutil.PodOptions{Addr: addr("10.201.22.1", "fd00:201:22::1")}),
		b:        testutil.NewPod(t, testutil.PodOptions{Addr: addr("10.201.23.1", "fd00:201:23::1")}),
		idClient: 2101, idA: 2102, idB: 2103,
		vip: addr("10.96.201.10", "fd00:96:201::10"),
	}
	if v6 {
		for _, p := range []*testutil.Pod{r.client, r.a, r.b} {
			// Global IPv6 forwarding stays as it is: per-interface is enough.
			testutil.Require(t, "ipv6 force_forwarding (Linux 6.17+)",
				os.WriteFile("/proc/sys/net/ipv6/conf/"+p.HostIf+"/force_forwarding", []byte("1"), 0o644))
		}
	}
	r.srvA = startNamed(t, r.a, "A")
	r.srvB = startNamed(t, r.b, "B")
	root := testPinRoot(t)
	r.d = openTestDatapath(t, root)
	t.Cleanup(func() {
		if err := r.d.Cleanup(); err != nil {
			t.Errorf("datapath cleanup: %v", err)
		}
	})
	r.sa = openTestSockAddr(t, root)
	t.Cleanup(func() {
		if err := r.sa.Cleanup(); err != nil {
			t.Errorf("sock_addr cleanup: %v", err)
		}
	})
	r.syncPolicy(t, r.idA) // before attaching: an attached interface without config drops
	for _, p := range []*testutil.Pod{r.client, r.a, r.b} {
		if err := r.d.Attach(p.HostIfIndex); err != nil {
			t.Fatal(err)
		}
	}
	cookie, err := NetnsCookie(r.client.NsPath)
	testutil.Require(t, "netns cookie (SO_NETNS_COOKIE)", err)
	if err := r.sa.SetScope([]uint64{cookie}); err != nil {
		t.Fatal(err)
	}
	if err := r.sa.Attach(""); err != nil {
		t.Fatal(err)
	}
	return r
}

// syncPolicy lets the client's egress reach only the given identities.
func (r *svcRig) syncPolicy(t *testing.T, allowed ...policy.ID) {
	t.Helper()
	var entries []policy.Entry
	for _, id := range allowed {
		entries = append(entries, policy.Entry{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow})
	}
	bits := 32
	if r.client.Addr.Is6() {
		bits = 128
	}
	plan := &policy.Plan{}
	for _, ep := range []struct {
		name string
		pod  *testutil.Pod
		id   policy.ID
	}{{"client", r.client, r.idClient}, {"a", r.a, r.idA}, {"b", r.b, r.idB}} {
		p := policy.EndpointPlan{Namespace: "svc", Name: ep.name, Identity: ep.id, Addresses: []netip.Addr{ep.pod.Addr}}
		if ep.name == "client" {
			p.Egress = policy.DirectionPlan{Enforced: true, Entries: entries}
		}
		plan.Endpoints = append(plan.Endpoints, p)
		plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(ep.pod.Addr, bits), Identity: ep.id})
	}
	ifaces := map[EndpointKey]int{
		{Namespace: "svc", Name: "client"}: r.client.HostIfIndex,
		{Namespace: "svc", Name: "a"}:      r.a.HostIfIndex,
		{Namespace: "svc", Name: "b"}:      r.b.HostIfIndex,
	}
	if err := r.d.Sync(plan, ifaces, nil); err != nil {
		t.Fatalf("sync policy: %v", err)
	}
}

func (r *svcRig) tcpVIP() Frontend {
	return Frontend{Addr: r.vip, Port: 8080, Proto: policy.ProtoTCP}
}

func (r *svcRig) udpVIP() Frontend {
	return Frontend{Addr: r.vip, Port: 53, Proto: policy.ProtoUDP}
}

func (f Frontend) addrPort() netip.AddrPort { return netip.AddrPortFrom(f.Addr, f.Port) }

func (r *svcRig) setServices(t *testing.T, tcp, udp []*namedServer) {
	t.Helper()
	svcs := Services{r.tcpVIP(): nil, r.udpVIP(): nil}
	for _, s := range tcp {
		svcs[r.tcpVIP()] = append(svcs[r.tcpVIP()], s.tcp)
	}
	for _, s := range udp {
		svcs[r.udpVIP()] = append(svcs[r.udpVIP()], s.udp)
	}
	if err := r.sa.SetServices(svcs); err != nil {
		t.Fatalf("set services: %v", err)
	}
}

func (r *svcRig) stats(t *testing.T) SockAddrStats {
	t.Helper()
	st, err := r.sa.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (r *svcRig) egressDrops(t *testing.T) uint64 {
	t.Helper()
	c, err := r.d.EndpointCounters(r.client.HostIfIndex, policy.Egress)
	if err != nil {
		t.Fatal(err)
	}
	return c.DroppedPackets
}

// TestPrivilegedServicePolicyOnBackend: a client whose egress policy allows
// only backend A's identity reaches A through the VIP, sees the VIP as its
// peer, and is refused (dropped by its egress policy, counted) when B is
// the only backend. UDP (unconnected and connected) replies come from the
// VIP. IPv4 and IPv6.
func TestPrivilegedServicePolicyOnBackend(t *testing.T) {
	testutil.Privileged(t)
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4", true: "ipv6"}[v6], func(t *testing.T) {
			r := newSvcRig(t, v6)
			tcpVIP, udpVIP := r.tcpVIP().addrPort(), r.udpVIP().addrPort()

			r.setServices(t, []*namedServer{r.srvA}, []*namedServer{r.srvA})
			before := r.stats(t)
			name, peer, err := whoTCP(r.client, tcpVIP)
			if err != nil || name != "A" {
				t.Fatalf("tcp to VIP with backend A: got %q, %v; want A", name, err)
			}
			if peer != tcpVIP {
				t.Errorf("tcp peer as the app sees it (getpeername) = %s, want the VIP %s", peer, tcpVIP)
			}
			name, from, err := whoUDP(r.client, udpVIP)
			if err != nil || name != "A" {
				t.Fatalf("udp to VIP with backend A: got %q, %v; want A", name, err)
			}
			if from != udpVIP {
				t.Errorf("udp reply came from %s as the app sees it, want the VIP %s", from, udpVIP)
			}
			name, peer, err = whoUDPConnected(r.client, udpVIP)
			if err != nil || name != "A" {
				t.Fatalf("connected udp to VIP with backend A: got %q, %v; want A", name, err)
			}
			if peer != udpVIP {
				t.Errorf("connected udp peer = %s, want the VIP %s", peer, udpVIP)
			}
			if !v6 {
				// A dual-stack IPv6 socket connecting to ::ffff:<VIP>
				// (connect6, getpeername6 on an IPv4-mapped address).
				name, peer, err := whoTCPMapped(r.client, tcpVIP)
				if err != nil || name != "A" {
					t.Fatalf("dual-stack tcp to ::ffff:VIP: got %q, %v; want A", name, err)
				}
				if peer != tcpVIP {
					t.Errorf("dual-stack peer = %s, want the VIP %s", peer, tcpVIP)
				}
				before.Translated++
				before.Peer++
			}
			after := r.stats(t)
			if got := after.Translated - before.Translated; got != 3 {
				t.Errorf("translated %d calls, want 3 (tcp connect, udp sendmsg, udp connect)", got)
			}
			// recvfrom on the unconnected socket; the connected one reads
			// with read(2), which reports no address.
			if after.RevNAT-before.RevNAT < 1 || after.Peer-before.Peer < 2 {
				t.Errorf("reverse translation counters: %+v -> %+v; want at least 1 recvmsg and 2 getpeername", before, after)
			}

			// B only: the translated connect goes to B, whose identity the
			// client's egress policy does not allow.
			r.setServices(t, []*namedServer{r.srvB}, []*namedServer{r.srvB})
			drops := r.egressDrops(t)
			if name, _, err := whoTCP(r.client, tcpVIP); err == nil {
				t.Fatalf("tcp to VIP with backend B answered %q; want the client's egress policy to drop it", name)
			}
			if name, _, err := whoUDP(r.client, udpVIP); err == nil {
				t.Fatalf("udp to VIP with backend B answered %q; want a drop", name)
			}
			if got := r.egressDrops(t) - drops; got < 2 {
				t.Errorf("client egress drops grew by %d, want at least 2 (tcp SYN, udp datagram)", got)
			}
			if r.srvB.accepted.Load() != 0 || r.srvB.datagrams.Load() != 0 {
				t.Errorf("backend B saw %d connections and %d datagrams; want none", r.srvB.accepted.Load(), r.srvB.datagrams.Load())
			}
			// Straight to B is denied too, and to A allowed: the policy is
			// the same with or without the VIP.
			if _, _, err := whoTCP(r.client, r.srvB.tcp); err == nil {
				t.Error("tcp straight to B answered; want a drop")
			}
			if name, _, err := whoTCP(r.client, r.srvA.tcp); err != nil || name != "A" {
				t.Errorf("tcp straight to A: %q, %v", name, err)
			}

			// No backend: connect is refused at once.
			r.setServices(t, nil, nil)
			refused := r.stats(t).Refused
			_, _, err = whoTCP(r.client, tcpVIP)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("tcp to a VIP without backends: %v, want ECONNREFUSED", err)
			}
			if r.stats(t).Refused != refused+1 {
				t.Error("refused counter did not grow")
			}
		})
	}
}

// TestPrivilegedServiceScope: sockets outside the scope (another netns,
// where the VIP is a local address, and the host's own) are not
// translated, and a second
// SockAddr (another agent, another pin root) on the same cgroup neither
// replaces the first nor takes it away when it detaches.
func TestPrivilegedServiceScope(t *testing.T) {
	testutil.Privileged(t)
	r := newSvcRig(t, false)
	r.setServices(t, []*namedServer{r.srvA}, []*namedServer{r.srvA})
	other := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.24.1")})
	testutil.RunCmd(t, "ip", "-n", other.Name, "addr", "add", r.vip.String()+"/32", "dev", "lo")
	var ln net.Listener
	if err := other.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", r.tcpVIP().addrPort().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("local"))
			c.Close()
		}
	}()
	before := r.stats(t)
	if name, _, err := whoTCP(other, r.tcpVIP().addrPort()); err != nil || name != "local" {
		t.Fatalf("tcp to the VIP from a netns outside the scope: %q, %v; want the local listener", name, err)
	}
	if got := r.stats(t).Translated - before.Translated; got != 0 {
		t.Errorf("translated %d calls from outside the scope", got)
	}

	// The host's own sockets: a frontend on a loopback address leads to A
	// for a pod, but a host socket connecting to it meets no listener.
	var hostLn net.Listener
	hostLn, err := net.Listen("tcp", "127.0.0.1:0") // only to learn a free port
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(hostLn.Addr().(*net.TCPAddr).Port)
	hostLn.Close()
	loopVIP := Frontend{Addr: netip.MustParseAddr("127.0.0.1"), Port: port, Proto: policy.ProtoTCP}
	if err := r.sa.SetServices(Services{r.tcpVIP(): {r.srvA.tcp}, loopVIP: {r.srvA.tcp}}); err != nil {
		t.Fatal(err)
	}
	before = r.stats(t)
	c, err := net.DialTimeout("tcp", loopVIP.addrPort().String(), probeTimeout)
	if err == nil {
		c.Close()
		t.Fatalf("a host socket to %s connected; want it untranslated (refused: nothing listens)", loopVIP)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("host socket to %s: %v, want connection refused", loopVIP, err)
	}
	if got := r.stats(t).Translated - before.Translated; got != 0 {
		t.Errorf("translated %d calls of a host socket", got)
	}

	// A second agent on the same cgroup, scoped to the other netns.
	var cookie uint64
	sa2 := openTestSockAddr(t, testPinRoot(t))
	defer sa2.Cleanup()
	if err := sa2.Attach(""); err != nil {
		t.Fatal(err)
	}
	cookie, err = NetnsCookie(other.NsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := sa2.SetScope([]uint64{cookie}); err != nil {
		t.Fatal(err)
	}
	if name, _, err := whoTCP(r.client, r.tcpVIP().addrPort()); err != nil || name != "A" {
		t.Fatalf("first agent's translation with a second attached: %q, %v", name, err)
	}
	if err := sa2.Detach(""); err != nil {
		t.Fatal(err)
	}
	if name, _, err := whoTCP(r.client, r.tcpVIP().addrPort()); err != nil || name != "A" {
		t.Fatalf("first agent's translation after the second detached: %q, %v", name, err)
	}
}

// TestPrivilegedServiceRestart: closing the SockAddr (the agent stops)
// keeps translation (pinned links and maps); a new one adopts the table
// and has nothing to write for the same Services.
func TestPrivilegedServiceRestart(t *testing.T) {
	testutil.Privileged(t)
	r := newSvcRig(t, false)
	r.syncPolicy(t, r.idA, r.idB)
	r.setServices(t, []*namedServer{r.srvA, r.srvB}, []*namedServer{r.srvB})
	installed, err := r.sa.InstalledServices()
	if err != nil {
		t.Fatal(err)
	}
	root := r.sa.Config().PinRoot
	if err := r.sa.Close(); err != nil {
		t.Fatal(err)
	}
	if name, _, err := whoTCP(r.client, r.tcpVIP().addrPort()); err != nil || (name != "A" && name != "B") {
		t.Fatalf("tcp to VIP while no agent runs: %q, %v", name, err)
	}
	if name, from, err := whoUDP(r.client, r.udpVIP().addrPort()); err != nil || name != "B" || from != r.udpVIP().addrPort() {
		t.Fatalf("udp to VIP while no agent runs: %q from %s, %v", name, from, err)
	}
	sa := openTestSockAddr(t, root)
	r.sa = sa // the rig's cleanup removes the new one
	got, err := sa.InstalledServices()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(normalizeInstalled(got)) != fmt.Sprint(normalizeInstalled(installed)) {
		t.Fatalf("after restart the maps hold %v, want %v", got, installed)
	}
	want := Services{r.tcpVIP(): {r.srvA.tcp, r.srvB.tcp}, r.udpVIP(): {r.srvB.udp}}
	ops, _, _, err := planServices(sa.table, want, sa.nextID)
	if err != nil || len(ops) != 0 {
		t.Fatalf("the adopted table needs %d writes for the same services (%v); want none", len(ops), err)
	}
	if err := sa.Attach(""); err != nil { // swaps the programs in place
		t.Fatal(err)
	}
	if n := len(sa.Attached()); n != 1 {
		t.Errorf("attached to %d cgroups after adoption, want 1", n)
	}
	if name, _, err := whoTCP(r.client, r.tcpVIP().addrPort()); err != nil || (name != "A" && name != "B") {
		t.Fatalf("tcp to VIP after restart: %q, %v", name, err)
	}
}

func normalizeInstalled(s Services) map[string][]string {
	out := map[string][]string{}
	for f, bes := range s {
		var l []string
		for _, b := range bes {
			l = append(l, b.String())
		}
		slices.Sort(l)
		out[f.String()] = l
	}
	return out
}

// TestPrivilegedServiceUpdateUnderLoad: clients connect through the VIP in
// a loop while the backend set changes between {A,B}, {A} and {B}, always
// keeping one backend across each change. No connection fails, and no
// connection that started after a SetServices returned reaches a backend
// that neither that set nor a set being written meanwhile holds.
func TestPrivilegedServiceUpdateUnderLoad(t *testing.T) {
	testutil.Privileged(t)
	r := newSvcRig(t, false)
	r.syncPolicy(t, r.idA, r.idB)
	sets := [][]*namedServer{{r.srvA, r.srvB}}
	for range 10 {
		sets = append(sets, []*namedServer{r.srvA}, []*namedServer{r.srvA, r.srvB}, []*namedServer{r.srvB}, []*namedServer{r.srvA, r.srvB})
	}
	names := func(set []*namedServer) map[string]bool {
		out := map[string]bool{}
		for _, s := range set {
			out[s.name] = true
		}
		return out
	}
	r.setServices(t, sets[0], sets[0])
	var started, returned atomic.Int64 // index of the last set being written / written
	var stop atomic.Bool
	var done atomic.Int64 // connections finished
	// progress waits until the clients finished a few connections more:
	// each set carries load before it changes.
	progress := func() {
		want := done.Load() + 6
		deadline := time.Now().Add(5 * time.Second)
		for done.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("clients stalled at %d connections", done.Load())
			}
			time.Sleep(time.Millisecond) // polling a counter, with a deadline
		}
	}
	type result struct {
		from, to int64
		name     string
		err      error
	}
	results := make(chan result, 1<<16)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				from := returned.Load()
				name, _, err := whoTCP(r.client, r.tcpVIP().addrPort())
				results <- result{from: from, to: started.Load(), name: name, err: err}
				done.Add(1)
			}
		}()
	}
	for i := 1; i < len(sets); i++ {
		progress()
		started.Store(int64(i))
		r.setServices(t, sets[i], sets[i])
		returned.Store(int64(i))
	}
	progress()
	stop.Store(true)
	wg.Wait()
	close(results)
	n, perBackend := 0, map[string]int{}
	for res := range results {
		n++
		if res.err != nil {
			t.Errorf("connection failed while a backend stayed (sets %d..%d): %v", res.from, res.to, res.err)
			continue
		}
		allowed := map[string]bool{}
		for i := res.from; i <= res.to; i++ {
			for k := range names(sets[i]) {
				allowed[k] = true
			}
		}
		if !allowed[res.name] {
			t.Errorf("connection started after set %d was written reached %q; sets %d..%d hold %v", res.from, res.name, res.from, res.to, allowed)
		}
		perBackend[res.name]++
	}
	t.Logf("%d connections across %d backend sets: %v; stats %+v", n, len(sets), perBackend, r.stats(t))
	if n < len(sets) || perBackend["A"] == 0 || perBackend["B"] == 0 {
		t.Errorf("too little load to judge: %d connections, %v", n, perBackend)
	}
}
