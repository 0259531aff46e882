package datapath

import (
	"net/netip"
	"testing"

	"github.com/moatnet/moat/policy"
)

// TCP ranges: {0,0} and {0,65535} are every port.
func TestPortBlocks(t *testing.T) {
	cases := []struct {
		name string
		r    policy.PortRange
		want []PortPrefix
	}{
		{"all", policy.PortRange{}, []PortPrefix{{0, 0}}},
		{"all explicit", policy.PortRange{From: 0, To: 65535}, []PortPrefix{{0, 0}}},
		{"single", policy.PortRange{From: 80, To: 80}, []PortPrefix{{80, 16}}},
		{"aligned pair", policy.PortRange{From: 80, To: 81}, []PortPrefix{{80, 15}}},
		{"unaligned", policy.PortRange{From: 79, To: 82}, []PortPrefix{{79, 16}, {80, 15}, {82, 16}}},
		{"top", policy.PortRange{From: 65535, To: 65535}, []PortPrefix{{65535, 16}}},
		{"upper half", policy.PortRange{From: 32768, To: 65535}, []PortPrefix{{32768, 1}}},
		{"1-65535", policy.PortRange{From: 1, To: 65535}, nil},
		{"reversed", policy.PortRange{From: 9, To: 8}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := PortBlocks(policy.L4Key{Proto: policy.ProtoTCP, Ports: tc.r})
			if tc.want != nil && !equalPrefixes(got, tc.want) {
				t.Fatalf("PortBlocks(TCP %v) = %v, want %v", tc.r, got, tc.want)
			}
			if tc.r.To >= tc.r.From {
				checkCover(t, tc.r, got)
			}
		})
	}
}

