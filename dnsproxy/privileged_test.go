package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// privileged_test.go: the transparent path for real, in network
// namespaces. Namespace A holds the client (10.1.0.2) and the proxy; B holds
// the DNS server (10.97.0.2:53). In A, a policy routing rule sends the
// client's packets to a "local 0/0 dev lo" table (what the datapath's
// to-proxy mark does in production), so queries addressed to 10.97.0.2:53
// land on the proxy's IP_TRANSPARENT listeners; and A reaches B only with
// a from-egress-proxy mark (fwmark 0xb00/0xf00 → a table with the route to
// B), so an answer from B proves the upstream socket carried the mark.
// The proxy has to run with all its threads in A, so the test re-executes
// its own binary there (childEnv) and the child runs the checks.

const childEnv = "MOAT_DNSPROXY_TRANSPARENT_CHILD"

// rounds is how many allowed and denied queries the child sends per
// transport, back to back.
const rounds = 10

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := transparentChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		fmt.Println("child: ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestPrivilegedTransparentProxy(t *testing.T) {
	testutil.Privileged(t)
	_, err := exec.LookPath("ip")
	testutil.Require(t, "iproute2 (ip)", err)
	sfx := fmt.Sprintf("%d", os.Getpid()%100000)
	nsA, nsB := "moat-dnsA-"+sfx, "moat-dnsB-"+sfx
	run := func(args ...string) { testutil.RunCmd(t, "ip", args...) }
	run("netns", "add", nsA)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsA).Run() })
	run("netns", "add", nsB)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsB).Run() })
	run("-n", nsA, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", nsB)
	for _, c := range [][]string{
		{"-n", nsA, "link", "set", "lo", "up"},
		{"-n", nsA, "addr", "add", "10.1.0.2/32", "dev", "lo"},
		{"-n", nsA, "addr", "add", "10.97.0.1/32", "dev", "a0"},
		{"-n", nsA, "link", "set", "a0", "up"},
		{"-n", nsA, "route", "add", "10.97.0.2/32", "dev", "a0", "table", "200"},
		{"-n", nsA, "rule", "add", "fwmark", "0xb00/0xf00", "lookup", "200", "pref", "90"},
		{"-n", nsA, "rule", "add", "from", "10.1.0.2", "lookup", "100", "pref", "100"},
		{"-n", nsA, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"},
		{"-n", nsB, "link", "set", "lo", "up"},
		{"-n", nsB, "addr", "add", "10.97.0.2/32", "dev", "b0"},
		{"-n", nsB, "link", "set", "b0", "up"},
		{"-n", nsB, "route", "add", "10.97.0.1/32", "dev", "b0"},
	} {
		run(c...)
	}
	testutil.RunCmd(t, "ip", "netns", "exec", nsA, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.a0.rp_filter=0", "net.ipv4.conf.lo.rp_filter=0")

	// The upstream: a miekg/dns server in B.
	u := &upstream{zone: map[string][]string{"www.allowed.test.": {"192.0.2.10"}}}
	var pc net.PacketConn
	var ln net.Listener
	if err := testutil.InNetns("/var/run/netns/"+nsB, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", "10.97.0.2:53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "10.97.0.2:53")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", nsB, err)
	}
	var started sync.WaitGroup
	started.Add(2)
	su := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(u.serve), NotifyStartedFunc: started.Done}
	st := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(u.serve), NotifyStartedFunc: started.Done}
	go func() { _ = su.ActivateAndServe() }()
	go func() { _ = st.ActivateAndServe() }()
	started.Wait()
	t.Cleanup(func() { _ = su.Shutdown(); _ = st.Shutdown() })

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nsA, os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child output:\n%s", out)
	if err != nil || !strings.Contains(string(out), "child: ok") {
		t.Fatalf("child in %s failed: %v", nsA, err)
	}
	// The upstream saw the proxy (10.97.0.1), never the client, over UDP
	// and TCP, and only for the allowed name.
	qs := u.queries()
	if len(qs) != 2*rounds {
		t.Fatalf("upstream saw %d queries, want %d (UDP, then TCP)", len(qs), 2*rounds)
	}
	for _, q := range qs {
		if q.remote.Addr() != netip.MustParseAddr("10.97.0.1") || q.msg.Question[0].Name != "www.allowed.test." {
			t.Errorf("upstream saw %s from %s, want www.allowed.test. from the proxy 10.97.0.1", q.msg.Question[0].Name, q.remote)
		}
	}
	for i, q := range qs {
		if q.tcp != (i >= rounds) {
			t.Errorf("upstream query %d: tcp=%v, want %d UDP then %d TCP", i, q.tcp, rounds, rounds)
		}
	}
}

