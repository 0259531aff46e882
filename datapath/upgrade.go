package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Upgrades over pinned maps of another layout.
//
// Open compares every map this build pins with the map pinned under the
// same name: type, key and value size, max entries, flags, and (where both
// carry BTF) the key and value layout down to member names, offsets and
// sizes. When all match, the maps are reused and the programs swapped in
// place, as on any restart. When one differs, Open stages an upgrade
// instead of failing:
//
//   - every map whose layout differs, and every map that the Plan alone
//     fills (endpoints, policy, ipcache, local endpoints), is created anew
//     beside the pinned one, unpinned; the maps whose layout is the same
//     (connection tracking, counters, events, generation, when unchanged)
//     are shared with the running programs;
//   - the pinned links keep the previous programs, which keep enforcing
//     with the previous maps; Attach does not swap them;
//   - the first Sync that succeeds fills the new maps from the Plan, and
//     only then (finishUpgrade) the entries of state maps that have a
//     conversion are migrated, every link is swapped to the new programs
//     (link.Update: the old programs serve until the instant the new ones,
//     bound to the filled maps, take over), the entries the old programs
//     made meanwhile are migrated too, and the new maps' pins replace the
//     old ones (pinned beside them and renamed over them).
//
// State without a conversion (upgrade_convert.go) starts empty. For moat_ct that means the
// flows the old programs tracked are decided again by their next packet:
// a UDP, ICMP or other flow makes a new entry then; a TCP packet past the
// handshake is decided on its own by its direction's policy and leaves no
// entry (bpf/moat.c), so the replies of an established TCP flow into a
// direction whose policy does not allow them are dropped until the client
// reconnects. Entries are copied as they are when the key and value
// layouts are the same (only the size or flags changed), and converted when
// a conversion from the pinned layout to this build's is defined
// (upgrade_convert.go).
// Counters of a changed layout restart at zero; a changed ringbuf loses the
// events the old programs had not handed over yet.
//
// An agent that stops before its first Sync leaves the old pins and links
// as they were: the previous programs keep enforcing.

// planMaps are filled entirely from the Plan by Sync: an upgrade builds
// them anew so that Sync never edits a map the old programs read.
var planMaps = []string{"moat_endpoints", "moat_local_ep", "moat_policy", "moat_policy_h", "moat_ipcache", "moat_ipcache_h"}

// upgrade is a staged upgrade: the new maps wait, unpinned, for the first
// Sync.
type upgrade struct {
	stale map[string]string      // map name → why its pinned layout differs
	maps  map[string]*ebpf.Map   // new maps to pin at the swap, by name
	old   map[string]*ebpf.Map   // the pinned maps they replace
	copy  map[string]bool        // maps whose entries are copied at the swap
	conv  map[string]*conversion // maps whose entries are converted at the swap
	tc    map[linkKey]bool       // legacy tc attach points whose swap waits
	why   []string               // for the log
}

// layoutDiff says how the pinned map m differs from spec ms: "" when the
// programs built from ms can use m.
func layoutDiff(ms *ebpf.MapSpec, m *ebpf.Map) (string, error) {
	if err := ms.Compatible(m); err != nil {
		if !errors.Is(err, ebpf.ErrMapIncompatible) {
			return "", fmt.Errorf("compare pinned map %s: %w", ms.Name, err)
		}
		return err.Error(), nil
	}
	if ms.Key == nil && ms.Value == nil {
		return "", nil
	}
	key, value, ok, err := pinnedBTF(m)
	if err != nil {
		return "", fmt.Errorf("read the btf of pinned map %s: %w", ms.Name, err)
	}
	if !ok {
		return "", nil // no BTF to compare: the sizes decide
	}
	if ms.Key != nil && key != nil {
		if a, b := layoutOf(key), layoutOf(ms.Key); a != b {
			return fmt.Sprintf("key layout %s changed to %s", a, b), nil
		}
	}
	if ms.Value != nil && value != nil {
		if a, b := layoutOf(value), layoutOf(ms.Value); a != b {
			return fmt.Sprintf("value layout %s changed to %s", a, b), nil
		}
	}
	return "", nil
}

