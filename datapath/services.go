package datapath

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/moatnet/moat/policy"
)

// services.go is the pure half of Service translation: the table the
// sock_addr programs (bpf/sockaddr.c) read, as a spec (Services), and the
// plan that turns the installed table into the desired one with map writes
// in a safe order. sockaddr.go applies the plan.

// Frontend is one Service frontend: a virtual address (ClusterIP), a port
// and a protocol (TCP or UDP).
type Frontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto policy.Protocol
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(f.Addr, f.Port), protoName(f.Proto))
}

func protoName(p policy.Protocol) string {
	switch p {
	case policy.ProtoTCP:
		return "tcp"
	case policy.ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", p)
}

// Services is the Service table: each frontend's backends (ready endpoint
// addresses and ports). A frontend with no backend refuses connections
// (ECONNREFUSED), as kube-proxy rejects a Service without endpoints.
type Services map[Frontend][]netip.AddrPort

// MaxBackendsPerService bounds one frontend's backends; MaxServices the
// frontends and MaxServiceBackends all backends together (the maps' sizes
// in bpf/sockaddr.c).
const (
	MaxBackendsPerService = 4096
	MaxServices           = 16384
	MaxServiceBackends    = 65536
)

// normalize returns the frontend with its address unmapped (an
// IPv4-mapped address is the IPv4 one).
func (f Frontend) normalize() Frontend {
	f.Addr = f.Addr.Unmap().WithZone("")
	return f
}

// Validate reports what is wrong with the table, naming the frontend and
// backend: invalid or unspecified addresses, port 0, a protocol other than
// TCP or UDP, a backend of another family than its frontend, too many
// backends.
func (s Services) Validate() error {
	var errs []error
	total := 0
	if len(s) > MaxServices {
		errs = append(errs, fmt.Errorf("services: %d frontends, more than %d", len(s), MaxServices))
	}
	for _, f := range slices.SortedFunc(maps.Keys(s), compareFrontend) {
		bes := s[f]
		n := f.normalize()
		switch {
		case !f.Addr.IsValid() || f.Addr.IsUnspecified():
			errs = append(errs, fmt.Errorf("service %s: frontend address must be a unicast address", f))
		case f.Port == 0:
			errs = append(errs, fmt.Errorf("service %s: frontend port must not be 0", f))
		case f.Proto != policy.ProtoTCP && f.Proto != policy.ProtoUDP:
			errs = append(errs, fmt.Errorf("service %s: protocol must be tcp or udp", f))
		}
		if len(bes) > MaxBackendsPerService {
			errs = append(errs, fmt.Errorf("service %s: %d backends, more than %d", f, len(bes), MaxBackendsPerService))
		}
		total += len(bes)
		for _, b := range bes {
			a := b.Addr().Unmap()
			switch {
			case !b.IsValid() || a.IsUnspecified():
				errs = append(errs, fmt.Errorf("service %s: backend %s: address must be a unicast address", f, b))
			case b.Port() == 0:
				errs = append(errs, fmt.Errorf("service %s: backend %s: port must not be 0", f, b))
			case a.Is4() != n.Addr.Is4():
				errs = append(errs, fmt.Errorf("service %s: backend %s: address family differs from the frontend's", f, b))
			}
		}
	}
	if total > MaxServiceBackends {
		errs = append(errs, fmt.Errorf("services: %d backends in all, more than %d", total, MaxServiceBackends))
	}
	return errors.Join(errs...)
}

// normalized returns the table with unmapped addresses and each
// frontend's backends deduplicated and sorted.
func (s Services) normalized() Services {
	out := make(Services, len(s))
	for f, bes := range s {
		f = f.normalize()
		set := map[netip.AddrPort]bool{}
		for _, b := range out[f] {
			set[b] = true
		}
		for _, b := range bes {
			set[netip.AddrPortFrom(b.Addr().Unmap().WithZone(""), b.Port())] = true
		}
		out[f] = slices.SortedFunc(maps.Keys(set), netip.AddrPort.Compare)
	}
	return out
}

func compareFrontend(a, b Frontend) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}

// installedService is a frontend as the maps hold it: its id, revision and
// backend slots (an invalid AddrPort is a slot below the count that is
// missing from moat_svc_be).
type installedService struct {
	id    uint32
	rev   uint32
	slots []netip.AddrPort
}

// svcTable is the installed table, plus backend entries that no frontend
// uses (left by an interrupted sync: deleted by the next one).
type svcTable struct {
	svcs    map[Frontend]installedService
	orphans []svcSlot
}

