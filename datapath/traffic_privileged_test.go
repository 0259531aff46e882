package datapath

import (
	"net/netip"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

type probe struct {
	name   string
	proto  policy.Protocol
	port   func(*echoServer) uint16
	allow  bool
	reason DropReason // expected drop reason when !allow
	dir    policy.Direction
}

func tcpPort(s *echoServer) uint16 { return s.tcpPort }
func udpPort(s *echoServer) uint16 { return s.udpPort }
func noPort(*echoServer) uint16    { return 0 }

func TestPrivilegedTrafficPolicy(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	events := collectEvents(t, d)
	// Sync first, then attach: an attached interface without config drops.
	if err := d.Sync(tp.plan(policy.DirectionPlan{}, policy.DirectionPlan{}), tp.ifaces(), nil); err != nil {
		t.Fatalf("sync: %v", err)
	}
	for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex} {
		if err := d.Attach(idx); err != nil {
			t.Fatalf("attach: %v", err)
		}
	}

	tcp := func(p uint16) policy.PortRange { return policy.PortRange{From: p, To: p} }
	cases := []struct {
		name     string
		aEgress  func(*echoServer) policy.DirectionPlan
		bIngress func(*echoServer) policy.DirectionPlan
		probes   []probe
	}{
		{
			name: "no policy allows everything",
			probes: []probe{
				{name: "tcp", proto: policy.ProtoTCP, port: tcpPort, allow: true},
				{name: "udp", proto: policy.ProtoUDP, port: udpPort, allow: true},
				{name: "icmp", proto: policy.ProtoICMP, port: noPort, allow: true},
			},
		},
		{
			name: "ingress allows tcp port from a",
			bIngress: func(s *echoServer) policy.DirectionPlan {
				return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoTCP, Ports: tcp(s.tcpPort)}, Verdict: policy.VerdictAllow},
				}}
			},
			probes: []probe{
				{name: "tcp", proto: policy.ProtoTCP, port: tcpPort, allow: true},
				{name: "udp", proto: policy.ProtoUDP, port: udpPort, reason: DropPolicyDenied, dir: policy.Ingress},
				{name: "icmp", proto: policy.ProtoICMP, port: noPort, reason: DropPolicyDenied, dir: policy.Ingress},
			},
		},
		{
			name: "ingress allows another identity only",
			bIngress: func(s *echoServer) policy.DirectionPlan {
				return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Identity: 4242, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
				}}
			},
			probes: []probe{
				{name: "tcp", proto: policy.ProtoTCP, port: tcpPort, reason: DropPolicyDenied, dir: policy.Ingress},
			},
		},
		{
			name: "egress allows udp range to any",
			aEgress: func(s *echoServer) policy.DirectionPlan {
				return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Proto: policy.ProtoUDP, Ports: policy.PortRange{From: s.udpPort - 3, To: s.udpPort + 7}}, Verdict: policy.VerdictAllow},
				}}
			},
			probes: []probe{
				{name: "udp", proto: policy.ProtoUDP, port: udpPort, allow: true},
				{name: "tcp", proto: policy.ProtoTCP, port: tcpPort, reason: DropPolicyDenied, dir: policy.Egress},
				{name: "icmp", proto: policy.ProtoICMP, port: noPort, reason: DropPolicyDenied, dir: policy.Egress},
			},
		},
		{
			name: "deny entry wins without enforcement",
			bIngress: func(s *echoServer) policy.DirectionPlan {
				return policy.DirectionPlan{Entries: []policy.Entry{
					{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoICMP, Ports: policy.PortRange{From: 8, To: 8}}, Verdict: policy.VerdictDeny},
					{L4Key: policy.L4Key{Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
				}}
			},
			probes: []probe{
				{name: "icmp", proto: policy.ProtoICMP, port: noPort, reason: DropPolicyDeny, dir: policy.Ingress},
				{name: "tcp", proto: policy.ProtoTCP, port: tcpPort, allow: true},
			},
		},
		{
			name: "icmp echo type allowed",
			aEgress: func(s *echoServer) policy.DirectionPlan {
				return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Identity: tp.idB, Proto: policy.ProtoICMP, Ports: policy.PortRange{From: 8, To: 8}}, Verdict: policy.VerdictAllow},
				}}
			},
			probes: []probe{
				{name: "icmp", proto: policy.ProtoICMP, port: noPort, allow: true},
				{name: "udp", proto: policy.ProtoUDP, port: udpPort, reason: DropPolicyDenied, dir: policy.Egress},
			},
		},
		{
			name: "redirect without proxy fails closed",
			aEgress: func(s *echoServer) policy.DirectionPlan {
				return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Proto: policy.ProtoTCP, Ports: tcp(s.tcpPort)}, Verdict: policy.VerdictRedirect, L7: policy.L7HTTP},
				}}
			},
			probes: []probe{
				{name: "tcp", proto: policy.ProtoTCP, port: tcpPort, reason: DropProxyUnavailable, dir: policy.Egress},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ae, bi policy.DirectionPlan
			if tc.aEgress != nil {
				ae = tc.aEgress(srv)
			}
			if tc.bIngress != nil {
				bi = tc.bIngress(srv)
			}
			if err := d.Sync(tp.plan(ae, bi), tp.ifaces(), nil); err != nil {
				t.Fatalf("sync: %v", err)
			}
			for _, p := range tc.probes {
				t.Run(p.name, func(t *testing.T) {
					dst := netip.AddrPortFrom(tp.b.Addr, p.port(srv))
					var err error
					switch p.proto {
					case policy.ProtoTCP:
						err = probeTCP(tp.a, dst)
					case policy.ProtoUDP:
						err = probeUDP(tp.a, dst)
					default:
						err = probeICMP(tp.a, tp.b.Addr)
					}
					if p.allow {
						if err != nil {
							t.Fatalf("%s to %s: want allowed, got %v", p.name, dst, err)
						}
						return
					}
					if err == nil {
						t.Fatalf("%s to %s: want dropped, got through", p.name, dst)
					}
					ifindex := tp.b.HostIfIndex
					if p.dir == policy.Egress {
						ifindex = tp.a.HostIfIndex
					}
					ev := events.waitFor(t, "drop "+p.reason.String(), func(ev Event) bool {
						return ev.Kind == EventDrop && ev.Reason == p.reason && ev.Proto == p.proto &&
							ev.Endpoint == uint32(ifindex) && ev.Dst.Addr() == tp.b.Addr
					})
					if ev.SrcIdentity != tp.idA || ev.DstIdentity != tp.idB || ev.Direction != p.dir || ev.Src.Addr() != tp.a.Addr {
						t.Errorf("drop event = %+v, want src %s id %d, dst id %d, direction %s", ev, tp.a.Addr, tp.idA, tp.idB, p.dir)
					}
				})
			}
		})
	}
}
