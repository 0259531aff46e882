package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// The layouts the moat_ct conversion names are those of the committed old
// object and of this build: when bpf/ changes moat_ct, this fails and says
// that the conversion's target must follow.
func TestUpgradeLayouts(t *testing.T) {
	old, err := ebpf.LoadCollectionSpec("testdata/upgrade/moat-4f12d15.o")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := loadMoat()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		spec       *ebpf.CollectionSpec
		key, value string
	}{
		{"4f12d15", old, ctKeyLayout, ctValueLayoutPad},
		{"this build (update the moat_ct conversion's target when this changes)", cur, ctKeyLayout, ctValueLayoutEpSlot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := tc.spec.Maps["moat_ct"]
			if got := layoutOf(ms.Key); got != tc.key {
				t.Errorf("moat_ct key layout\n got %s\nwant %s", got, tc.key)
			}
			if got := layoutOf(ms.Value); got != tc.value {
				t.Errorf("moat_ct value layout\n got %s\nwant %s", got, tc.value)
			}
		})
	}
	// A layout names members: a renamed member is another layout.
	if a, b := layoutOf(old.Maps["moat_ct"].Value), layoutOf(cur.Maps["moat_ct"].Value); a == b || !strings.Contains(a, "pad@208") {
		t.Errorf("old and new moat_ct values compare equal: %s", a)
	}
	if a, b := layoutOf(old.Maps["moat_endpoints"].Value), layoutOf(cur.Maps["moat_endpoints"].Value); a == b {
		t.Errorf("old and new endpoint configs compare equal: %s", a)
	}
}

func TestConvertCTPerDirection(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1").As16(), netip.MustParseAddr("10.0.0.2").As16()
	enc := func(v any) []byte {
		var buf bytes.Buffer
		if err := binary.Write(&buf, binary.NativeEndian, v); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name      string
		key       moatCtKey
		wantKey   moatCtKey
		wantFlags uint8
	}{
		{
			name:      "first seen entering b from a (lower side sends)",
			key:       moatCtKey{Saddr: a, Daddr: b, Sport: 1, Dport: 80, Proto: 6, Direction: 0, Endpoint: 7},
			wantKey:   moatCtKey{Saddr: a, Daddr: b, Sport: 1, Dport: 80, Proto: 6, Endpoint: 7},
			wantFlags: 1, // REPLY_SEEN kept
		},
		{
			name:      "first seen leaving b towards a (higher side sends)",
			key:       moatCtKey{Saddr: b, Daddr: a, Sport: 2, Dport: 53, Proto: 17, Direction: 1, Endpoint: 7},
			wantKey:   moatCtKey{Saddr: a, Daddr: b, Sport: 53, Dport: 2, Proto: 17, Endpoint: 7},
			wantFlags: 1 | ctFlagOrigEgress | ctFlagOrigSwap,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := oldCTEntry{Expires: 1000, Rule: 3, RemoteIdentity: 256, Revision: 9, Verdict: 1, Flags: 1 | 1<<5, Generation: 4}
			k, v, ok := convertCTPerDirection(enc(tc.key), enc(old))
			if !ok {
				t.Fatal("not converted")
			}
			if got := *k.(*moatCtKey); got != tc.wantKey {
				t.Errorf("key %+v, want %+v", got, tc.wantKey)
			}
			e := *v.(*moatCtEntry)
			if e.Flags != tc.wantFlags {
				t.Errorf("flags %#x, want %#x", e.Flags, tc.wantFlags)
			}
			if e.Revision != 0 || e.Generation != 0 {
				t.Errorf("revision %d generation %d: want 0 (re-checked at the next packet)", e.Revision, e.Generation)
			}
			if want := uint64(1000) * 1e9 >> ctTickShift; e.Expires != want || e.Rule != 3 || e.RemoteIdentity != 256 || e.Verdict != 1 {
				t.Errorf("entry %+v: want expiry %d ticks, rule 3, identity 256, allow", e, want)
			}
		})
	}
}