// layoutOf describes a BTF type by its memory layout: sizes, offsets and
// member names (a renamed member is a changed meaning), not type names.
func layoutOf(t btf.Type) string {
	var b strings.Builder
	writeLayout(&b, t, 0)
	return b.String()
}

func writeLayout(b *strings.Builder, t btf.Type, depth int) {
	if depth > 8 {
		b.WriteString("…")
		return
	}
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		fmt.Fprintf(b, "i%d", t.Size)
	case *btf.Enum:
		fmt.Fprintf(b, "e%d", t.Size)
	case *btf.Pointer:
		b.WriteString("p")
	case *btf.Array:
		fmt.Fprintf(b, "[%d]", t.Nelems)
		writeLayout(b, t.Type, depth+1)
	case *btf.Struct:
		writeMembers(b, "{", t.Members, depth)
	case *btf.Union:
		writeMembers(b, "u{", t.Members, depth)
	default:
		fmt.Fprintf(b, "%T", t)
	}
}

func writeMembers(b *strings.Builder, open string, ms []btf.Member, depth int) {
	b.WriteString(open)
	for i, m := range ms {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(b, "%s@%d", m.Name, m.Offset)
		if m.BitfieldSize > 0 {
			fmt.Fprintf(b, ":%d", m.BitfieldSize)
		}
		b.WriteString("=")
		writeLayout(b, m.Type, depth+1)
	}
	b.WriteString("}")
}

// mapInfo is the head of the kernel's struct bpf_map_info, up to the BTF
// type ids of key and value (which ebpf.MapInfo does not expose).
type mapInfo struct {
	Type, ID, KeySize, ValueSize, MaxEntries, MapFlags uint32
	Name                                               [16]byte
	Ifindex, BTFVmlinuxValueTypeID                     uint32
	NetnsDev, NetnsIno                                 uint64
	BTFID, BTFKeyTypeID, BTFValueTypeID, BTFVmlinuxID  uint32
}

// pinnedBTF returns the key and value types the map was created with; ok
// is false when it was created without BTF.
func pinnedBTF(m *ebpf.Map) (key, value btf.Type, ok bool, err error) {
	var info mapInfo
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(m.FD()), uint32(unsafe.Sizeof(info)), uint64(uintptr(unsafe.Pointer(&info)))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&info)
	if errno != 0 {
		return nil, nil, false, fmt.Errorf("get map info: %w", errno)
	}
	if info.BTFID == 0 || info.BTFValueTypeID == 0 {
		return nil, nil, false, nil
	}
	h, err := btf.NewHandleFromID(btf.ID(info.BTFID))
	if err != nil {
		return nil, nil, false, fmt.Errorf("load btf %d: %w", info.BTFID, err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return nil, nil, false, fmt.Errorf("parse btf %d: %w", info.BTFID, err)
	}
	if info.BTFKeyTypeID != 0 {
		if key, err = spec.TypeByID(btf.TypeID(info.BTFKeyTypeID)); err != nil {
			return nil, nil, false, fmt.Errorf("key type: %w", err)
		}
	}
	if value, err = spec.TypeByID(btf.TypeID(info.BTFValueTypeID)); err != nil {
		return nil, nil, false, fmt.Errorf("value type: %w", err)
	}
	return key, value, true, nil
}

