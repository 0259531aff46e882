package policy

import "fmt"

// Packet marks (skb->mark, SO_MARK) shared by the datapath and the L7
// proxies: this file is the one Go definition of the layout (bpf/moat.h
// repeats the constants for C). moat owns the magic nibble mark & 0x0F00,
// which says what the rest of the mark means; nothing else on the node may
// use those bits. Marks carry identities, which this package owns.
//
// To-proxy (set by the tc program on a packet it assigns to a proxy socket;
// a policy routing rule, fwmark 0x200/0xf00 to a table with local 0/0 dev
// lo, delivers it locally):
//
//	bits 31..16  proxy port
//	bits 11..8   0x2 (MarkToProxy)
//	other bits   zero
//
// From-proxy (set with SO_MARK on a proxy's upstream sockets; the datapath
// takes the remote identity from it and never redirects the flow again):
//
//	bits 31..16  source identity bits 15..0
//	bits 15..12  source identity bits 27..24 (bit 24 is IDLocalFlag)
//	bits 11..8   0xA (left the ingress proxy) or 0xB (left the egress proxy;
//	             the destination's ingress policy, and its ingress proxy,
//	             still apply)
//	bits  7..0   source identity bits 23..16
//
// so that, in C,
//
//	id = (mark >> 16) | ((mark & 0xFF) << 16) | (((mark >> 12) & 0xF) << 24);
//
// Identities above MaxMarkIdentity (28 bits) cannot be carried. For ingress
// the proxy does not know the source identity when it opens the upstream
// connection: the identity field is IDUnknown and means "already allowed by
// this endpoint's ingress policy at the proxy; the source is in the access
// log".
const (
	MarkMagicMask        uint32 = 0x0F00
	MarkToProxy          uint32 = 0x0200
	MarkFromIngressProxy uint32 = 0x0A00
	MarkFromEgressProxy  uint32 = 0x0B00

	// MaxMarkIdentity is the largest identity a from-proxy mark carries.
	MaxMarkIdentity ID = 1<<28 - 1
)

// ToProxyMark returns the mark the datapath sets on a packet it hands to
// the proxy listening on port.
func ToProxyMark(port uint16) uint32 { return uint32(port)<<16 | MarkToProxy }

// ProxyMark returns the mark of traffic leaving the proxy of direction d
// (Ingress or Egress proxy) on behalf of source identity id. It fails when
// id is above MaxMarkIdentity.
func ProxyMark(d Direction, id ID) (uint32, error) {
	if id > MaxMarkIdentity {
		return 0, fmt.Errorf("pack identity %d into mark: above the 28-bit limit", uint32(id))
	}
	magic := MarkFromIngressProxy
	if d == Egress {
		magic = MarkFromEgressProxy
	}
	v := uint32(id)
	return (v&0xFFFF)<<16 | (v>>24&0xF)<<12 | magic | (v>>16)&0xFF, nil
}

// DecodeProxyMark is the inverse of ProxyMark. ok is false when the mark's
// nibble is not a from-proxy nibble.
func DecodeProxyMark(mark uint32) (d Direction, id ID, ok bool) {
	switch mark & MarkMagicMask {
	case MarkFromIngressProxy:
		d = Ingress
	case MarkFromEgressProxy:
		d = Egress
	default:
		return 0, 0, false
	}
	return d, ID(mark>>16 | (mark&0xFF)<<16 | (mark>>12&0xF)<<24), true
}