type svcSlot struct {
	id, slot uint32
}

type svcOpKind uint8

const (
	opWriteSlot svcOpKind = iota // write backend at (id, slot)
	opWriteSvc                   // write frontend → (id, count, rev)
	opDelSvc                     // delete frontend
	opDelSlot                    // delete (id, slot)
)

// svcOp is one map write of a plan.
type svcOp struct {
	kind    svcOpKind
	fe      Frontend
	id      uint32
	slot    uint32
	backend netip.AddrPort // opWriteSlot
	count   uint16         // opWriteSvc
	rev     uint32         // opWriteSvc
}

// planServices returns the map writes that turn cur into want, in this
// order per frontend, so that a reader (a connect() in flight) never finds
// a frontend whose backends are gone while it has some before and after:
//
//  1. backend slots are written first: slots at or above the installed
//     count are not read yet, and a slot below it changes from one backend
//     to another in one update (a backend that stays keeps its slot when
//     the slot still exists);
//  2. then the frontend's count (and revision);
//  3. then the slots at or above the new count are deleted.
//
// A removed frontend is deleted before its slots. New frontends take ids
// after next (skipping ids in use), so an id freed in this plan is not
// reused by it. planServices returns the ops, the table after them and
// the last id it gave.
func planServices(cur svcTable, want Services, next uint32) ([]svcOp, map[Frontend]installedService, uint32, error) {
	if err := want.Validate(); err != nil {
		return nil, nil, next, err
	}
	want = want.normalized()
	used := map[uint32]bool{}
	for _, s := range cur.svcs {
		used[s.id] = true
	}
	for _, o := range cur.orphans {
		used[o.id] = true
	}
	after := make(map[Frontend]installedService, len(want))
	var ops, dels []svcOp
	for _, f := range slices.SortedFunc(maps.Keys(want), compareFrontend) {
		bes := want[f]
		old, had := cur.svcs[f]
		if !had {
			for {
				next++
				if next == 0 {
					next = 1
				}
				if !used[next] {
					break
				}
			}
			used[next] = true
			old = installedService{id: next}
		}
		slots := assignSlots(old.slots, bes)
		changed := !had || len(slots) != len(old.slots)
		for i, b := range slots {
			if i < len(old.slots) && old.slots[i] == b {
				continue
			}
			changed = true
			ops = append(ops, svcOp{kind: opWriteSlot, fe: f, id: old.id, slot: uint32(i), backend: b})
		}
		rev := old.rev
		if changed {
			rev++
			ops = append(ops, svcOp{kind: opWriteSvc, fe: f, id: old.id, count: uint16(len(slots)), rev: rev})
		}
		for i := len(slots); i < len(old.slots); i++ {
			ops = append(ops, svcOp{kind: opDelSlot, fe: f, id: old.id, slot: uint32(i)})
		}
		after[f] = installedService{id: old.id, rev: rev, slots: slots}
	}
	for _, f := range slices.SortedFunc(maps.Keys(cur.svcs), compareFrontend) {
		if _, ok := want[f]; ok {
			continue
		}
		old := cur.svcs[f]
		dels = append(dels, svcOp{kind: opDelSvc, fe: f, id: old.id})
		for i := range old.slots {
			dels = append(dels, svcOp{kind: opDelSlot, fe: f, id: old.id, slot: uint32(i)})
		}
	}
	for _, o := range cur.orphans {
		dels = append(dels, svcOp{kind: opDelSlot, id: o.id, slot: o.slot})
	}
	return append(ops, dels...), after, next, nil
}

// assignSlots places the desired backends (sorted, distinct) in slots
// 0..len(want)-1: a backend that stays keeps its slot if the slot still
// exists; the others fill the free slots in order.
func assignSlots(old []netip.AddrPort, want []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, len(want))
	wanted := make(map[netip.AddrPort]bool, len(want))
	for _, b := range want {
		wanted[b] = true
	}
	placed := map[netip.AddrPort]bool{}
	for i, b := range old {
		if i < len(out) && b.IsValid() && wanted[b] && !placed[b] {
			out[i] = b
			placed[b] = true
		}
	}
	j := 0
	for i := range out {
		if out[i].IsValid() {
			continue
		}
		for placed[want[j]] {
			j++
		}
		out[i] = want[j]
		placed[want[j]] = true
	}
	return out
}
