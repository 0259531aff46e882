package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/netns"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/k8s"
)

// nodeNetns makes a named netns with lo up and removes it at cleanup.
func nodeNetns(t *testing.T, name string) string {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", name).Run() // a crashed run's
	testutil.RunCmd(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	testutil.RunCmd(t, "ip", "-n", name, "link", "set", "lo", "up")
	return "/var/run/netns/" + name
}

func randHex(t *testing.T) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// TestPrivilegedNodeRoutes: two "nodes" (netns) linked by a veth, each with
// a pod address on lo inside its pod CIDR. Each node's NodeRouter, fed the
// routes ComputeNodeRoutes derives from the Node objects, makes pod-to-pod
// TCP between the nodes work (source and destination are pod addresses, so
// both directions' routes are needed); a changed pod CIDR moves the route,
// a deleted node's route goes, a route of another protocol is never
// touched, and Sync(nil) (shutdown cleanup) leaves only it.
func TestPrivilegedNodeRoutes(t *testing.T) {
	testutil.Privileged(t)
	sfx := randHex(t)
	ns1, ns2 := nodeNetns(t, "mrt1-"+sfx), nodeNetns(t, "mrt2-"+sfx)
	va, vb := "mrta"+sfx, "mrtb"+sfx
	testutil.RunCmd(t, "ip", "link", "add", va, "netns", "mrt1-"+sfx, "type", "veth", "peer", "name", vb, "netns", "mrt2-"+sfx)
	for _, c := range [][]string{
		{"-n", "mrt1-" + sfx, "addr", "add", "192.168.77.1/24", "dev", va},
		{"-n", "mrt1-" + sfx, "link", "set", va, "up"},
		{"-n", "mrt1-" + sfx, "addr", "add", "10.77.1.1/32", "dev", "lo"},
		{"-n", "mrt2-" + sfx, "addr", "add", "192.168.77.2/24", "dev", vb},
		{"-n", "mrt2-" + sfx, "link", "set", vb, "up"},
		{"-n", "mrt2-" + sfx, "addr", "add", "10.77.2.1/32", "dev", "lo"},
		{"-n", "mrt2-" + sfx, "addr", "add", "10.77.3.1/32", "dev", "lo"},
		// Someone else's route: never touched.
		{"-n", "mrt1-" + sfx, "route", "add", "10.77.9.0/24", "via", "192.168.77.2", "proto", "static"},
	} {
		testutil.RunCmd(t, "ip", c...)
	}
	r1, err := NewNodeRouter(ns1)
	testutil.Require(t, "netlink in a netns", err)
	defer r1.Close()
	r2, err := NewNodeRouter(ns2)
	testutil.Require(t, "netlink in a netns", err)
	defer r2.Close()

	node := func(name, addr, cidr string) k8s.NodeInfo {
		return k8s.NodeInfo{Name: name, Addresses: []netip.Addr{netip.MustParseAddr(addr)}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix(cidr)}}
	}
	sync := func(nodes []k8s.NodeInfo) {
		t.Helper()
		for _, x := range []struct {
			self string
			r    *NodeRouter
		}{{"n1", r1}, {"n2", r2}} {
			want, problems := ComputeNodeRoutes(x.self, nodes)
			if len(problems) > 0 {
				t.Fatalf("%s: problems %v", x.self, problems)
			}
			if err := x.r.Sync(want); err != nil {
				t.Fatalf("%s: sync: %v", x.self, err)
			}
			got, err := x.r.Installed()
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				want[i].Node = ""
			}
			if len(want) == 0 {
				want = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: installed %v, want %v", x.self, got, want)
			}
		}
	}
	// A listener on each of n2's pod addresses.
	var lns []net.Listener
	for _, a := range []string{"10.77.2.1:0", "10.77.3.1:0"} {
		if err := netns.Do(ns2, func() error {
			ln, err := net.Listen("tcp4", a)
			lns = append(lns, ln)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	go func() {
		for _, ln := range lns {
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}()
	// dial connects from n1's pod address to one of n2's.
	dial := func(ln net.Listener) error {
		return netns.Do(ns1, func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.77.1.1")}, Timeout: 2 * time.Second}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			return c.Close()
		})
	}
	if err := dial(lns[0]); err == nil {
		t.Fatal("pod-to-pod across nodes works before any route: the test proves nothing")
	}

	sync([]k8s.NodeInfo{node("n1", "192.168.77.1", "10.77.1.0/24"), node("n2", "192.168.77.2", "10.77.2.0/24")})
	if err := dial(lns[0]); err != nil {
		t.Fatalf("pod to pod across nodes with routes: %v", err)
	}

	// n2's pod CIDR changes: the route moves.
	sync([]k8s.NodeInfo{node("n1", "192.168.77.1", "10.77.1.0/24"), node("n2", "192.168.77.2", "10.77.3.0/24")})
	if err := dial(lns[1]); err != nil {
		t.Fatalf("to n2's new pod CIDR: %v", err)
	}
	if err := dial(lns[0]); err == nil {
		t.Fatal("n2's old pod CIDR still routed")
	}

	// n2 is deleted: n1 has no route to it any more.
	sync([]k8s.NodeInfo{node("n1", "192.168.77.1", "10.77.1.0/24")})
	if err := dial(lns[1]); err == nil {
		t.Fatal("a deleted node's pod CIDR still routed")
	}

	// Shutdown cleanup: only moat's routes go.
	sync([]k8s.NodeInfo{node("n1", "192.168.77.1", "10.77.1.0/24"), node("n2", "192.168.77.2", "10.77.2.0/24")})
	if err := r1.Sync(nil); err != nil {
		t.Fatal(err)
	}
	out := testutil.RunCmd(t, "ip", "-n", "mrt1-"+sfx, "route", "show")
	if strings.Contains(out, "10.77.2.0/24") || !strings.Contains(out, "10.77.9.0/24") {
		t.Fatalf("after cleanup n1's routes are:\n%s\nwant moat's gone and the static 10.77.9.0/24 kept", out)
	}
	if got := fmt.Sprint(r1.Installed()); got != "[] <nil>" {
		t.Fatalf("installed after cleanup: %s", got)
	}
}
