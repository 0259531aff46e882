package datapath

import (
	"errors"
	"testing"
)

// TestPrivilegedProxyRoutingRefcount: the host's proxy routing is shared by
// every agent of the host netns. A removal (moat-agent cleanup of another
// agent) while a manager that ensured it is open deletes nothing and says
// so; once that manager closes, the removal goes through.
func TestPrivilegedProxyRoutingRefcount(t *testing.T) {
	env := newEpTestEnv(t)
	ctx := t.Context()
	user := env.manager(t)
	if err := user.EnsureProxyRouting(ctx); err != nil {
		t.Fatalf("EnsureProxyRouting: %v", err)
	}
	cleaner := env.manager(t)
	err := cleaner.RemoveProxyRouting(ctx)
	if !errors.Is(err, ErrProxyRoutingInUse) {
		t.Fatalf("RemoveProxyRouting while another manager uses it = %v, want ErrProxyRoutingInUse", err)
	}
	if ok, err := user.ProxyRoutingInstalled(); err != nil || !ok {
		t.Fatalf("proxy routing after a refused removal: installed=%v, %v; want installed", ok, err)
	}
	if err := user.Close(); err != nil {
		t.Fatalf("close the user: %v", err)
	}
	if err := cleaner.RemoveProxyRouting(ctx); err != nil {
		t.Fatalf("RemoveProxyRouting with no user left: %v", err)
	}
	if ok, err := cleaner.ProxyRoutingInstalled(); err != nil || ok {
		t.Fatalf("proxy routing after the removal: installed=%v, %v; want gone", ok, err)
	}
}
