package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

func encodeTCPEvent(t *testing.T, e sockopsTcpEvent) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, e); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestTCPEventSize(t *testing.T) {
	if got := int(unsafe.Sizeof(sockopsTcpEvent{})); got != tcpEventSize {
		t.Fatalf("sizeof(struct tcp_event) = %d, tcpEventSize = %d", got, tcpEventSize)
	}
}

func TestDecodeTCPEvent(t *testing.T) {
	v4 := func(s string) [16]byte { return netip.MustParseAddr(s).As16() }
	tests := []struct {
		name string
		raw  sockopsTcpEvent
		want TCPEvent
	}{
		{
			name: "ipv4-closed",
			raw: sockopsTcpEvent{
				TimestampNs: 5e9, Cookie: 77, DurationNs: 2e6, BytesAcked: 100, BytesReceived: 200,
				SrttUs: 30, TotalRetrans: 2, Rtos: 1, SegsIn: 5, SegsOut: 6,
				Saddr: v4("10.0.0.1"), Daddr: v4("10.0.0.2"), Sport: 40000, Dport: 80,
				Kind: 6, Family: 4, OldState: 9, NewState: 7, Flags: 1,
			},
			want: TCPEvent{
				KernelTime: 5 * time.Second, Kind: TCPClosed, Cookie: 77,
				Local:  netip.MustParseAddrPort("10.0.0.1:40000"),
				Remote: netip.MustParseAddrPort("10.0.0.2:80"),
				Active: true, Duration: 2 * time.Millisecond, SRTT: 30 * time.Microsecond,
				TotalRetrans: 2, RTOs: 1, BytesAcked: 100, BytesReceived: 200, SegsIn: 5, SegsOut: 6,
				OldState: TCPStateLastAck, NewState: TCPStateClose,
			},
		},
		{
			name: "ipv6-rtt-passive",
			raw: sockopsTcpEvent{
				Kind: 3, Family: 6, RttUs: 12, SrttUs: 10, OldState: 1, NewState: 1,
				Saddr: netip.MustParseAddr("fd00::1").As16(), Daddr: netip.MustParseAddr("::ffff:10.0.0.9").As16(),
				Sport: 443, Dport: 5555,
			},
			want: TCPEvent{
				Kind:   TCPRTT,
				Local:  netip.MustParseAddrPort("[fd00::1]:443"),
				Remote: netip.MustParseAddrPort("[::ffff:10.0.0.9]:5555"), // a v4-mapped peer of a v6 socket stays mapped
				RTT:    12 * time.Microsecond, SRTT: 10 * time.Microsecond,
				OldState: TCPStateEstablished, NewState: TCPStateEstablished,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTCPEvent(encodeTCPEvent(t, tt.raw))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("decode (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("short", func(t *testing.T) {
		if _, err := DecodeTCPEvent(make([]byte, tcpEventSize-1)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes, want %d", tcpEventSize-1, tcpEventSize)) {
			t.Errorf("short record: %v, want its length reported", err)
		}
	})
}

func TestTCPEventKindString(t *testing.T) {
	tests := []struct {
		kind TCPEventKind
		want string
	}{
		{TCPSYNTimeout, "syn-timeout"}, {TCPRetransmit, "retransmit"}, {TCPRTT, "rtt"}, {TCPReset, "reset"},
		{TCPEstablished, "established"}, {TCPClosed, "closed"}, {TCPRefused, "refused"}, {99, "tcp-kind-99"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.kind.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTCPStateString(t *testing.T) {
	tests := []struct {
		s    TCPState
		want string
	}{
		{TCPStateEstablished, "ESTABLISHED"}, {TCPStateSynSent, "SYN_SENT"}, {TCPStateClose, "CLOSE"},
		{TCPStateClosing, "CLOSING"}, {0, "STATE_0"}, {12, "STATE_12"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.s.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSockopsPinName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
		ino  uint64
	}{
		{sockopsPinName(4026531835), true, 4026531835},
		{"cgroup-0-sockops", false, 0},
		{"cgroup-x-sockops", false, 0},
		{"12-tc-ingress", false, 0},
		{"12-xdp", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ino, ok := parseSockopsPinName(tt.name)
			if ok != tt.ok || ino != tt.ino {
				t.Errorf("parse = %d, %v; want %d, %v", ino, ok, tt.ino, tt.ok)
			}
			if _, tc := parsePinName(tt.name); tc && ok {
				t.Error("a sockops pin parses as a tc pin")
			}
		})
	}
}

func TestSockOpsConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     SockOpsConfig
		wantErr bool
	}{
		{"defaults", SockOpsConfig{}.WithDefaults(), false},
		{"relative-pin-root", SockOpsConfig{PinRoot: "bpf", Cgroup: "/sys/fs/cgroup"}.WithDefaults(), true},
		{"relative-cgroup", SockOpsConfig{Cgroup: "cg"}.WithDefaults(), true},
		{"negative-timeout", SockOpsConfig{SYNTimeout: -time.Second}.WithDefaults(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func BenchmarkDecodeTCPEvent(b *testing.B) {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, sockopsTcpEvent{Kind: 3, Family: 4}); err != nil {
		b.Fatal(err)
	}
	raw := buf.Bytes()
	for b.Loop() {
		if _, err := DecodeTCPEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
