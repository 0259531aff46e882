package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/netns"
	"github.com/moatnet/moat/policy"
)

// SockAddr is Service translation (bpf/sockaddr.c): cgroup sock_addr
// programs (connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6) that turn a
// Service frontend into one of its backends at the socket, for sockets in
// the network namespaces of SetScope only. Its maps (moat_svc, moat_svc_be,
// moat_svc_ns, moat_svc_rnat, moat_svc_sk, moat_svc_stats) and its cgroup
// links are pinned under PinRoot, so translation goes on while the agent is
// down and a restarted agent adopts the links (swapping the programs in
// place) and the installed table (its next SetServices writes only the
// differences). The links are bpf_links, which the kernel attaches in
// multi-attach mode: another agent's programs on the same cgroup stay, and
// Detach removes only this SockAddr's. Methods are safe for concurrent use.
type SockAddr struct {
	cfg  SockAddrConfig
	log  *slog.Logger
	objs sockaddrObjects

	linkSet[sockAddrLink] // mu guards the fields below too

	table  svcTable
	nextID uint32
	scope  map[uint64]bool
}

// SockAddrConfig configures SockAddr.
type SockAddrConfig struct {
	// PinRoot is the bpffs directory for the pinned maps and links; the
	// Datapath's (default DefaultPinRoot).
	PinRoot string
	// Cgroup is the cgroup v2 directory Attach uses when given "" (default
	// DefaultCgroupRoot()).
	Cgroup string
	// Logger receives operational messages; nil means slog.Default().
	Logger *slog.Logger
}

// WithDefaults fills unset fields.
func (c SockAddrConfig) WithDefaults() SockAddrConfig {
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.Cgroup == "" {
		c.Cgroup = DefaultCgroupRoot()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports configuration errors.
func (c SockAddrConfig) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.PinRoot) || filepath.Clean(c.PinRoot) == "/" {
		errs = append(errs, fmt.Errorf("pinRoot %q: must be an absolute path below a bpffs mount", c.PinRoot))
	}
	if !filepath.IsAbs(c.Cgroup) {
		errs = append(errs, fmt.Errorf("cgroup %q: must be an absolute path", c.Cgroup))
	}
	return errors.Join(errs...)
}

// sockAddrHooks are the attach points, in the order Attach attaches them
// (connect last: a translated socket finds its reverse path in place).
var sockAddrHooks = []struct {
	name   string
	attach ebpf.AttachType
}{
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg},
	{"connect4", ebpf.AttachCGroupInet4Connect},
	{"connect6", ebpf.AttachCGroupInet6Connect},
}

// sockAddrLink is one pinned link: a cgroup (by inode) and a hook.
type sockAddrLink struct {
	ino  uint64
	hook string
}

const sockAddrPinInfix = "-svc-"

func sockAddrPinName(k sockAddrLink) string {
	return "cgroup-" + strconv.FormatUint(k.ino, 10) + sockAddrPinInfix + k.hook
}

func parseSockAddrPinName(name string) (sockAddrLink, bool) {
	rest, ok := strings.CutPrefix(name, "cgroup-")
	if !ok {
		return sockAddrLink{}, false
	}
	ino, hook, ok := strings.Cut(rest, sockAddrPinInfix)
	if !ok {
		return sockAddrLink{}, false
	}
	n, err := strconv.ParseUint(ino, 10, 64)
	if err != nil || n == 0 || !slices.ContainsFunc(sockAddrHooks, func(h struct {
		name   string
		attach ebpf.AttachType
	}) bool {
		return h.name == hook
	}) {
		return sockAddrLink{}, false
	}
	return sockAddrLink{ino: n, hook: hook}, true
}

func (s *SockAddr) program(hook string) *ebpf.Program {
	switch hook {
	case "connect4":
		return s.objs.MoatConnect4
	case "connect6":
		return s.objs.MoatConnect6
	case "sendmsg4":
		return s.objs.MoatSendmsg4
	case "sendmsg6":
		return s.objs.MoatSendmsg6
	case "recvmsg4":
		return s.objs.MoatRecvmsg4
	case "recvmsg6":
		return s.objs.MoatRecvmsg6
	case "getpeername4":
		return s.objs.MoatGetpeer4
	case "getpeername6":
		return s.objs.MoatGetpeer6
	}
	return nil
}

func (s *SockAddr) pins() linkPins[sockAddrLink] {
	return linkPins[sockAddrLink]{dir: linksDir(s.cfg.PinRoot), kind: "sock_addr", name: sockAddrPinName,
		parse: parseSockAddrPinName, pinHint: " (needs bpf_link cgroup attachment, Linux 5.7+)", log: s.log}
}