// transparentChild runs in namespace A.
func transparentChild() error {
	client := netip.MustParseAddr("10.1.0.2")
	server := netip.MustParseAddrPort("10.97.0.2:53")
	wantMark, err := policy.ProxyMark(policy.Egress, testClientID)
	if err != nil {
		return err
	}
	// Positive control of the topology: without the mark, B is
	// unreachable from A.
	if c, err := net.Dial("udp4", server.String()); err == nil {
		_, err = c.Write([]byte("x"))
		c.Close()
		if !errors.Is(err, unix.ENETUNREACH) {
			return fmt.Errorf("unmarked send to %s: %v, want ENETUNREACH (the fwmark rule is the only way to B)", server, err)
		}
	} else if !errors.Is(err, unix.ENETUNREACH) {
		return fmt.Errorf("unmarked dial to %s: %v, want ENETUNREACH", server, err)
	}
	var mu sync.Mutex
	var marks []int
	p, err := New(Config{
		Listen:      []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")},
		Transparent: true,
		Endpoints: EndpointsFunc(func(ip netip.Addr) (EndpointInfo, bool) {
			return testEndpoint, ip == client
		}),
		Remotes: RemotesFunc(func(netip.Addr) policy.ID { return testDNSID }),
		Mark:    func(id policy.ID) (uint32, error) { return policy.ProxyMark(policy.Egress, id) },
	})
	if err != nil {
		return err
	}
	p.upstreamHook = func(fd int) {
		m, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK)
		if err != nil {
			m = -1
		}
		mu.Lock()
		marks = append(marks, m)
		mu.Unlock()
	}
	pol := testPolicy()
	if err := p.SetPolicy(pol); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Bind(ctx); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	for _, netw := range []string{"udp", "tcp"} {
		var local net.Addr = &net.UDPAddr{IP: client.AsSlice()}
		if netw == "tcp" {
			local = &net.TCPAddr{IP: client.AsSlice()}
		}
		// miekg's client uses a connected socket: an answer from any
		// address but 10.97.0.2:53 would never reach it.
		c := &dns.Client{Net: netw, Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}}
		for range rounds {
			r, _, err := c.Exchange(mkQuery("www.allowed.test.", dns.TypeA), server.String())
			if err != nil {
				return fmt.Errorf("%s query through the transparent proxy: %w", netw, err)
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.10" {
				return fmt.Errorf("%s answer: %v", netw, r)
			}
			r, _, err = c.Exchange(mkQuery("evil.test.", dns.TypeA), server.String())
			if err != nil {
				return fmt.Errorf("%s denied query: %w", netw, err)
			}
			if r.Rcode != dns.RcodeRefused {
				return fmt.Errorf("%s denied query: rcode %s, want REFUSED", netw, dns.RcodeToString[r.Rcode])
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(marks) != 2*rounds {
		return fmt.Errorf("saw %d upstream sockets, want %d", len(marks), 2*rounds)
	}
	for _, m := range marks {
		if uint32(m) != wantMark {
			return fmt.Errorf("upstream socket SO_MARK %#x, want %#x (egress proxy, identity %d)", m, wantMark, testClientID)
		}
	}
	cancel()
	return <-done
}
