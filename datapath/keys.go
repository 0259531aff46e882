package datapath

import (
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/moatnet/moat/policy"
)

// Constants shared with bpf/moat.h.
const (
	policyPrefixStatic = 80 // bits of endpoint, identity, direction, proto
	ipcacheV4Offset    = 96 // IPv4 addresses are stored IPv4-mapped

	epFlagIngressEnforced = 1 << 0
	epFlagEgressEnforced  = 1 << 1
	epFlagIngressEntries  = 1 << 2
	epFlagEgressEntries   = 1 << 3

	// Entry shapes per direction (ingress bits 4-7, egress 8-11), valid
	// with epFlagShapes: which policy lookups can match (see policy_eval).
	epShapesIngressShift = 4
	epShapesEgressShift  = 8
	shapeL3L4            = 1 << 0
	shapeL3Only          = 1 << 1
	shapeL4Only          = 1 << 2
	shapeAll             = 1 << 3
	epFlagShapes         = 1 << 12

	// The direction has port-range entries in the trie (valid with
	// epFlagShapes).
	epFlagIngressRanges = 1 << 13
	epFlagEgressRanges  = 1 << 14
)

// lookupFlags returns the endpoint config bits that an entry under k needs
// set so that the program looks it up: its shape in its direction, and for
// a range block, that the direction has ranges.
func (k PolicyKey) lookupFlags() uint32 {
	f := k.shapeFlags()
	if !k.inHash() {
		f |= flagFor(k.Direction, epFlagIngressRanges, epFlagEgressRanges)
	}
	return f
}

// shapeFlags returns the endpoint config bits that announce an entry of
// k's shape in k's direction.
func (k PolicyKey) shapeFlags() uint32 {
	var shape uint32
	switch {
	case k.Identity != policy.IDAny && k.Proto != policy.ProtoAny:
		shape = shapeL3L4
	case k.Identity != policy.IDAny:
		shape = shapeL3Only
	case k.Proto != policy.ProtoAny:
		shape = shapeL4Only
	default:
		shape = shapeAll
	}
	if k.Direction == policy.Egress {
		return shape << epShapesEgressShift
	}
	return shape << epShapesIngressShift
}

// PortPrefix is a prefix-aligned block of ports: the ports whose first Bits
// bits equal Port's. Bits 0 covers every port.
type PortPrefix struct {
	Port uint16
	Bits uint8
}

// Contains reports whether port lies in the block.
func (p PortPrefix) Contains(port uint16) bool {
	if p.Bits == 0 {
		return true
	}
	mask := uint16(0xffff) << (16 - p.Bits)
	return port&mask == p.Port&mask
}

// String renders "80/16".
func (p PortPrefix) String() string { return fmt.Sprintf("%d/%d", p.Port, p.Bits) }

// PortBlocks returns the blocks of k's entry: one block of 0 bits when it
// covers every port (ProtoAny, or {0,0} for a port protocol), else the
// blocks of its range. An ICMP range is taken as it is: {0,0} is type 0.
func PortBlocks(k policy.L4Key) []PortPrefix {
	if k.AllPorts() {
		return []PortPrefix{{}}
	}
	return rangeBlocks(k.Ports)
}

// rangeBlocks splits r, taken literally, into the fewest prefix-aligned
// blocks that cover exactly the range.
func rangeBlocks(r policy.PortRange) []PortPrefix {
	lo, hi := uint32(r.From), uint32(r.To)
	if hi < lo {
		return nil
	}
	var out []PortPrefix
	for lo <= hi {
		// The largest block aligned at lo...
		size := uint32(1) << 16
		if lo != 0 {
			size = lo & -lo
		}
		// ...that does not run past hi.
		for lo+size-1 > hi {
			size >>= 1
		}
		out = append(out, PortPrefix{Port: uint16(lo), Bits: uint8(16 - bits.TrailingZeros32(size))})
		lo += size
	}
	return out
}

// PolicyKey is a policy map key: an entry of one endpoint (ifindex) and
// direction for a remote identity (IDAny: every identity), protocol
// (ProtoAny: every protocol and port) and a block of destination ports.
type PolicyKey struct {
	Endpoint  uint32
	Direction policy.Direction
	Identity  policy.ID
	Proto     policy.Protocol
	Ports     PortPrefix
}

// String renders the key for goldens and logs.
func (k PolicyKey) String() string {
	return fmt.Sprintf("ep=%d %s id=%s proto=%s port=%s", k.Endpoint, k.Direction, idString(k.Identity), k.Proto, k.Ports)
}

// inHash reports whether k's entry lives in the hash map (one port, or
// every port) rather than in the trie of range blocks.
func (k PolicyKey) inHash() bool { return k.Ports.Bits == 0 || k.Ports.Bits == 16 }

