package envoy

import (
	"fmt"

	"github.com/moatnet/moat/policy"
)

// Socket marks shared by the proxy and the datapath. The magic nibble
// (mark & MarkMagicMask) says what the rest of the mark means; nothing else on
// the node may use these bits.
//
// To-proxy (set by the tc program on a redirected packet):
//
//	bits 31..16  proxy port
//	bits 11..8   0x2 (MarkMagicToProxy)
//	other bits   zero
//
// From-proxy (set with SO_MARK on the proxy's upstream sockets):
//
//	bits 31..16  source identity bits 15..0
//	bits 15..12  source identity bits 27..24 (bit 24 is policy.IDLocalFlag)
//	bits 11..8   0xA (left the ingress proxy) or 0xB (left the egress proxy)
//	bits  7..0   source identity bits 23..16
//
// so that, in C,
//
//	id = (mark >> 16) | ((mark & 0xFF) << 16) | (((mark >> 12) & 0xF) << 24);
//
// Identities above MaxMarkIdentity (28 bits) cannot be carried. A packet
// with a from-proxy nibble has already been through the proxy of that
// direction and must never be redirected again. For ingress the proxy does
// not know the source identity when it opens the upstream connection (see
// cluster.go): the identity field is policy.IDUnknown and means "already
// allowed by this endpoint's ingress policy at the proxy; the source is in
// the access log".
const (
	MarkMagicMask        uint32 = 0x0F00
	MarkMagicToProxy     uint32 = 0x0200
	MarkMagicFromIngress uint32 = 0x0A00
	MarkMagicFromEgress  uint32 = 0x0B00

	// MaxMarkIdentity is the largest identity a from-proxy mark carries.
	MaxMarkIdentity policy.ID = 1<<28 - 1
)

// ToProxyMark returns the mark the datapath sets on a packet it redirects
// to the proxy listening on port.
func ToProxyMark(port uint16) uint32 {
	return uint32(port)<<16 | MarkMagicToProxy
}

// ProxyMark returns the mark of traffic leaving the proxy of direction d on
// behalf of source identity id.
func ProxyMark(d policy.Direction, id policy.ID) (uint32, error) {
	if id > MaxMarkIdentity {
		return 0, fmt.Errorf("pack identity %d into mark: above the 28-bit limit", uint32(id))
	}
	magic := MarkMagicFromIngress
	if d == policy.Egress {
		magic = MarkMagicFromEgress
	}
	v := uint32(id)
	return (v&0xFFFF)<<16 | ((v>>24)&0xF)<<12 | magic | (v>>16)&0xFF, nil
}

// DecodeProxyMark is the inverse of ProxyMark. ok is false when the mark's
// nibble is not a from-proxy nibble.
func DecodeProxyMark(mark uint32) (d policy.Direction, id policy.ID, ok bool) {
	switch mark & MarkMagicMask {
	case MarkMagicFromIngress:
		d = policy.Ingress
	case MarkMagicFromEgress:
		d = policy.Egress
	default:
		return 0, 0, false
	}
	v := mark>>16 | (mark&0xFF)<<16 | ((mark>>12)&0xF)<<24
	return d, policy.ID(v), true
}
