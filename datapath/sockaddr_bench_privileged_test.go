package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/netns"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// BenchmarkServiceConnect times a TCP connect() (socket, handshake to a
// listener in another pod, close with RST) from a pod through a Service VIP
// against the same connect straight to the backend, alternating in one
// loop (each going first every other time) with the sock_addr programs attached for both, and reports the
// ratio vip/direct. No tc programs: it measures the translation alone.
//
//	MOAT_PRIVILEGED_TESTS=1 go test -run '^$' -bench ServiceConnect ./datapath
func BenchmarkServiceConnect(b *testing.B) {
	testutil.Privileged(b)
	client := testutil.NewPod(b, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.31.1")})
	server := testutil.NewPod(b, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.32.1")})
	var ln net.Listener
	if err := server.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", server.Addr.String()+":0")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	backend := ln.Addr().(*net.TCPAddr).AddrPort()
	vip := Frontend{Addr: netip.MustParseAddr("10.96.201.30"), Port: 80, Proto: policy.ProtoTCP}

	root := benchPinRoot()
	b.Cleanup(func() { _ = os.RemoveAll(root) })
	sa, err := OpenSockAddr(SockAddrConfig{PinRoot: root})
	testutil.Require(b, "sock_addr load", err)
	b.Cleanup(func() { _ = sa.Cleanup() })
	cookie, err := NetnsCookie(client.NsPath)
	testutil.Require(b, "netns cookie", err)
	for _, err := range []error{sa.SetScope([]uint64{cookie}), sa.SetServices(Services{vip: {backend}}), sa.Attach("")} {
		if err != nil {
			b.Fatal(err)
		}
	}
	dst := func(ap netip.AddrPort) *unix.SockaddrInet4 {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	direct, through := dst(backend), dst(netip.AddrPortFrom(vip.Addr, vip.Port))
	var tDirect, tVIP time.Duration
	err = netns.Do(client.NsPath, func() error {
		connect := func(sa unix.Sockaddr) error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			// RST on close: no TIME_WAIT to run out of ports.
			if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1}); err != nil {
				return err
			}
			return unix.Connect(fd, sa)
		}
		timed := func(sa unix.Sockaddr, total *time.Duration) error {
			s := time.Now()
			err := connect(sa)
			*total += time.Since(s)
			return err
		}
		odd := false
		for b.Loop() {
			// Alternate which goes first: neither always pays for a cold cache.
			first, second := direct, through
			t1, t2 := &tDirect, &tVIP
			if odd {
				first, second, t1, t2 = through, direct, &tVIP, &tDirect
			}
			odd = !odd
			if err := timed(first, t1); err != nil {
				return err
			}
			if err := timed(second, t2); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	st, _ := sa.Stats()
	if st.Translated < uint64(b.N) {
		b.Fatalf("translated %d of %d connects through the VIP", st.Translated, b.N)
	}
	b.ReportMetric(float64(tDirect.Nanoseconds())/float64(b.N), "direct-ns/connect")
	b.ReportMetric(float64(tVIP.Nanoseconds())/float64(b.N), "vip-ns/connect")
	b.ReportMetric(float64(tVIP)/float64(tDirect), "vip/direct")
}

func benchPinRoot() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "/sys/fs/bpf/moat-bench-" + hex.EncodeToString(r[:])
}