// hashKey encodes k for the hash map; inHash(k) must hold.
func (k PolicyKey) hashKey() moatPolicyHkey {
	h := moatPolicyHkey{
		Endpoint:  k.Endpoint,
		Identity:  bits.ReverseBytes32(uint32(k.Identity)),
		Direction: uint8(k.Direction),
		Proto:     uint8(k.Proto),
	}
	if k.Ports.Bits == 0 {
		h.AllPorts = 1
	} else {
		h.Dport = bits.ReverseBytes16(k.Ports.Port)
	}
	return h
}

func policyKeyFromHash(h moatPolicyHkey) (PolicyKey, error) {
	k := PolicyKey{
		Endpoint:  h.Endpoint,
		Direction: policy.Direction(h.Direction),
		Identity:  policy.ID(bits.ReverseBytes32(h.Identity)),
		Proto:     policy.Protocol(h.Proto),
	}
	switch {
	case h.AllPorts == 1 && h.Dport == 0:
	case h.AllPorts == 0:
		k.Ports = PortPrefix{Port: bits.ReverseBytes16(h.Dport), Bits: 16}
	default:
		return PolicyKey{}, fmt.Errorf("decode policy hash key: all_ports %d with port %d", h.AllPorts, bits.ReverseBytes16(h.Dport))
	}
	return k, nil
}

// bpf encodes k for the trie (any k: the trie has held every entry in
// earlier versions, see syncState.misplaced).
func (k PolicyKey) bpf() moatPolicyKey {
	port := k.Ports.Port
	if k.Ports.Bits < 16 {
		port &^= uint16(0xffff) >> k.Ports.Bits
	}
	return moatPolicyKey{
		Prefixlen: policyPrefixStatic + uint32(k.Ports.Bits),
		Endpoint:  k.Endpoint,
		Identity:  bits.ReverseBytes32(uint32(k.Identity)),
		Direction: uint8(k.Direction),
		Proto:     uint8(k.Proto),
		Dport:     bits.ReverseBytes16(port),
	}
}

func policyKeyFromBPF(b moatPolicyKey) (PolicyKey, error) {
	if b.Prefixlen < policyPrefixStatic || b.Prefixlen > policyPrefixStatic+16 {
		return PolicyKey{}, fmt.Errorf("decode policy key: prefix length %d out of range", b.Prefixlen)
	}
	return PolicyKey{
		Endpoint:  b.Endpoint,
		Direction: policy.Direction(b.Direction),
		Identity:  policy.ID(bits.ReverseBytes32(b.Identity)),
		Proto:     policy.Protocol(b.Proto),
		Ports:     PortPrefix{Port: bits.ReverseBytes16(b.Dport), Bits: uint8(b.Prefixlen - policyPrefixStatic)},
	}, nil
}

// PolicyValue is a policy map value.
type PolicyValue struct {
	Verdict   policy.Verdict
	L7        policy.L7Kind
	ProxyPort uint16 // 0 with VerdictRedirect: no proxy, fail closed
	Rule      uint32 // per-rule counter index, 0 for none
}

func (v PolicyValue) bpf() moatPolicyVal {
	return moatPolicyVal{Verdict: uint8(v.Verdict), L7: uint8(v.L7), ProxyPort: v.ProxyPort, Rule: v.Rule}
}

func policyValueFromBPF(b moatPolicyVal) PolicyValue {
	return PolicyValue{Verdict: policy.Verdict(b.Verdict), L7: policy.L7Kind(b.L7), ProxyPort: b.ProxyPort, Rule: b.Rule}
}

func ipcacheKey(p netip.Prefix) moatIpcacheKey {
	p = p.Masked()
	bitsLen := p.Bits()
	if p.Addr().Is4() {
		bitsLen += ipcacheV4Offset
	}
	return moatIpcacheKey{Prefixlen: uint32(bitsLen), Addr: p.Addr().As16()}
}

func ipcachePrefixFromBPF(k moatIpcacheKey) (netip.Prefix, error) {
	a := netip.AddrFrom16(k.Addr)
	n := int(k.Prefixlen)
	if a.Is4In6() && n >= ipcacheV4Offset {
		a, n = a.Unmap(), n-ipcacheV4Offset
	}
	p, err := a.Prefix(n)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("decode ipcache key: %w", err)
	}
	return p, nil
}

// isHostPrefix reports whether p names one address (/32, /128): such
// entries go to the exact-match ipcache map instead of the trie.
func isHostPrefix(p netip.Prefix) bool { return p.Bits() == p.Addr().BitLen() }

// hostPrefixFromBPF decodes an exact-match ipcache key (IPv4-mapped for
// IPv4) into its host prefix.
func hostPrefixFromBPF(k moatIpcacheHostKey) netip.Prefix {
	a := netip.AddrFrom16(k.Addr).Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// addrFrom16 turns a datapath address (IPv4-mapped for IPv4) back into an
// address of the packet's family.
func addrFrom16(b [16]byte, family uint8) netip.Addr {
	a := netip.AddrFrom16(b)
	if family == 4 {
		return a.Unmap()
	}
	return a
}
