package policy

import "testing"

// An ICMP key's range is ICMP types, and {0,0} is type 0 (echo reply), not
// "every port" as it is for TCP, UDP and SCTP.
func TestL4KeyPorts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key     L4Key
		all     bool
		covers  []uint16
		misses  []uint16
		printed string
	}{
		{L4Key{Proto: ProtoICMP}, false, []uint16{0}, []uint16{3, 8}, "0"},
		{L4Key{Proto: ProtoICMPv6, Ports: PortRange{From: 128, To: 128}}, false, []uint16{128}, []uint16{0, 129}, "128"},
		{L4Key{Proto: ProtoTCP}, true, []uint16{0, 1, 80, 65535}, nil, "*"},
		{L4Key{Proto: ProtoUDP, Ports: PortRange{From: 0, To: 65535}}, true, []uint16{53}, nil, "*"},
		{L4Key{Proto: ProtoTCP, Ports: PortRange{From: 80, To: 80}}, false, []uint16{80}, []uint16{0, 81}, "80"},
		{L4Key{Proto: ProtoSCTP, Ports: PortRange{From: 1000, To: 2000}}, false, []uint16{1000, 2000}, []uint16{999, 2001}, "1000-2000"},
		{L4Key{Proto: ProtoAny}, true, []uint16{0, 8, 443}, nil, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.key.Proto.String()+"/"+tt.printed, func(t *testing.T) {
			if got := tt.key.AllPorts(); got != tt.all {
				t.Errorf("AllPorts() = %v, want %v", got, tt.all)
			}
			for _, p := range tt.covers {
				if !tt.key.CoversPort(p) {
					t.Errorf("CoversPort(%d) = false, want true", p)
				}
			}
			for _, p := range tt.misses {
				if tt.key.CoversPort(p) {
					t.Errorf("CoversPort(%d) = true, want false", p)
				}
			}
			if got := tt.key.PortsString(); got != tt.printed {
				t.Errorf("PortsString() = %q, want %q", got, tt.printed)
			}
		})
	}
}
