package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/policy"
)

// dns_cli_test.go checks the DNS commands against a running agent with the
// examples/dns-fqdns policy: `moat policy trace --dns-query` agrees with
// what the proxy answers, `moat observe --dns-name --rcode` finds real DNS
// flows, and `moat fqdn flush` drops learned names so that their old
// addresses are dropped until the name resolves again.

// moatCLI runs the moat CLI against the test agent and returns stdout; exit
// status 2 (a trace's DENIED) is not an error.
func (a *testAgent) moatCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(a.t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bins.cli, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2) {
		return stdout.String(), errors.Join(err, errors.New(strings.TrimSpace(stderr.String())))
	}
	return stdout.String(), nil
}

func (a *testAgent) socket() string { return filepath.Join(a.runDir, agent.APISocket) }

// waitOutOfIPCache waits until the Plan in force has no ipcache entry for
// ip. Nothing may connect to ip meanwhile: a live flow keeps it.
func (a *testAgent) waitOutOfIPCache(ip netip.Addr) {
	a.t.Helper()
	pf := netip.PrefixFrom(ip, ip.BitLen())
	waitUntil(a.t, ip.String()+" out of the ipcache", 40*time.Second, func() bool {
		p, err := a.plan()
		if err != nil {
			return false
		}
		for _, e := range p.IPCache {
			if e.Prefix == pf {
				return false
			}
		}
		return true
	})
}

// observedDNS is the part of a flow line the DNS checks read.
type observedDNS struct {
	Verdict string `json:"verdict"`
	L7      *struct {
		Type string `json:"type"`
		DNS  *struct {
			Query string `json:"query"`
			Rcode int    `json:"rcode"`
		} `json:"dns"`
	} `json:"l7"`
}

// observe runs `moat observe -o json --last 10000` with extra flags.
func (a *testAgent) observe(t *testing.T, flags ...string) []observedDNS {
	t.Helper()
	out, err := a.moatCLI(append([]string{"observe", "--agent", a.socket(), "-o", "json", "--last", "10000"}, flags...)...)
	if err != nil {
		t.Fatalf("moat observe %v: %v", flags, err)
	}
	var fs []observedDNS
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var f observedDNS
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("moat observe %v: decode %q: %v", flags, sc.Text(), err)
		}
		fs = append(fs, f)
	}
	return fs
}

