package datapath

import (
	"fmt"
	"maps"
	"net/netip"

	"github.com/moatnet/moat/policy"
)

// syncmodel_test.go is a Go reference of what the BPF programs decide for
// the first packet of a flow (bpf/moat.c handle(), bpf/policy.h), over an
// in-memory copy of the maps (a syncState), and the map operations of
// syncplan.go applied to it. It has no kernel in it: the property test of
// Sync's order runs in plain `go test`.

// modelState copies the parts of s that decide packets.
func modelState(s *syncState) *syncState {
	return &syncState{
		endpoints: maps.Clone(s.endpoints),
		policy:    maps.Clone(s.policy),
		ipcache:   maps.Clone(s.ipcache),
		local:     maps.Clone(s.local),
		names:     map[uint32]EndpointKey{},
	}
}

func emptyModel() *syncState {
	return &syncState{
		endpoints: map[uint32]moatEndpointConfig{},
		policy:    map[PolicyKey]PolicyValue{},
		ipcache:   map[netip.Prefix]policy.ID{},
		local:     map[netip.Addr]uint32{},
		names:     map[uint32]EndpointKey{},
	}
}

// modelApply performs one operation on the model (revisions are not
// modelled: they only decide when a tracked flow re-checks, and a re-check
// is the same decision as a first packet's).
func modelApply(s *syncState, op syncOp) {
	switch op.Kind {
	case opPutPolicy:
		s.policy[op.Key] = op.Value
	case opDeletePolicy:
		delete(s.policy, op.Key)
	case opPutIPCache:
		s.ipcache[op.Prefix] = op.Identity
	case opDeleteIPCache:
		delete(s.ipcache, op.Prefix)
	case opPutEndpoint:
		cfg := op.Config
		cfg.IngressRev, cfg.EgressRev = 0, 0
		s.endpoints[op.Endpoint] = cfg
	case opDeleteEndpoint:
		delete(s.endpoints, op.Endpoint)
	case opPutLocal:
		s.local[op.Addr] = op.Endpoint
	case opDeleteLocal:
		delete(s.local, op.Addr)
	case opDeleteMisplaced:
	}
}


// modelIdentity is ipcache_identity: the exact-match host entry, else the
// longest trie prefix holding the (IPv4-mapped) address, else world.
func modelIdentity(s *syncState, a netip.Addr) policy.ID {
	if id, ok := s.ipcache[netip.PrefixFrom(a, a.BitLen())]; ok {
		return id
	}
	m := netip.AddrFrom16(a.As16())
	best, id := -1, policy.IDWorld
	for p, pid := range s.ipcache {
		if isHostPrefix(p) {
			continue
		}
		if mp := mapped(p); mp.Contains(m) && mp.Bits() > best {
			best, id = mp.Bits(), pid
		}
	}
	return id
}

type modelRes struct {
	verdict   policy.Verdict
	proxyPort uint16
}

// modelTake is policy_take: a strictly higher verdict replaces the result.
func modelTake(v PolicyValue, res *modelRes) {
	if v.Verdict > res.verdict {
		*res = modelRes{verdict: v.Verdict, proxyPort: v.ProxyPort}
	}
}

// modelShape is policy_shape: the hash entry for the port, else (with
// ranges) the trie block holding the port, else the every-port entry.
func modelShape(s *syncState, k PolicyKey, port int, ranges bool, res *modelRes) {
	if port >= 0 && k.Proto != policy.ProtoAny {
		k.Ports = PortPrefix{Port: uint16(port), Bits: 16}
		if v, ok := s.policy[k]; ok {
			modelTake(v, res)
			return
		}
		if ranges {
			for bits := uint8(15); bits >= 1; bits-- {
				k.Ports = PortPrefix{Port: uint16(port) &^ (uint16(0xffff) >> bits), Bits: bits}
				if v, ok := s.policy[k]; ok {
					modelTake(v, res)
					return
				}
			}
		}
	}
	k.Ports = PortPrefix{}
	if v, ok := s.policy[k]; ok {
		modelTake(v, res)
	}
}

// pkt is a first packet: at endpoint ep (ifindex), in dir, from or to
// the remote address, with a protocol and destination port.
type pkt struct {
	ep     uint32
	dir    policy.Direction
	remote netip.Addr
	proto  policy.Protocol
	port   uint16
}

func (p pkt) String() string {
	return fmt.Sprintf("ep=%d %s remote=%s %s/%d", p.ep, p.dir, p.remote, p.proto, p.port)
}

// modelDecide is handle()'s decision for a new flow that does not come
// from a proxy: "drop", "allow" or "redirect:<port>".
func modelDecide(s *syncState, remote policy.ID, p pkt) string {
	cfg, ok := s.endpoints[p.ep]
	if !ok {
		return "drop" // DROP_NO_ENDPOINT
	}
	var res modelRes
	if cfg.Flags&flagFor(p.dir, epFlagIngressEntries, epFlagEgressEntries) != 0 {
		shapes := uint32(shapeL3L4 | shapeL3Only | shapeL4Only | shapeAll)
		ranges := true
		if cfg.Flags&epFlagShapes != 0 {
			shift := uint32(epShapesIngressShift)
			if p.dir == policy.Egress {
				shift = epShapesEgressShift
			}
			shapes = cfg.Flags >> shift & 0xf
			ranges = cfg.Flags&flagFor(p.dir, epFlagIngressRanges, epFlagEgressRanges) != 0
		}
		k := PolicyKey{Endpoint: p.ep, Direction: p.dir, Identity: remote, Proto: p.proto}
		port := int(p.port)
		if shapes&shapeL3L4 != 0 {
			modelShape(s, k, port, ranges, &res)
		}
		k.Proto = policy.ProtoAny
		if shapes&shapeL3Only != 0 {
			modelShape(s, k, port, ranges, &res)
		}
		k.Identity, k.Proto = policy.IDAny, p.proto
		if shapes&shapeL4Only != 0 {
			modelShape(s, k, port, ranges, &res)
		}
		k.Proto = policy.ProtoAny
		if shapes&shapeAll != 0 {
			modelShape(s, k, port, ranges, &res)
		}
	}
	switch res.verdict {
	case policy.VerdictDeny:
		return "drop"
	case policy.VerdictNone:
		if cfg.Flags&flagFor(p.dir, epFlagIngressEnforced, epFlagEgressEnforced) != 0 {
			return "drop"
		}
		return "allow"
	case policy.VerdictRedirect:
		if res.proxyPort == 0 {
			return "drop" // DROP_PROXY_UNAVAILABLE
		}
		return fmt.Sprintf("redirect:%d", res.proxyPort)
	}
	return "allow"
}

// decideAll decides every pkt; idx picks a subset (nil: all).
func decideAll(s *syncState, probes []pkt, addrs []netip.Addr, out []string, idx []int) {
	ids := make(map[netip.Addr]policy.ID, len(addrs))
	for _, a := range addrs {
		ids[a] = modelIdentity(s, a)
	}
	if idx == nil {
		for i, p := range probes {
			out[i] = modelDecide(s, ids[p.remote], p)
		}
		return
	}
	for _, i := range idx {
		out[i] = modelDecide(s, ids[probes[i].remote], probes[i])
	}
}
