package policy

import (
	"strings"
	"testing"
)

func TestProxyMark(t *testing.T) {
	tests := []struct {
		name string
		dir  Direction
		id   ID
		want uint32
	}{
		{"unknown ingress", Ingress, IDUnknown, 0x00000A00},
		{"world egress", Egress, IDWorld, 0x00020B00},
		{"allocated", Egress, 0x1234, 0x12340B00},
		{"16 bits", Egress, 0xFFFF, 0xFFFF0B00},
		{"bit 16", Egress, 0x10000, 0x00000B01},
		{"bits 16-23", Ingress, 0x00AB_CDEF, 0xCDEF0AAB},
		{"local flag", Egress, IDLocalFlag | 5, 0x00051B00},
		{"largest", Egress, MaxMarkIdentity, 0xFFFFFBFF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProxyMark(tc.dir, tc.id)
			if err != nil {
				t.Fatalf("ProxyMark: %v", err)
			}
			if got != tc.want {
				t.Fatalf("ProxyMark = %#08x, want %#08x", got, tc.want)
			}
			if got&MarkMagicMask == MarkToProxy {
				t.Fatal("from-proxy mark looks like a to-proxy mark")
			}
			d, id, ok := DecodeProxyMark(got)
			if !ok || d != tc.dir || id != tc.id {
				t.Fatalf("DecodeProxyMark = %v %d %v, want %v %d true", d, id, ok, tc.dir, tc.id)
			}
		})
	}
}

func TestProxyMarkRejects(t *testing.T) {
	if _, err := ProxyMark(Egress, MaxMarkIdentity+1); err == nil || !strings.Contains(err.Error(), "above the 28-bit limit") {
		t.Fatalf("ProxyMark of a 29-bit identity: %v, want it refused as above the 28-bit limit", err)
	}
	for _, m := range []uint32{0, ToProxyMark(15001), 0x12340100, 0x1234FF00 &^ 0x0F00} {
		if _, _, ok := DecodeProxyMark(m); ok {
			t.Errorf("DecodeProxyMark(%#x) decoded a mark that is not from a proxy", m)
		}
	}
	if got := ToProxyMark(15001); got != 15001<<16|0x200 {
		t.Fatalf("ToProxyMark(15001) = %#x", got)
	}
}

func FuzzProxyMark(f *testing.F) {
	f.Add(uint32(0), false)
	f.Add(uint32(IDLocalFlag|77), true)
	f.Fuzz(func(t *testing.T, v uint32, egress bool) {
		d := Ingress
		if egress {
			d = Egress
		}
		m, err := ProxyMark(d, ID(v))
		if ID(v) > MaxMarkIdentity {
			if err == nil || !strings.Contains(err.Error(), "above the 28-bit limit") {
				t.Fatalf("identity above the limit: %v, want it refused as above the limit", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		gd, gid, ok := DecodeProxyMark(m)
		if !ok || gd != d || gid != ID(v) {
			t.Fatalf("round trip of %d/%v gave %d/%v/%v", v, d, gid, gd, ok)
		}
	})
}
