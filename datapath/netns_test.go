package datapath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moatnet/moat/internal/testutil"
)

func TestPrivilegedNetnsCreateDoDelete(t *testing.T) {
	testutil.Privileged(t)
	path := filepath.Join("/var/run/netns", "mtnetns-"+filepath.Base(t.TempDir()))
	testutil.Require(t, "named netns", netnsCreate(path))
	t.Cleanup(func() { _ = netnsDelete(path) })

	if ok, err := netnsIsMounted(path); err != nil || !ok {
		t.Fatalf("netnsIsMounted(%s) = %v, %v; want true", path, ok, err)
	}
	if err := netnsCreate(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("second netnsCreate = %v, want ErrExist", err)
	}
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	t.Run("do enters the netns", func(t *testing.T) {
		var links []netlink.Link
		err := netnsDo(path, func() (err error) {
			links, err = netlink.LinkList()
			return err
		})
		if err != nil {
			t.Fatalf("netnsDo: %v", err)
		}
		if len(links) != 1 || links[0].Attrs().Name != "lo" {
			t.Fatalf("links in a fresh netns = %v, want only lo", links)
		}
	})
	t.Run("error passes through", func(t *testing.T) {
		want := errors.New("boom")
		if err := netnsDo(path, func() error { return want }); !errors.Is(err, want) {
			t.Fatalf("netnsDo = %v, want %v", err, want)
		}
	})
	t.Run("panic reaches the caller", func(t *testing.T) {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want boom", r)
			}
		}()
		_ = netnsDo(path, func() error { panic("boom") })
		t.Fatal("netnsDo returned after a panic")
	})
	t.Run("missing netns", func(t *testing.T) {
		if err := netnsDo(path+"-missing", func() error { return nil }); err == nil || !strings.Contains(err.Error(), "open netns "+path+"-missing") {
			t.Fatalf("netnsDo on a missing path: %v, want the path named", err)
		}
	})

	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Fatal("the test goroutine's thread changed netns")
	}

	if err := netnsDelete(path); err != nil {
		t.Fatalf("netnsDelete: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("netns file after delete: %v", err)
	}
	if err := netnsDelete(path); err != nil {
		t.Fatalf("second netnsDelete: %v", err)
	}
	if ok, err := netnsIsMounted(path); err != nil || ok {
		t.Fatalf("netnsIsMounted after delete = %v, %v", ok, err)
	}
}
