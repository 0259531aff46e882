package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// SockOps is the TCP health program (bpf/sockops.c): a cgroup sock_ops
// program that reports SYN timeouts, refused connects, retransmissions, RTT
// samples, resets, and connection establishment and close as TCPEvents.
// Its maps (moat_tcp_events, moat_tcp_stats, moat_tcp_sk) and its cgroup
// links are pinned under the PinRoot, so a restarted agent adopts the links
// and swaps the program in place, like the tc links. Methods are safe for
// concurrent use.
type SockOps struct {
	cfg  SockOpsConfig
	log  *slog.Logger
	objs sockopsObjects

	linkSet[uint64] // by cgroup inode
}

// OpenSockOps loads the program, reusing the maps pinned under cfg.PinRoot,
// and adopts the cgroup links a previous instance pinned.
func OpenSockOps(cfg SockOpsConfig) (*SockOps, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate sockops config: %w", err)
	}
	if err := ensurePinRoot(cfg.PinRoot); err != nil {
		return nil, err
	}
	spec, err := loadSockops()
	if err != nil {
		return nil, fmt.Errorf("load embedded sockops spec: %w", err)
	}
	vars := map[string]any{
		"tcp_events_rate":     cfg.EventsPerSecond,
		"tcp_events_burst":    cfg.EventsBurst,
		"syn_timeout_ns":      uint64(cfg.SYNTimeout.Nanoseconds()),
		"rtt_interval_ns":     uint64(cfg.RTTInterval.Nanoseconds()),
		"retrans_interval_ns": uint64(cfg.RetransInterval.Nanoseconds()),
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("set bpf variable %s: not in the object", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("set bpf variable %s: %w", name, err)
		}
	}
	s := &SockOps{cfg: cfg, log: cfg.Logger, linkSet: linkSet[uint64]{links: map[uint64]link.Link{}}}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinRoot}}
	if err := spec.LoadAndAssign(&s.objs, opts); err != nil {
		return nil, explainLoadError(err)
	}
	if err := s.adoptLinks(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Config returns the configuration in effect (with defaults).
func (s *SockOps) Config() SockOpsConfig { return s.cfg }

const sockopsPinSuffix = "-sockops"

func sockopsPinName(ino uint64) string {
	return "cgroup-" + strconv.FormatUint(ino, 10) + sockopsPinSuffix
}

func parseSockopsPinName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, "cgroup-")
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, sockopsPinSuffix)
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(rest, 10, 64)
	return ino, err == nil && ino != 0
}

// pins are the SockOps's cgroup links under PinRoot/links.
func (s *SockOps) pins() linkPins[uint64] {
	return linkPins[uint64]{dir: linksDir(s.cfg.PinRoot), kind: "sockops", name: sockopsPinName, parse: parseSockopsPinName,
		pinHint: " (needs bpf_link cgroup attachment, Linux 5.7+)", log: s.log}
}

func (s *SockOps) adoptLinks() error {
	return s.pins().adopt(s.links, func(uint64) *ebpf.Program { return s.objs.MoatSockops })
}

func cgroupInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("statfs cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup %s: not on a cgroup v2 file system", path)
	}
	return st.Ino, nil
}

// cgroup resolves a cgroup path argument ("" means Config.Cgroup) to the
// path and its inode.
func (s *SockOps) cgroup(path string) (string, uint64, error) {
	if path == "" {
		path = s.cfg.Cgroup
	}
	ino, err := cgroupInode(path)
	return path, ino, err
}

// Attach attaches the program to the cgroup v2 directory at cgroupPath (""
// means Config.Cgroup) and pins the link. Attaching again to the same
// cgroup swaps the program in place.
func (s *SockOps) Attach(cgroupPath string) error {
	cgroupPath, ino, err := s.cgroup(cgroupPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("attach sockops: closed")
	}
	if found, err := s.pins().update(s.links, ino, s.objs.MoatSockops, cgroupPath); found {
		return err
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: ebpf.AttachCGroupSockOps, Program: s.objs.MoatSockops})
	if err != nil {
		return fmt.Errorf("attach sockops to cgroup %s: %w", cgroupPath, err)
	}
	return s.pins().pin(s.links, ino, l, cgroupPath)
}

// Detach removes the program from the cgroup at cgroupPath ("" means
// Config.Cgroup). A cgroup without the program is not an error.
func (s *SockOps) Detach(cgroupPath string) error {
	cgroupPath, ino, err := s.cgroup(cgroupPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pins().release(s.links, ino, cgroupPath)
}

// Attached returns the inodes of the cgroups the program is attached to.
func (s *SockOps) Attached() []uint64 {
	return s.attached()
}

// Close releases file descriptors. Pinned maps and links stay: the program
// keeps reporting until the next OpenSockOps swaps it or CleanupSockOps
// removes it.
func (s *SockOps) Close() error {
	return s.close(&s.objs)
}

// Cleanup detaches the program from every cgroup, removes its pins and
// closes the SockOps.
func (s *SockOps) Cleanup() error {
	cfg := s.cfg
	err := s.Close()
	return errors.Join(err, CleanupSockOps(cfg))
}

// CleanupSockOps removes everything a SockOps with cfg left behind, without
// loading the program: the pinned cgroup links (which detaches them) and
// the pinned maps. The Datapath's pins under the same root stay.
func CleanupSockOps(cfg SockOpsConfig) error {
	cfg = cfg.WithDefaults()
	return cleanupPins(cfg.PinRoot, func(name string) bool {
		_, ok := parseSockopsPinName(name)
		return ok
	}, []string{"moat_tcp_events", "moat_tcp_stats", "moat_tcp_sk"})
}
