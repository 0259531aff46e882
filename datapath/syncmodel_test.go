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

// mapModel is the maps' content: a syncState, plus the policy entries
// under a packed key (fast to hash) and, per (endpoint, direction,
// identity, protocol), how many range blocks of each length it holds, so
// that a trie lookup tries only the lengths present.
type mapModel struct {
	s      *syncState
	pol    map[[2]uint64]PolicyValue
	ranges map[[2]uint64]*[17]int32
}

func packKey(k PolicyKey) [2]uint64 {
	return [2]uint64{uint64(k.Endpoint)<<32 | uint64(k.Direction)<<31 | uint64(k.Proto)<<23 | uint64(k.Ports.Bits)<<16 | uint64(k.Ports.Port), uint64(k.Identity)}
}

func packGroup(k PolicyKey) [2]uint64 {
	return [2]uint64{uint64(k.Endpoint)<<32 | uint64(k.Direction)<<31 | uint64(k.Proto)<<23, uint64(k.Identity)}
}

func newModel(s *syncState) *mapModel {
	m := &mapModel{
		s: &syncState{
			endpoints: map[uint32]moatEndpointConfig{},
			policy:    map[PolicyKey]PolicyValue{},
			ipcache:   map[netip.Prefix]policy.ID{},
			local:     map[netip.Addr]uint32{},
			names:     map[uint32]EndpointKey{},
		},
		pol:    map[[2]uint64]PolicyValue{},
		ranges: map[[2]uint64]*[17]int32{},
	}
	maps.Copy(m.s.endpoints, s.endpoints)
	maps.Copy(m.s.ipcache, s.ipcache)
	maps.Copy(m.s.local, s.local)
	for k, v := range s.policy {
		m.put(k, v)
	}
	return m
}

func (m *mapModel) put(k PolicyKey, v PolicyValue) {
	if _, ok := m.s.policy[k]; !ok && !k.inHash() {
		g := packGroup(k)
		if m.ranges[g] == nil {
			m.ranges[g] = &[17]int32{}
		}
		m.ranges[g][k.Ports.Bits]++
	}
	m.s.policy[k] = v
	m.pol[packKey(k)] = v
}

func (m *mapModel) delete(k PolicyKey) {
	if _, ok := m.s.policy[k]; ok && !k.inHash() {
		m.ranges[packGroup(k)][k.Ports.Bits]--
	}
	delete(m.s.policy, k)
	delete(m.pol, packKey(k))
}

