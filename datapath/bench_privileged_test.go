package datapath

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// Benchmarks of the datapath's speed goals. They need root and bpffs, so
// they run only with MOAT_PRIVILEGED_TESTS=1, like the privileged tests.
//
//	MOAT_PRIVILEGED_TESTS=1 go test -run '^$' -bench . ./datapath

func benchDatapath(b *testing.B) *Datapath {
	b.Helper()
	testutil.Privileged(b)
	var r [4]byte
	_, _ = rand.Read(r[:])
	root := "/sys/fs/bpf/moat-bench-" + hex.EncodeToString(r[:])
	d, err := Open(Config{PinRoot: root})
	testutil.Require(b, "datapath load", err)
	b.Cleanup(func() { _ = d.Cleanup() })
	return d
}

// benchPlan is a server endpoint whose ingress allows n (identity, proto,
// port) entries over 1,000 remote identities, each with a /32 in the
// ipcache; shift moves every port so that two plans share no entry.
func benchPlan(n int, shift uint16) *policy.Plan {
	const ids = 1000
	server := policy.EndpointPlan{
		Namespace: "b", Name: "server", Identity: 40000,
		Addresses: []netip.Addr{netip.MustParseAddr("10.239.100.1")},
		Ingress:   policy.DirectionPlan{Enforced: true},
	}
	for k := range n {
		proto := policy.ProtoTCP
		if k%5 == 4 {
			proto = policy.ProtoUDP
		}
		port := 20000 + shift + uint16(k/ids)
		server.Ingress.Entries = append(server.Ingress.Entries, policy.Entry{
			L4Key:   policy.L4Key{Identity: policy.ID(30000 + k%ids), Proto: proto, Ports: policy.PortRange{From: port, To: port}},
			Verdict: policy.VerdictAllow,
		})
	}
	plan := &policy.Plan{Endpoints: []policy.EndpointPlan{server}}
	for i := range ids {
		a := netip.AddrFrom4([4]byte{10, 239, byte(i / 250), byte(i%250 + 1)})
		plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(a, 32), Identity: policy.ID(30000 + i)})
	}
	return plan
}

// BenchmarkSyncReplace10k times a Sync that replaces a 10,000-entry policy
// with another 10,000-entry policy (10k additions, 10k deletions), until
// the new policy is enforced; the zeroing of the freed rules' counters that
// follows in the background is not timed.
func BenchmarkSyncReplace10k(b *testing.B) {
	d := benchDatapath(b)
	ifaces := map[EndpointKey]int{{Namespace: "b", Name: "server"}: 1}
	plans := []*policy.Plan{benchPlan(10000, 0), benchPlan(10000, 5000)}
	if err := d.Sync(plans[0], ifaces, nil); err != nil {
		b.Fatal(err)
	}
	i := 1
	var total time.Duration
	for b.Loop() {
		d.Settle() // one replacement at a time, as the agent makes them
		start := time.Now()
		if err := d.Sync(plans[i%2], ifaces, nil); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		i++
	}
	b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "ms/replace")
	if got := len(d.Entries()); got != 10000 {
		b.Fatalf("policy map holds %d entries after the replacements, want 10000", got)
	}
}

// benchPacket builds an Ethernet + IPv4 + TCP/UDP frame.
func benchPacket(src, dst netip.Addr, proto policy.Protocol, sport, dport uint16, tcpFlags uint8) []byte {
	l4 := 8
	if proto == policy.ProtoTCP {
		l4 = 20
	}
	pkt := make([]byte, 14+20+l4+32)
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(pkt)-14))
	ip[8] = 64
	ip[9] = byte(proto)
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	l := ip[20:]
	binary.BigEndian.PutUint16(l[0:], sport)
	binary.BigEndian.PutUint16(l[2:], dport)
	if proto == policy.ProtoTCP {
		l[12] = 5 << 4
		l[13] = tcpFlags
	} else {
		binary.BigEndian.PutUint16(l[4:], uint16(l4+32))
	}
	return pkt
}