func equalPrefixes(a, b []PortPrefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkCover is the slow reference: every port is covered by exactly one
// block iff it lies in the range.
func checkCover(t *testing.T, r policy.PortRange, ps []PortPrefix) {
	t.Helper()
	if len(ps) > 30 {
		t.Fatalf("%v: %d blocks, want at most 30", r, len(ps))
	}
	for port := 0; port <= 65535; port++ {
		n := 0
		for _, p := range ps {
			if p.Contains(uint16(port)) {
				n++
			}
		}
		want := 0
		if r.Contains(uint16(port)) {
			want = 1
		}
		if n != want {
			t.Fatalf("%v: port %d covered by %d blocks of %v, want %d", r, port, n, ps, want)
		}
	}
}

func TestPortBlocksDifferential(t *testing.T) {
	ranges := []policy.PortRange{{From: 1, To: 1023}, {From: 1024, To: 65535}, {From: 8000, To: 8080}, {From: 3, To: 5}, {From: 12345, To: 23456}, {From: 65534, To: 65535}, {From: 0, To: 1}}
	for _, r := range ranges {
		t.Run(r.String(), func(t *testing.T) { checkCover(t, r, PortBlocks(policy.L4Key{Proto: policy.ProtoTCP, Ports: r})) })
	}
}

func TestPolicyKeyRoundTrip(t *testing.T) {
	keys := []PolicyKey{
		{Endpoint: 7, Direction: policy.Egress, Identity: 1001, Proto: policy.ProtoTCP, Ports: PortPrefix{80, 16}},
		{Endpoint: 65536, Direction: policy.Ingress, Identity: policy.IDAny, Proto: policy.ProtoAny},
		{Endpoint: 1, Direction: policy.Ingress, Identity: policy.IDLocalFlag | 5, Proto: policy.ProtoUDP, Ports: PortPrefix{32768, 1}},
	}
	for _, k := range keys {
		t.Run(k.String(), func(t *testing.T) {
			b := k.bpf()
			if b.Prefixlen != uint32(policyPrefixStatic)+uint32(k.Ports.Bits) {
				t.Errorf("prefixlen = %d", b.Prefixlen)
			}
			got, err := policyKeyFromBPF(b)
			if err != nil {
				t.Fatal(err)
			}
			if got != k {
				t.Fatalf("round trip = %v, want %v", got, k)
			}
		})
	}
	t.Run("identity is big endian", func(t *testing.T) {
		b := PolicyKey{Identity: 0x01020304, Ports: PortPrefix{0x0102, 16}, Proto: policy.ProtoTCP}.bpf()
		if b.Identity != 0x04030201 || b.Dport != 0x0201 {
			t.Fatalf("identity %#x dport %#x, want byte-swapped", b.Identity, b.Dport)
		}
	})
	t.Run("port bits below prefix are cleared", func(t *testing.T) {
		b := PolicyKey{Proto: policy.ProtoTCP, Ports: PortPrefix{81, 15}}.bpf()
		if b.Dport != 0x5000 { // 80 big endian
			t.Fatalf("dport %#x, want 80 big endian", b.Dport)
		}
	})
}

func TestPolicyHashKey(t *testing.T) {
	t.Run("round trip", func(t *testing.T) {
		for _, k := range []PolicyKey{
			{Endpoint: 7, Direction: policy.Egress, Identity: 1001, Proto: policy.ProtoTCP, Ports: PortPrefix{80, 16}},
			{Endpoint: 7, Direction: policy.Egress, Identity: 1001, Proto: policy.ProtoTCP},
			{Endpoint: 65536, Direction: policy.Ingress, Identity: policy.IDAny, Proto: policy.ProtoAny},
			{Endpoint: 1, Direction: policy.Ingress, Identity: 5, Proto: policy.ProtoICMP, Ports: PortPrefix{0, 16}},
		} {
			if !k.inHash() {
				t.Fatalf("%v: want a hash entry", k)
			}
			got, err := policyKeyFromHash(k.hashKey())
			if err != nil || got != k {
				t.Fatalf("%v: round trip = %v, %v", k, got, err)
			}
		}
	})
	t.Run("ICMP type 0 is one block, every TCP port is all", func(t *testing.T) {
		if got := PortBlocks(policy.L4Key{Proto: policy.ProtoICMP}); len(got) != 1 || got[0] != (PortPrefix{0, 16}) {
			t.Fatalf("ICMP type 0 blocks = %v, want [0/16]", got)
		}
		if got := PortBlocks(policy.L4Key{Proto: policy.ProtoTCP}); len(got) != 1 || got[0] != (PortPrefix{}) {
			t.Fatalf("TCP every-port blocks = %v, want [0/0]", got)
		}
		if got := PortBlocks(policy.L4Key{Proto: policy.ProtoAny, Ports: policy.PortRange{From: 80, To: 80}}); len(got) != 1 || got[0] != (PortPrefix{}) {
			t.Fatalf("ANY blocks = %v, want [0/0]", got)
		}
	})
	t.Run("port 0 and every port differ", func(t *testing.T) {
		one := PolicyKey{Proto: policy.ProtoICMP, Ports: PortPrefix{0, 16}}.hashKey()
		all := PolicyKey{Proto: policy.ProtoICMP}.hashKey()
		if one == all || one.AllPorts != 0 || all.AllPorts != 1 {
			t.Fatalf("ICMP type 0 %+v and every type %+v must be distinct keys", one, all)
		}
	})
	t.Run("range blocks stay in the trie and announce themselves", func(t *testing.T) {
		k := PolicyKey{Direction: policy.Egress, Proto: policy.ProtoUDP, Ports: PortPrefix{32768, 1}}
		if k.inHash() {
			t.Fatal("a range block must not be a hash entry")
		}
		if k.lookupFlags()&epFlagEgressRanges == 0 || k.lookupFlags()&epFlagIngressRanges != 0 {
			t.Fatalf("lookup flags %#x: want the egress ranges bit only", k.lookupFlags())
		}
		if (PolicyKey{Proto: policy.ProtoUDP, Ports: PortPrefix{53, 16}}).lookupFlags()&(epFlagEgressRanges|epFlagIngressRanges) != 0 {
			t.Fatal("a single-port entry must not set a ranges bit")
		}
	})
	t.Run("bad hash keys are refused", func(t *testing.T) {
		if _, err := policyKeyFromHash(moatPolicyHkey{AllPorts: 1, Dport: 0x5000}); err == nil {
			t.Fatal("every-port key with a port decoded without error")
		}
		if _, err := policyKeyFromHash(moatPolicyHkey{AllPorts: 2}); err == nil {
			t.Fatal("all_ports 2 decoded without error")
		}
	})
}

func TestIPCacheKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0", "fd00::/64", "::/0", "2001:db8::1/128"} {
		t.Run(s, func(t *testing.T) {
			p := netip.MustParsePrefix(s)
			got, err := ipcachePrefixFromBPF(ipcacheKey(p))
			if err != nil {
				t.Fatal(err)
			}
			if got != p {
				t.Fatalf("round trip = %s, want %s", got, p)
			}
		})
	}
	t.Run("ipv4 is mapped", func(t *testing.T) {
		k := ipcacheKey(netip.MustParsePrefix("10.0.0.0/8"))
		if k.Prefixlen != 104 || k.Addr[10] != 0xff || k.Addr[11] != 0xff || k.Addr[12] != 10 {
			t.Fatalf("key = %+v", k)
		}
	})
}