// apply performs one operation on the model and reports whether it
// changed anything (revisions are not modelled: they only decide when a
// tracked flow re-checks, and a re-check is the same decision as a first
// packet's).
func (m *mapModel) apply(op syncOp) bool {
	s := m.s
	switch op.Kind {
	case opPutPolicy:
		if v, ok := s.policy[op.Key]; ok && v == op.Value {
			return false
		}
		m.put(op.Key, op.Value)
	case opDeletePolicy:
		if _, ok := s.policy[op.Key]; !ok {
			return false
		}
		m.delete(op.Key)
	case opPutIPCache:
		if id, ok := s.ipcache[op.Prefix]; ok && id == op.Identity {
			return false
		}
		s.ipcache[op.Prefix] = op.Identity
	case opDeleteIPCache:
		if _, ok := s.ipcache[op.Prefix]; !ok {
			return false
		}
		delete(s.ipcache, op.Prefix)
	case opPutEndpoint:
		cfg := op.Config
		cfg.IngressRev, cfg.EgressRev = 0, 0
		if c, ok := s.endpoints[op.Endpoint]; ok && c == cfg {
			return false
		}
		s.endpoints[op.Endpoint] = cfg
	case opDeleteEndpoint:
		if _, ok := s.endpoints[op.Endpoint]; !ok {
			return false
		}
		delete(s.endpoints, op.Endpoint)
	case opPutLocal:
		s.local[op.Addr] = op.Endpoint
		return false // local delivery serves tracked flows only
	case opDeleteLocal:
		delete(s.local, op.Addr)
		return false
	}
	return true
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
func (m *mapModel) shape(k PolicyKey, port int, ranges bool, res *modelRes) {
	if port >= 0 && k.Proto != policy.ProtoAny {
		k.Ports = PortPrefix{Port: uint16(port), Bits: 16}
		if v, ok := m.pol[packKey(k)]; ok {
			modelTake(v, res)
			return
		}
		if n := m.ranges[packGroup(k)]; ranges && n != nil {
			for bits := uint8(15); bits >= 1; bits-- {
				if n[bits] == 0 {
					continue
				}
				k.Ports = PortPrefix{Port: uint16(port) &^ (uint16(0xffff) >> bits), Bits: bits}
				if v, ok := m.pol[packKey(k)]; ok {
					modelTake(v, res)
					return
				}
			}
		}
	}
	k.Ports = PortPrefix{}
	if v, ok := m.pol[packKey(k)]; ok {
		modelTake(v, res)
	}
}

// pkt is a first packet: at endpoint ep (ifindex), in dir, from or to
// the remote address, with a protocol and destination port.
type pkt struct {
	ep     uint32
	dir    policy.Direction
	remote netip.Addr
	addr   int // index of remote in the address list
	proto  policy.Protocol
	port   uint16
}

func (p pkt) String() string {
	return fmt.Sprintf("ep=%d %s remote=%s %s/%d", p.ep, p.dir, p.remote, p.proto, p.port)
}

// outcome is a packet's fate: outDrop, outAllow, or outRedirect|port.
type outcome uint32

const (
	outDrop     outcome = 0
	outAllow    outcome = 1
	outRedirect outcome = 1 << 16
)

func (o outcome) String() string {
	switch {
	case o == outDrop:
		return "drop"
	case o == outAllow:
		return "allow"
	}
	return fmt.Sprintf("redirect:%d", uint16(o))
}

// decide is handle()'s decision for a new flow that does not come from a
// proxy.
func (m *mapModel) decide(remote policy.ID, p pkt) outcome {
	cfg, ok := m.s.endpoints[p.ep]
	if !ok {
		return outDrop // DROP_NO_ENDPOINT
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
			m.shape(k, port, ranges, &res)
		}
		k.Proto = policy.ProtoAny
		if shapes&shapeL3Only != 0 {
			m.shape(k, port, ranges, &res)
		}
		k.Identity, k.Proto = policy.IDAny, p.proto
		if shapes&shapeL4Only != 0 {
			m.shape(k, port, ranges, &res)
		}
		k.Proto = policy.ProtoAny
		if shapes&shapeAll != 0 {
			m.shape(k, port, ranges, &res)
		}
	}
	switch res.verdict {
	case policy.VerdictDeny:
		return outDrop
	case policy.VerdictNone:
		if cfg.Flags&flagFor(p.dir, epFlagIngressEnforced, epFlagEgressEnforced) != 0 {
			return outDrop
		}
		return outAllow
	case policy.VerdictRedirect:
		if res.proxyPort == 0 {
			return outDrop // DROP_PROXY_UNAVAILABLE
		}
		return outRedirect | outcome(res.proxyPort)
	}
	return outAllow
}

// decideAll decides every pkt; idx picks a subset (nil: all).
func (m *mapModel) decideAll(probes []pkt, addrs []netip.Addr, out []outcome, idx []int) {
	ids := make([]policy.ID, len(addrs))
	known := make([]bool, len(addrs))
	id := func(p pkt) policy.ID {
		if !known[p.addr] {
			ids[p.addr], known[p.addr] = modelIdentity(m.s, addrs[p.addr]), true
		}
		return ids[p.addr]
	}
	if idx == nil {
		for i, p := range probes {
			out[i] = m.decide(id(p), p)
		}
		return
	}
	for _, i := range idx {
		out[i] = m.decide(id(probes[i]), probes[i])
	}
}
