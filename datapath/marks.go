package datapath

import "github.com/moatnet/moat/policy"

// The mark layout is policy's (policy/marks.go). These aliases keep the
// older datapath names that TestProxyMark in keys_test.go still uses; new
// code calls policy directly.
const (
	MarkMagicMask   = policy.MarkMagicMask
	MarkToProxy     = policy.MarkToProxy
	MaxMarkIdentity = policy.MaxMarkIdentity
)

// ProxyMark is policy.ProxyMark with ok false where that fails.
func ProxyMark(direction policy.Direction, id policy.ID) (mark uint32, ok bool) {
	m, err := policy.ProxyMark(direction, id)
	return m, err == nil
}

// MarkIdentity is policy.DecodeProxyMark.
func MarkIdentity(mark uint32) (policy.Direction, policy.ID, bool) {
	return policy.DecodeProxyMark(mark)
}

// ToProxyMark is policy.ToProxyMark.
func ToProxyMark(port uint16) uint32 { return policy.ToProxyMark(port) }
