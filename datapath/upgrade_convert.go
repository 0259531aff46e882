package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Conversions of map entries from an earlier layout to this build's, for
// state that the Plan cannot rebuild (connection tracking). A conversion
// names the layouts it converts from and to (layoutOf of key and value);
// when this build's layout is not its target any more, it does not apply
// and the map starts empty (see upgrade.go for what that costs), so a
// layout change in bpf/ never meets a stale conversion.
//
// A change of meaning without a change of layout is invisible here: when
// the meaning of a map's entries changes, change its layout too (rename the
// member whose meaning changed).
type conversion struct {
	map_               string
	fromKey, fromValue string
	toKey, toValue     string
	convert            func(key, value []byte) (newKey, newValue any, ok bool)
	description        string
}

// Layouts of moat_ct.
const (
	ctKeyLayout = "{saddr@0=[16]i1 daddr@128=[16]i1 sport@256=i2 dport@272=i2 proto@288=i1 direction@296=i1 pad@304=i2 endpoint@320=i4}"
	// Before 2ce991d: no counter slot, and (until 4e3a0fc) one entry per
	// direction, expiry in seconds.
	ctValueLayoutPad    = "{expires@0=i8 rule@64=i4 remote_identity@96=i4 revision@128=i4 proxy_port@160=i2 verdict@176=i1 flags@184=i1 l7@192=i1 match@200=i1 pad@208=i2 generation@224=i4}"
	ctValueLayoutEpSlot = "{expires@0=i8 rule@64=i4 remote_identity@96=i4 revision@128=i4 proxy_port@160=i2 verdict@176=i1 flags@184=i1 l7@192=i1 match@200=i1 ep_slot@208=i2 generation@224=i4}"
)

var conversions = []conversion{
	{
		map_: "moat_ct", fromKey: ctKeyLayout, fromValue: ctValueLayoutPad, toKey: ctKeyLayout, toValue: ctValueLayoutEpSlot,
		convert:     convertCTPerDirection,
		description: "per-direction entries (expiry in seconds) to one canonical entry per flow and endpoint (expiry in ticks)",
	},
}

// findConversion returns the conversion of pinned map m (named name) to
// spec ms, or nil.
func findConversion(name string, ms *ebpf.MapSpec, m *ebpf.Map) *conversion {
	if ms.Key == nil || ms.Value == nil {
		return nil
	}
	key, value, ok, err := pinnedBTF(m)
	if err != nil || !ok || key == nil {
		return nil
	}
	fk, fv, tk, tv := layoutOf(key), layoutOf(value), layoutOf(ms.Key), layoutOf(ms.Value)
	for i := range conversions {
		c := &conversions[i]
		if c.map_ == name && c.fromKey == fk && c.fromValue == fv && c.toKey == tk && c.toValue == tv {
			return c
		}
	}
	return nil
}

// convertEntries converts every entry of from into to; with keep, an entry
// already in to (the new programs made it) stays as it is.
func convertEntries(c *conversion, from, to *ebpf.Map, keep bool) (int, error) {
	return moveEntries(from, to, keep, c.convert)
}

// moveEntries writes every entry of from into to, through convert when it
// is set (an entry it refuses is left behind); with keep, an entry already
// in to stays as it is.
func moveEntries(from, to *ebpf.Map, keep bool, convert func(k, v []byte) (any, any, bool)) (int, error) {
	key := make([]byte, from.KeySize())
	val := make([]byte, from.ValueSize())
	flags := ebpf.UpdateAny
	if keep {
		flags = ebpf.UpdateNoExist
	}
	n := 0
	it := from.Iterate()
	for it.Next(&key, &val) {
		var nk, nv any = key, val
		if convert != nil {
			var ok bool
			if nk, nv, ok = convert(key, val); !ok {
				continue
			}
		}
		err := to.Update(nk, nv, flags)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("write entry: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("iterate: %w", err)
	}
	return n, nil
}

// oldCTEntry is struct ct_entry before 2ce991d.
type oldCTEntry struct {
	Expires        uint64 // seconds of the coarse monotonic clock
	Rule           uint32
	RemoteIdentity uint32
	Revision       uint32
	ProxyPort      uint16
	Verdict        uint8
	Flags          uint8
	L7             uint8
	Match          uint8
	Pad            uint16
	Generation     uint32
}

// Flags of struct ct_entry that kept their meaning (bpf/moat.h, proxy.h).
const (
	ctFlagsKept      = 1<<0 | 1<<1 | 1<<2 | 1<<3 // REPLY_SEEN, CLOSING, FROM_PROXY, TO_INGRESS_PROXY
	ctFlagOrigEgress = 1 << 6
	ctFlagOrigSwap   = 1 << 7
	dirEgress        = 1 // DIR_EGRESS
)

// convertCTPerDirection converts an entry of the per-direction layout: the
// key was the flow's first packet's tuple, its direction and endpoint;
// today's key is the tuple in canonical order (ct_canon in bpf/ct.h) with
// direction 0, and the entry's CT_F_ORIG_* flags say how the first packet
// was seen. Revision and generation are zeroed, so that the new programs
// re-check each converted flow against the new maps at its next packet in
// the flow's direction (replies pass on the entry, as before the upgrade).
func convertCTPerDirection(key, value []byte) (any, any, bool) {
	var k moatCtKey
	var v oldCTEntry
	if binary.Read(bytes.NewReader(key), binary.NativeEndian, &k) != nil ||
		binary.Read(bytes.NewReader(value), binary.NativeEndian, &v) != nil {
		return nil, nil, false
	}
	nk, swapped := ctCanon(k)
	flags := v.Flags & ctFlagsKept
	if k.Direction == dirEgress {
		flags |= ctFlagOrigEgress
	}
	if swapped {
		flags |= ctFlagOrigSwap
	}
	nv := moatCtEntry{
		Expires:        uint64(v.Expires) * 1e9 >> ctTickShift,
		Rule:           v.Rule,
		RemoteIdentity: v.RemoteIdentity,
		ProxyPort:      v.ProxyPort,
		Verdict:        v.Verdict,
		Flags:          flags,
		L7:             v.L7,
		Match:          v.Match,
	}
	return &nk, &nv, true
}

// ctCanon is ct_canon of bpf/ct.h: the tuple with the lower (address,
// port) side first, direction 0; swapped says the sides were exchanged.
// Addresses compare as two native-endian 64-bit words each, ports as
// stored, as the program compares them.
func ctCanon(k moatCtKey) (moatCtKey, bool) {
	s0, s1 := binary.NativeEndian.Uint64(k.Saddr[:8]), binary.NativeEndian.Uint64(k.Saddr[8:])
	d0, d1 := binary.NativeEndian.Uint64(k.Daddr[:8]), binary.NativeEndian.Uint64(k.Daddr[8:])
	var swapped bool
	switch {
	case s0 != d0:
		swapped = s0 > d0
	case s1 != d1:
		swapped = s1 > d1
	default:
		swapped = k.Sport > k.Dport
	}
	out := moatCtKey{Proto: k.Proto, Endpoint: k.Endpoint}
	if swapped {
		out.Saddr, out.Daddr, out.Sport, out.Dport = k.Daddr, k.Saddr, k.Dport, k.Sport
	} else {
		out.Saddr, out.Daddr, out.Sport, out.Dport = k.Saddr, k.Daddr, k.Sport, k.Dport
	}
	return out, swapped
}
