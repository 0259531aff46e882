package netns

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// These checks need no privileges: entering the namespace the process is
// already in is allowed for root only, so they use the paths that fail
// before any Setns and the behaviour of the wrapper itself.

func TestDoMissingNamespace(t *testing.T) {
	err := Do("/nonexistent/netns", func() error { t.Error("fn ran"); return nil })
	if err == nil || !strings.Contains(err.Error(), "open netns /nonexistent/netns") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err %v, want it to name the missing netns", err)
	}
}

func TestDoOwnNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		// setns needs CAP_SYS_ADMIN even into one's own namespace; the
		// privileged datapath and e2e tests drive Do into real pod netns.
		err := Do("/proc/self/ns/net", func() error { return nil })
		if err == nil || !strings.Contains(err.Error(), "enter netns /proc/self/ns/net") {
			t.Fatalf("unprivileged Do: %v, want an enter error", err)
		}
		return
	}
	want := errors.New("from fn")
	if err := Do("/proc/self/ns/net", func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("err %v, want fn's error", err)
	}
	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want fn's panic", p)
		}
	}()
	_ = Do("/proc/self/ns/net", func() error { panic("boom") })
	t.Fatal("panic not re-raised")
}