// OpenSockAddr loads the programs over the maps pinned under cfg.PinRoot,
// adopts the links a previous instance pinned (swapping in the new
// programs) and reads the installed Service table and scope back.
func OpenSockAddr(cfg SockAddrConfig) (*SockAddr, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate sock_addr config: %w", err)
	}
	if err := ensurePinRoot(cfg.PinRoot); err != nil {
		return nil, err
	}
	spec, err := loadSockaddr()
	if err != nil {
		return nil, fmt.Errorf("load embedded sock_addr spec: %w", err)
	}
	s := &SockAddr{cfg: cfg, log: cfg.Logger, linkSet: linkSet[sockAddrLink]{links: map[sockAddrLink]link.Link{}}}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinRoot}}
	if err := spec.LoadAndAssign(&s.objs, opts); err != nil {
		return nil, explainSockAddrLoadError(err)
	}
	if err := s.pins().adopt(s.links, func(k sockAddrLink) *ebpf.Program { return s.program(k.hook) }); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.readInstalled(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func explainSockAddrLoadError(err error) error {
	err = explainLoadError(err)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w (Service translation needs cgroup sock_addr programs with bpf_get_netns_cookie, bpf_set_retval and socket storage: Linux 5.18+)", err)
	}
	return err
}

// Config returns the configuration in effect.
func (s *SockAddr) Config() SockAddrConfig { return s.cfg }

// Attach attaches the programs to the cgroup v2 directory at cgroupPath
// ("" means Config.Cgroup) and pins the links. Attaching again swaps the
// programs in place.
func (s *SockAddr) Attach(cgroupPath string) error {
	if cgroupPath == "" {
		cgroupPath = s.cfg.Cgroup
	}
	ino, err := cgroupInode(cgroupPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("attach sock_addr: closed")
	}
	for _, h := range sockAddrHooks {
		k := sockAddrLink{ino: ino, hook: h.name}
		prog := s.program(h.name)
		if found, err := s.pins().update(s.links, k, prog, cgroupPath); found {
			if err != nil {
				return err
			}
			continue
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", h.name, cgroupPath, err)
		}
		if err := s.pins().pin(s.links, k, l, cgroupPath); err != nil {
			return err
		}
	}
	return nil
}

// Detach removes this SockAddr's programs from the cgroup at cgroupPath
// ("" means Config.Cgroup); other programs on it stay. A cgroup without
// them is not an error.
func (s *SockAddr) Detach(cgroupPath string) error {
	if cgroupPath == "" {
		cgroupPath = s.cfg.Cgroup
	}
	ino, err := cgroupInode(cgroupPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	// connect first: no new translation while the reverse path goes.
	for i := len(sockAddrHooks) - 1; i >= 0; i-- {
		errs = append(errs, s.pins().release(s.links, sockAddrLink{ino: ino, hook: sockAddrHooks[i].name}, cgroupPath))
	}
	return errors.Join(errs...)
}

// Attached returns the inodes of the cgroups the programs are attached to.
func (s *SockAddr) Attached() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for k := range s.links {
		if !slices.Contains(out, k.ino) {
			out = append(out, k.ino)
		}
	}
	slices.Sort(out)
	return out
}

// Close releases file descriptors. Pinned maps and links stay: translation
// goes on until the next OpenSockAddr or CleanupSockAddr.
func (s *SockAddr) Close() error { return s.close(&s.objs) }

// Cleanup detaches the programs from every cgroup, removes their pins and
// closes the SockAddr.
func (s *SockAddr) Cleanup() error {
	cfg := s.cfg
	return errors.Join(s.Close(), CleanupSockAddr(cfg))
}

// sockAddrMaps are the pinned maps' names.
var sockAddrMaps = []string{"moat_svc", "moat_svc_be", "moat_svc_ns", "moat_svc_rnat", "moat_svc_sk", "moat_svc_stats"}

// CleanupSockAddr removes what a SockAddr with cfg left behind, without
// loading the programs: its pinned links (which detaches them) and maps.
func CleanupSockAddr(cfg SockAddrConfig) error {
	cfg = cfg.WithDefaults()
	return cleanupPins(cfg.PinRoot, func(name string) bool {
		_, ok := parseSockAddrPinName(name)
		return ok
	}, sockAddrMaps)
}

// --- the Service table ---