// TestPrivilegedDNSCLI: trace agreement, observe filters and fqdn flush on
// the real agent, real proxy, real DNS server and real connections.
func TestPrivilegedDNSCLI(t *testing.T) {
	requirePrivileged(t)
	entries, err := os.ReadDir(filepath.Join("..", "examples", "dns-fqdns", "policies"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("examples/dns-fqdns/policies: %v entries, %v; want one file", len(entries), err)
	}
	a := startAgent(t, agentSpec{
		short:     "dcli",
		endpoints: readExample(t, "endpoints.yaml"),
		policies:  map[string]string{"p.yaml": readExample(t, filepath.Join("policies", entries[0].Name()))},
	})
	client := peer{name: "client", ref: "default/client", netns: a.netnsPath("default", "client"), addr: netip.MustParseAddr("10.200.2.10")}
	coredns := peer{name: "coredns", ref: "kube-system/coredns", netns: a.netnsPath("kube-system", "coredns"), addr: netip.MustParseAddr("10.200.2.53")}
	up := serveUpstream(t, coredns)
	dnsWorld(t)

	// 1. `moat policy trace --dns-query` on the agent's own files agrees
	// with the proxy's answers, over UDP and TCP.
	names := map[string]bool{ // name -> the policy allows it
		"api.example.com":      true,  // matchName (and the pattern)
		"www.example.com":      true,  // matchPattern *.example.com
		"WWW.Example.COM":      true,  // case-insensitive
		"www.example.org":      false, // no rule
		"a.b.example.com":      false, // * is one label only
		"example.com":          false, // * needs a label
		"api.example.com.evil": false,
	}
	for name, want := range names {
		for _, network := range []string{"udp", "tcp"} {
			out, err := a.moatCLI("policy", "trace", "-o", "json", "--policies", a.policyDir, "--endpoints", a.endpointsFile,
				"--from", "default/client", "--to", "kube-system/coredns", "--port", "53/"+strings.ToUpper(network), "--dns-query", name)
			if err != nil {
				t.Fatalf("trace %s over %s: %v", name, network, err)
			}
			var res policy.TraceResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("trace %s: decode %q: %v", name, out, err)
			}
			traceAllows := res.Verdict == policy.TraceAllowed
			before := up.queries(name)
			resp, _, err := resolve(client, coredns.addr, network, name)
			if err != nil {
				t.Fatalf("resolve %s over %s: %v", name, network, err)
			}
			agentAllows := resp.Rcode == dns.RcodeSuccess
			if !agentAllows && resp.Rcode != dns.RcodeRefused {
				t.Errorf("%s over %s: rcode %s; want NOERROR or REFUSED", name, network, dns.RcodeToString[resp.Rcode])
			}
			reached := up.queries(name) > before
			if traceAllows != want || agentAllows != want || reached != want {
				t.Errorf("%s over %s: want allowed=%v; trace says %s, the agent answered %s, the server was asked: %v",
					name, network, want, res.Verdict, dns.RcodeToString[resp.Rcode], reached)
			}
		}
	}

	// 2. `moat observe --dns-name --rcode`, applied by the agent.
	var refused []observedDNS
	waitUntil(t, "REFUSED flows for www.example.org in moat observe", 5*time.Second, func() bool {
		refused = a.observe(t, "--dns-name", "www.example.org", "--rcode", "REFUSED")
		return len(refused) >= 2
	})
	for _, f := range refused {
		if f.Verdict != "DROPPED" || f.L7 == nil || f.L7.DNS == nil || f.L7.DNS.Query != "www.example.org." {
			t.Fatalf("--dns-name www.example.org --rcode REFUSED returned %+v", f)
		}
	}
	allowed := a.observe(t, "--dns-name", "*.example.com", "--rcode", "NOERROR")
	seen := map[string]int{}
	for _, f := range allowed {
		if f.L7 == nil || f.L7.DNS == nil || f.L7.Type != "RESPONSE" || f.L7.DNS.Rcode != 0 {
			t.Fatalf("--dns-name *.example.com --rcode NOERROR returned %+v", f)
		}
		seen[strings.ToLower(f.L7.DNS.Query)]++
	}
	// api and www over two transports, www twice more in capitals.
	if seen["api.example.com."] != 2 || seen["www.example.com."] != 4 || len(seen) != 2 {
		t.Fatalf("NOERROR responses for *.example.com: %v; want api.example.com. x2, www.example.com. x4 and nothing else (a.b.example.com is two labels)", seen)
	}
	if fs := a.observe(t, "--dns-name", "www.example.org", "--rcode", "NOERROR"); len(fs) != 0 {
		t.Fatalf("--dns-name www.example.org --rcode NOERROR: %d flows, want none: %+v", len(fs), fs)
	}
	if fs := a.observe(t, "--rcode", "5", "--dns-name", "**.example.com"); len(fs) != 2 {
		// a.b.example.com over UDP and TCP; example.com itself is not
		// under **.example.com.
		t.Fatalf("--rcode 5 --dns-name **.example.com: %d flows, want 2 (a.b.example.com): %+v", len(fs), fs)
	}
	if _, err := a.moatCLI("observe", "--agent", a.socket(), "--rcode", "NOPE"); err == nil || !strings.Contains(err.Error(), "rcode") {
		t.Fatalf("observe --rcode NOPE: %v; want an error naming the rcode", err)
	}
	// The agent itself refuses bad filters (a client other than the CLI).
	resp, err := a.api.Get("http://agent/v1/flows?rcode=NOPE")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("GET /v1/flows?rcode=NOPE: %s; want 400", resp.Status)
	}

	// 3. `moat fqdn flush`: resolve, connect, flush, the old address is
	// dropped, resolve again and connect.
	resolveA := func(name string) netip.Addr {
		t.Helper()
		resp, _, err := resolve(client, coredns.addr, "udp", name)
		if err != nil || resp.Rcode != dns.RcodeSuccess || len(answerIPs(resp)) != 1 {
			t.Fatalf("resolve %s: %v %v", name, resp, err)
		}
		return answerIPs(resp)[0]
	}
	old := resolveA("api.example.com")
	www := resolveA("www.example.com")
	if err := firstSYN(client, netip.AddrPortFrom(old, 80)); err != nil {
		t.Fatalf("connect to %s:80 after resolving: %v", old, err)
	}
	out, err := a.moatCLI("fqdn", "cache", "--agent", a.socket())
	if err != nil || !strings.Contains(out, old.String()) {
		t.Fatalf("moat fqdn cache before the flush: %v\n%s\nwant %s", err, out, old)
	}
	out, err = a.moatCLI("fqdn", "flush", "--agent", a.socket(), "--name", "api.example.com")
	if err != nil || !strings.Contains(out, "flushed api.example.com.") {
		t.Fatalf("moat fqdn flush --name api.example.com: %v\n%s", err, out)
	}
	t.Logf("moat fqdn flush --name api.example.com:\n%s", out)
	var cache agent.FQDNCache
	if err := a.getJSON("/v1/fqdn/cache", &cache); err != nil {
		t.Fatal(err)
	}
	for _, e := range cache.Entries {
		if e.Name == "api.example.com." || e.IP == old.String() {
			t.Fatalf("after the flush the cache still has %+v", e)
		}
	}
	// An address a connection used stays in the ipcache until its
	// conntrack entry is gone (the closed connection's, about 10 s), so
	// that a flush never cuts a live flow; then it leaves.
	a.waitOutOfIPCache(old)
	if err := probeTCP(client, netip.AddrPortFrom(old, 80), deniedTimeout); err != errNoAnswer {
		t.Fatalf("%s:80 after flushing api.example.com: %v; want dropped", old, err)
	}
	// www.example.com was not flushed: still reachable.
	if err := probeTCP(client, netip.AddrPortFrom(www, 80), allowedTimeout); err != nil {
		t.Fatalf("%s:80 (www.example.com, not flushed): %v", www, err)
	}
	fresh := resolveA("api.example.com")
	if fresh == old {
		t.Fatalf("the server answered %s again; the test needs a fresh address", old)
	}
	if err := firstSYN(client, netip.AddrPortFrom(fresh, 80)); err != nil {
		t.Fatalf("connect to %s:80 after resolving again: %v", fresh, err)
	}
	// --endpoint: the client's rules cover both names.
	out, err = a.moatCLI("fqdn", "flush", "--agent", a.socket(), "--endpoint", "default/client", "-o", "json")
	if err != nil {
		t.Fatalf("moat fqdn flush --endpoint default/client: %v", err)
	}
	var flushed agent.FQDNFlush
	if err := json.Unmarshal([]byte(out), &flushed); err != nil {
		t.Fatalf("decode flush output %q: %v", out, err)
	}
	if len(flushed.Names) != 2 || flushed.Names[0].Name != "api.example.com." || flushed.Names[1].Name != "www.example.com." {
		t.Fatalf("flush --endpoint default/client: %+v; want api.example.com. and www.example.com.", flushed)
	}
	for _, ip := range []netip.Addr{fresh, www} {
		a.waitOutOfIPCache(ip)
		if err := probeTCP(client, netip.AddrPortFrom(ip, 80), deniedTimeout); err != errNoAnswer {
			t.Fatalf("%s:80 after flushing the client's names: %v; want dropped", ip, err)
		}
	}
	if _, err := a.moatCLI("fqdn", "flush", "--agent", a.socket(), "--endpoint", "default/nobody"); err == nil || !strings.Contains(err.Error(), "unknown endpoint") {
		t.Fatalf("flush --endpoint default/nobody: %v; want unknown endpoint", err)
	}
	var after struct {
		LearnedAddresses int `json:"learnedAddresses"`
	}
	if err := a.getJSON("/v1/fqdn/cache", &after); err != nil {
		t.Fatal(err)
	}
	if after.LearnedAddresses != 0 {
		t.Fatalf("%d learned addresses after flushing every name; want 0", after.LearnedAddresses)
	}
	last := resolveA("api.example.com")
	if err := firstSYN(client, netip.AddrPortFrom(last, 80)); err != nil {
		t.Fatalf("connect to %s:80 after the endpoint flush and a new resolution: %v", last, err)
	}
}