// BenchmarkProgram measures the tc program per packet (BPF_PROG_TEST_RUN
// on the loopback device, which the plan makes an endpoint), for the
// packet kinds of a flow: a tracked flow's packets in its own direction, a
// reply, and a packet decided by policy without creating state.
func BenchmarkProgram(b *testing.B) {
	d := benchDatapath(b)
	const lo = 1 // test runs see the loopback device
	plan := benchPlan(10000, 0)
	plan.Endpoints[0].Egress = policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: 30000, Proto: policy.ProtoUDP, Ports: policy.PortRange{From: 5201, To: 5201}}, Verdict: policy.VerdictAllow},
	}}
	plan.Endpoints[0].Ingress.Entries = append(plan.Endpoints[0].Ingress.Entries,
		policy.Entry{L4Key: policy.L4Key{Identity: 30000, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 8080, To: 8080}}, Verdict: policy.VerdictAllow},
		policy.Entry{L4Key: policy.L4Key{Identity: 30000, Proto: policy.ProtoUDP, Ports: policy.PortRange{From: 5201, To: 5201}}, Verdict: policy.VerdictAllow})
	if err := d.Sync(plan, map[EndpointKey]int{{Namespace: "b", Name: "server"}: lo}, nil); err != nil {
		b.Fatal(err)
	}
	server, client := netip.MustParseAddr("10.239.100.1"), netip.MustParseAddr("10.239.0.1")
	cases := []struct {
		name   string
		dir    policy.Direction
		pkt    []byte
		verdct uint32
	}{
		{"tracked-udp", policy.Ingress, benchPacket(client, server, policy.ProtoUDP, 40000, 5201, 0), 0},
		{"reply-udp", policy.Egress, benchPacket(server, client, policy.ProtoUDP, 5201, 40000, 0), 0},
		{"untracked-tcp-ack", policy.Ingress, benchPacket(client, server, policy.ProtoTCP, 40001, 8080, 0x10), 0},
		{"denied-tcp-syn", policy.Ingress, benchPacket(client, server, policy.ProtoTCP, 40002, 9999, 0x02), 2},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			prog := d.objs.ToEndpoint
			if c.dir == policy.Egress {
				prog = d.objs.FromEndpoint
			}
			// The first run creates state where the packet kind does.
			if ret, _, err := prog.Test(c.pkt); err != nil || ret != c.verdct {
				b.Fatalf("first run: verdict %d, %v; want %d", ret, err, c.verdct)
			}
			var total time.Duration
			for b.Loop() {
				ret, per, err := prog.Benchmark(c.pkt, 1000, nil)
				if err != nil || ret != c.verdct {
					b.Fatalf("run: verdict %d, %v; want %d", ret, err, c.verdct)
				}
				total += per
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
		})
	}
}

// BenchmarkConntrackSweep times ConntrackStats over a full moat_ct (262,144
// entries, half of them expired), the sweep behind moat_ct's map pressure.
func BenchmarkConntrackSweep(b *testing.B) {
	d := benchDatapath(b)
	capacity := int(d.objs.MoatCt.MaxEntries())
	keys := make([]moatCtKey, capacity)
	vals := make([]moatCtEntry, capacity)
	for i := range keys {
		binary.BigEndian.PutUint32(keys[i].Saddr[12:], uint32(i))
		keys[i].Proto = 6
		keys[i].Endpoint = 1
		vals[i].Expires = 1 << 62 // live for ever
		if i%2 == 1 {
			vals[i].Expires = 0
		}
	}
	if n, err := d.objs.MoatCt.BatchUpdate(keys, vals, nil); err != nil || n != capacity {
		b.Fatalf("fill moat_ct: %d of %d entries: %v", n, capacity, err)
	}
	b.ResetTimer()
	for b.Loop() {
		st, err := d.ConntrackStats()
		if err != nil {
			b.Fatal(err)
		}
		if st.Entries != capacity || st.Live != capacity/2 {
			b.Fatalf("sweep: %+v, want %d entries, %d live", st, capacity, capacity/2)
		}
	}
}