// stageUpgrade compares the spec's pinned maps with those under root. When
// all match it returns nil and leaves spec alone. Otherwise it unpins (in
// the spec) the maps to build anew, so that loading spec creates them
// beside the pinned ones, and returns the staged upgrade; the caller
// fills it with the new maps once loaded (adoptUpgradeMaps).
func stageUpgrade(spec *ebpf.CollectionSpec, root string) (*upgrade, error) {
	up := &upgrade{stale: map[string]string{}, maps: map[string]*ebpf.Map{}, old: map[string]*ebpf.Map{}, copy: map[string]bool{}, conv: map[string]*conversion{}, tc: map[linkKey]bool{}}
	names := make([]string, 0, len(spec.Maps))
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	pinned := map[string]*ebpf.Map{}
	closeAll := func() {
		for _, m := range pinned {
			m.Close()
		}
	}
	for _, name := range names {
		m, err := ebpf.LoadPinnedMap(filepath.Join(root, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("load pinned map %s: %w", name, err)
		}
		pinned[name] = m
		why, err := layoutDiff(spec.Maps[name], m)
		if err != nil {
			closeAll()
			return nil, err
		}
		if why != "" {
			up.stale[name] = why
			up.why = append(up.why, name+": "+why)
		}
	}
	if len(up.stale) == 0 {
		closeAll()
		return nil, nil
	}
	for _, name := range names {
		m, ok := pinned[name]
		if !ok {
			continue // not pinned yet: created and pinned as usual
		}
		_, isStale := up.stale[name]
		if !isStale && !slices.Contains(planMaps, name) {
			m.Close() // shared with the running programs
			continue
		}
		up.old[name] = m
		spec.Maps[name].Pinning = ebpf.PinNone
		if !isStale {
			continue
		}
		if copyable(spec.Maps[name], m) {
			up.copy[name] = true
		} else if c := findConversion(name, spec.Maps[name], m); c != nil {
			up.conv[name] = c
		}
	}
	return up, nil
}

// copyable says whether the entries of pinned map m can be copied as they
// are into a new map of spec ms: same kind of hash map, same key and value
// layout (only the size or flags changed).
func copyable(ms *ebpf.MapSpec, m *ebpf.Map) bool {
	hashLike := func(t ebpf.MapType) bool { return t == ebpf.Hash || t == ebpf.LRUHash }
	if !hashLike(ms.Type) || !hashLike(m.Type()) || ms.KeySize != m.KeySize() || ms.ValueSize != m.ValueSize() {
		return false
	}
	if ms.Key == nil || ms.Value == nil {
		return false
	}
	key, value, ok, err := pinnedBTF(m)
	if err != nil || !ok || key == nil {
		return false
	}
	return layoutOf(key) == layoutOf(ms.Key) && layoutOf(value) == layoutOf(ms.Value)
}

// adoptUpgradeMaps records the freshly loaded, unpinned maps that the swap
// will pin.
func (up *upgrade) adoptUpgradeMaps(coll map[string]*ebpf.Map) error {
	for name := range up.old {
		m, ok := coll[name]
		if !ok {
			return fmt.Errorf("stage upgrade: map %s not loaded", name)
		}
		up.maps[name] = m
	}
	return nil
}

// close releases the old maps' descriptors (the pins stay).
func (up *upgrade) close() {
	for _, m := range up.old {
		m.Close()
	}
}

// copyEntries copies every entry of from into to; with keep, an entry
// already in to (the new programs made it) stays as it is.
func copyEntries(from, to *ebpf.Map, keep bool) (int, error) {
	return moveEntries(from, to, keep, nil)
}

// maxRevision returns the highest revision that the old endpoint map hands
// out (by its BTF: u32 members named *_rev), so that the new map's
// revisions never repeat one that a tracked flow may carry.
func maxRevision(m *ebpf.Map) uint32 {
	_, value, ok, err := pinnedBTF(m)
	if err != nil || !ok {
		return 0
	}
	st, isStruct := btf.UnderlyingType(value).(*btf.Struct)
	if !isStruct {
		return 0
	}
	var offs []uint32
	for _, mb := range st.Members {
		if sz, err := btf.Sizeof(mb.Type); err == nil && sz == 4 && strings.HasSuffix(mb.Name, "_rev") && mb.BitfieldSize == 0 {
			offs = append(offs, mb.Offset.Bytes())
		}
	}
	key := make([]byte, m.KeySize())
	val := make([]byte, m.ValueSize())
	var top uint32
	it := m.Iterate()
	for it.Next(&key, &val) {
		for _, o := range offs {
			if int(o)+4 <= len(val) {
				top = max(top, binary.NativeEndian.Uint32(val[o:]))
			}
		}
	}
	return top
}

// upgradePinPrefix names a new map's pin until it replaces the old one.
const upgradePinPrefix = "upgrading-"

// replacePin pins m at path, replacing whatever is pinned there: pinned
// beside it (bpffs refuses dots in names), then renamed over it, so the
// path never goes missing.
func replacePin(m *ebpf.Map, path string) error {
	tmp := filepath.Join(filepath.Dir(path), upgradePinPrefix+filepath.Base(path))
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin new map at %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace pinned map %s: %w", path, err)
	}
	return nil
}