func svcAddr(a netip.Addr) [4]uint32 {
	b := netip.AddrFrom16(a.As16()).As16() // IPv4 as IPv4-mapped
	var out [4]uint32
	for i := range out {
		// Network order in memory: the words are read as the kernel's
		// __u32 of a big-endian address on a little-endian host.
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func addrOfSvc(w [4]uint32) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.LittleEndian.PutUint32(b[4*i:], w[i])
	}
	return netip.AddrFrom16(b).Unmap()
}

// netPort converts between host order and the network-order port as the
// little-endian host reads it from the context.
func netPort(p uint16) uint16 { return p<<8 | p>>8 }

func svcKeyOf(f Frontend) sockaddrSvcKey {
	return sockaddrSvcKey{Addr: svcAddr(f.Addr), Port: netPort(f.Port), Proto: uint8(f.Proto)}
}

func frontendOf(k sockaddrSvcKey) Frontend {
	return Frontend{Addr: addrOfSvc(k.Addr), Port: netPort(k.Port), Proto: policy.Protocol(k.Proto)}
}

func svcAddrOf(ap netip.AddrPort) sockaddrSvcAddr {
	return sockaddrSvcAddr{Addr: svcAddr(ap.Addr()), Port: netPort(ap.Port())}
}

func addrPortOfSvc(a sockaddrSvcAddr) netip.AddrPort {
	return netip.AddrPortFrom(addrOfSvc(a.Addr), netPort(a.Port))
}

// readInstalled reads moat_svc and moat_svc_be into the table the next
// SetServices diffs against, and moat_svc_ns into the scope.
func (s *SockAddr) readInstalled() error {
	t := svcTable{svcs: map[Frontend]installedService{}}
	byID := map[uint32]Frontend{}
	var k sockaddrSvcKey
	var v sockaddrSvcVal
	it := s.objs.MoatSvc.Iterate()
	for it.Next(&k, &v) {
		f := frontendOf(k)
		t.svcs[f] = installedService{id: v.Id, rev: v.Rev, slots: make([]netip.AddrPort, v.Count)}
		byID[v.Id] = f
		s.nextID = max(s.nextID, v.Id)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read moat_svc: %w", err)
	}
	var bk sockaddrSvcBeKey
	var bv sockaddrSvcAddr
	bit := s.objs.MoatSvcBe.Iterate()
	for bit.Next(&bk, &bv) {
		f, ok := byID[bk.Id]
		if !ok || int(bk.Slot) >= len(t.svcs[f].slots) {
			t.orphans = append(t.orphans, svcSlot{id: bk.Id, slot: bk.Slot})
			s.nextID = max(s.nextID, bk.Id)
			continue
		}
		t.svcs[f].slots[bk.Slot] = addrPortOfSvc(bv)
	}
	if err := bit.Err(); err != nil {
		return fmt.Errorf("read moat_svc_be: %w", err)
	}
	s.table = t
	s.scope = map[uint64]bool{}
	var cookie uint64
	var one uint32
	nit := s.objs.MoatSvcNs.Iterate()
	for nit.Next(&cookie, &one) {
		s.scope[cookie] = true
	}
	if err := nit.Err(); err != nil {
		return fmt.Errorf("read moat_svc_ns: %w", err)
	}
	return nil
}

// SetServices makes the installed table equal svcs with the fewest map
// writes, in the order planServices gives: a frontend that has backends
// before and after never has none in between, and once SetServices
// returns no connect() picks a backend that svcs does not hold. An invalid
// table changes nothing. After a failed write the table is read back, so
// the next call repairs what is missing.
func (s *SockAddr) SetServices(svcs Services) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("set services: closed")
	}
	ops, after, next, err := planServices(s.table, svcs, s.nextID)
	if err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	for _, op := range ops {
		if err := s.apply(op); err != nil {
			if rerr := s.readInstalled(); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return fmt.Errorf("set services: %w", err)
		}
	}
	s.table = svcTable{svcs: after}
	s.nextID = next
	return nil
}

func (s *SockAddr) apply(op svcOp) error {
	switch op.kind {
	case opWriteSlot:
		k, v := sockaddrSvcBeKey{Id: op.id, Slot: op.slot}, svcAddrOf(op.backend)
		if err := s.objs.MoatSvcBe.Update(&k, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write backend %s of %s (slot %d): %w", op.backend, op.fe, op.slot, err)
		}
	case opWriteSvc:
		k, v := svcKeyOf(op.fe), sockaddrSvcVal{Id: op.id, Count: op.count, Rev: op.rev}
		if err := s.objs.MoatSvc.Update(&k, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write service %s: %w", op.fe, err)
		}
	case opDelSvc:
		k := svcKeyOf(op.fe)
		if err := s.objs.MoatSvc.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service %s: %w", op.fe, err)
		}
	case opDelSlot:
		k := sockaddrSvcBeKey{Id: op.id, Slot: op.slot}
		if err := s.objs.MoatSvcBe.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete backend slot %d of service id %d: %w", op.slot, op.id, err)
		}
	}
	return nil
}

