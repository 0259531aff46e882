package datapath

import "github.com/moatnet/moat/policy"

// Packet marks (skb->mark). moat owns the nibble mark&0x0F00; nothing else
// on the node may use it.
//
//	0x0200  to-proxy: set by the datapath on packets it assigns to a proxy
//	        socket; the proxy port is in the upper 16 bits. A policy routing
//	        rule (fwmark 0x200/0xf00 -> table with local 0/0 dev lo) delivers
//	        them locally.
//	0x0A00  leaving the ingress proxy: the proxy's upstream socket sets it
//	        (SO_MARK) with the source identity packed; the datapath takes the
//	        remote identity from it and never redirects the flow again.
//	0x0B00  leaving the egress proxy: likewise; the destination's ingress
//	        policy still applies (including its ingress proxy).
//
// Identity packing (28 bits): id bits 0-15 in mark bits 16-31, id bits 16-23
// in mark bits 0-7, id bits 24-27 in mark bits 12-15 (so node-local
// identities, bit 24, fit).
const (
	MarkMagicMask        uint32    = 0x0F00
	MarkToProxy          uint32    = 0x0200
	MarkFromIngressProxy uint32    = 0x0A00
	MarkFromEgressProxy  uint32    = 0x0B00
	markIdentityMaxBits            = 28
	MaxMarkIdentity      policy.ID = 1<<markIdentityMaxBits - 1
)

// ProxyMark returns the SO_MARK for a proxy's upstream socket carrying the
// source identity id: direction is the proxy's (Ingress proxy or Egress
// proxy). ok is false when id does not fit in 28 bits.
func ProxyMark(direction policy.Direction, id policy.ID) (mark uint32, ok bool) {
	if id > MaxMarkIdentity {
		return 0, false
	}
	magic := MarkFromIngressProxy
	if direction == policy.Egress {
		magic = MarkFromEgressProxy
	}
	v := uint32(id)
	return magic | (v&0xffff)<<16 | (v>>16)&0xff | (v>>24&0xf)<<12, true
}

// MarkIdentity unpacks the source identity of a proxy mark; ok is false when
// the mark is not a from-proxy mark.
func MarkIdentity(mark uint32) (direction policy.Direction, id policy.ID, ok bool) {
	switch mark & MarkMagicMask {
	case MarkFromIngressProxy:
		direction = policy.Ingress
	case MarkFromEgressProxy:
		direction = policy.Egress
	default:
		return 0, 0, false
	}
	return direction, policy.ID(mark>>16 | (mark&0xff)<<16 | (mark>>12&0xf)<<24), true
}

// ToProxyMark returns the mark the datapath sets on packets it hands to the
// proxy listening on port.
func ToProxyMark(port uint16) uint32 { return MarkToProxy | uint32(port)<<16 }