// waits says whether the attach point k has the old programs, whose swap
// waits for the upgrade: a pinned link, or (legacy tc) a moat filter.
// An attach point without them gets the new programs at once: an
// interface without enforcement must not wait for a Sync.
func (up *upgrade) waits(k linkKey, links map[linkKey]link.Link) bool {
	if _, ok := links[k]; ok {
		return true
	}
	if up.tc[k] {
		return true
	}
	l, err := netlink.LinkByIndex(k.ifindex)
	if err != nil {
		return false
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if k.hook == hookEgress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	filters, err := netlink.FilterList(l, parent)
	if err != nil {
		return false
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == k.tcFilterName() {
			up.tc[k] = true
			return true
		}
	}
	return false
}

// finishUpgrade completes a staged upgrade once a Sync has filled the new
// maps: state entries migrated, programs swapped, entries made meanwhile
// migrated, pins replaced. The caller holds d.mu. Without a staged
// upgrade it does nothing.
func (d *Datapath) finishUpgrade() error {
	up := d.upgrade
	if up == nil {
		return nil
	}
	var errs []error
	migrate := func(keep bool) {
		for name := range up.copy {
			n, err := copyEntries(up.old[name], up.maps[name], keep)
			if err != nil {
				errs = append(errs, fmt.Errorf("upgrade: migrate %s: %w", name, err))
				continue
			}
			d.log.Info("upgrade: copied entries", "map", name, "entries", n, "second_pass", keep)
		}
		for name, c := range up.conv {
			n, err := convertEntries(c, up.old[name], up.maps[name], keep)
			if err != nil {
				errs = append(errs, fmt.Errorf("upgrade: convert %s: %w", name, err))
				continue
			}
			d.log.Info("upgrade: converted entries", "map", name, "conversion", c.description, "entries", n, "second_pass", keep)
		}
	}
	migrate(false)
	// The swap: each attach point goes from the old programs (old maps)
	// to the new ones (new maps, already filled) in one step.
	for k, l := range d.links {
		if err := l.Update(d.program(k.hook)); err != nil {
			d.log.Warn("dropping stale pinned tcx link", "where", k.where(), "err", err)
			_ = l.Unpin()
			_ = l.Close()
			delete(d.links, k)
		}
	}
	for k := range up.tc {
		if err := d.attachTC(k, d.program(k.hook)); err != nil {
			errs = append(errs, fmt.Errorf("upgrade: %w", err))
		}
	}
	migrate(true)
	names := make([]string, 0, len(up.maps))
	for name := range up.maps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := replacePin(up.maps[name], filepath.Join(d.cfg.PinRoot, name)); err != nil {
			errs = append(errs, fmt.Errorf("upgrade: %w", err))
		}
	}
	up.close()
	d.upgrade = nil
	if err := errors.Join(errs...); err != nil {
		return err
	}
	d.log.Info("upgrade: programs swapped and pins replaced", "maps", strings.Join(names, ","))
	return nil
}