// InstalledServices reads the table the programs use now, from the maps.
// A slot below a frontend's count that is missing shows as an invalid
// AddrPort.
func (s *SockAddr) InstalledServices() (Services, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Services{}
	ids := map[uint32]Frontend{}
	var k sockaddrSvcKey
	var v sockaddrSvcVal
	it := s.objs.MoatSvc.Iterate()
	for it.Next(&k, &v) {
		f := frontendOf(k)
		out[f] = make([]netip.AddrPort, v.Count)
		ids[v.Id] = f
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read moat_svc: %w", err)
	}
	var bk sockaddrSvcBeKey
	var bv sockaddrSvcAddr
	bit := s.objs.MoatSvcBe.Iterate()
	for bit.Next(&bk, &bv) {
		if f, ok := ids[bk.Id]; ok && int(bk.Slot) < len(out[f]) {
			out[f][bk.Slot] = addrPortOfSvc(bv)
		}
	}
	if err := bit.Err(); err != nil {
		return nil, fmt.Errorf("read moat_svc_be: %w", err)
	}
	return out, nil
}

// --- scope ---

// SetScope sets the network namespaces (by cookie, see NetnsCookie) whose
// sockets are translated: new ones are added before old ones go.
func (s *SockAddr) SetScope(cookies []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("set service scope: closed")
	}
	want := map[uint64]bool{}
	for _, c := range cookies {
		want[c] = true
	}
	one := uint32(1)
	for c := range want {
		if s.scope[c] {
			continue
		}
		if err := s.objs.MoatSvcNs.Update(&c, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("add netns cookie %d to the service scope: %w", c, err)
		}
		s.scope[c] = true
	}
	for c := range s.scope {
		if want[c] {
			continue
		}
		if err := s.objs.MoatSvcNs.Delete(&c); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove netns cookie %d from the service scope: %w", c, err)
		}
		delete(s.scope, c)
	}
	return nil
}

// Scope returns the netns cookies in the scope.
func (s *SockAddr) Scope() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, 0, len(s.scope))
	for c := range s.scope {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14), not in x/sys/unix yet.
const soNetnsCookie = 71

// NetnsCookie returns the cookie of the network namespace at path (a
// /run/netns file or /proc/<pid>/ns/net), as bpf_get_netns_cookie gives it
// to the programs.
func NetnsCookie(path string) (uint64, error) {
	var cookie uint64
	err := netns.Do(path, func() error {
		c, err := currentNetnsCookie()
		cookie = c
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read netns cookie of %s: %w", path, err)
	}
	return cookie, nil
}

// CurrentNetnsCookie returns the calling thread's network namespace's
// cookie.
func CurrentNetnsCookie() (uint64, error) { return currentNetnsCookie() }

func currentNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open socket: %w", err)
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE (Linux 5.14+): %w", err)
	}
	return v, nil
}

// --- counters ---

// SockAddrStats are the translation counters, summed over CPUs.
type SockAddrStats struct {
	// Translated: connect() and sendmsg() calls sent to a backend.
	Translated uint64
	// Refused: calls to a frontend without backends (ECONNREFUSED).
	Refused uint64
	// MissingSlot: a backend slot below the count was missing (a sync ran
	// meanwhile); the program looked again.
	MissingSlot uint64
	// RevNAT: datagrams whose source was shown as the frontend.
	RevNAT uint64
	// Peer: getpeername() calls answered with the frontend.
	Peer uint64
}

// Stats reads the counters.
func (s *SockAddr) Stats() (SockAddrStats, error) {
	var per []sockaddrSvcStats
	if err := s.objs.MoatSvcStats.Lookup(uint32(0), &per); err != nil {
		return SockAddrStats{}, fmt.Errorf("read moat_svc_stats: %w", err)
	}
	var out SockAddrStats
	for _, c := range per {
		out.Translated += c.Translated
		out.Refused += c.Refused
		out.MissingSlot += c.MissingSlot
		out.RevNAT += c.RevNat
		out.Peer += c.Peer
	}
	return out, nil
}
