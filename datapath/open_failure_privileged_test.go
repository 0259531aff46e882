package datapath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
)

// A first start that fails after pinning its maps leaves no pins behind; a
// failed start over existing pins keeps them (older programs may be
// enforcing with them).
func TestPrivilegedOpenFailureKeepsNodeAsItWas(t *testing.T) {
	testutil.Privileged(t)
	boom := errors.New("injected failure after the maps were pinned")
	openFault = func() error { return boom }
	t.Cleanup(func() { openFault = nil })

	t.Run("fresh pin root is removed", func(t *testing.T) {
		root := testPinRoot(t)
		if _, err := Open(Config{PinRoot: root}); !errors.Is(err, boom) {
			t.Fatalf("Open = %v, want the injected failure", err)
		}
		if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("pin root after a failed first start: %v, want it gone", err)
		}
	})
	t.Run("existing pins stay", func(t *testing.T) {
		root := testPinRoot(t)
		openFault = nil
		d, err := Open(Config{PinRoot: root})
		testutil.Require(t, "datapath load", err)
		t.Cleanup(func() { _ = Cleanup(Config{PinRoot: root}) })
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		openFault = func() error { return boom }
		if _, err := Open(Config{PinRoot: root}); !errors.Is(err, boom) {
			t.Fatalf("Open = %v, want the injected failure", err)
		}
		if _, err := os.Stat(filepath.Join(root, "moat_ct")); err != nil {
			t.Fatalf("pinned CT map after a failed restart: %v, want it kept", err)
		}
	})
}
