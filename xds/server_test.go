package xds

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

var transports = []struct {
	name string
	tcp  bool
}{{"unix", false}, {"tcp", true}}

var protocols = []protocol{sotw, delta}

// recvN receives n responses and returns them by type URL.
func recvN(t *testing.T, st adsStream, n int) map[string]response {
	t.Helper()
	got := make(map[string]response, n)
	for range n {
		r, err := st.recv()
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		got[r.typeURL] = r
	}
	return got
}

func mustAck(t *testing.T, st adsStream, rs ...response) {
	t.Helper()
	for _, r := range rs {
		if err := st.ack(r); err != nil {
			t.Fatalf("ack %s: %v", r.typeURL, err)
		}
	}
}

func subscribeAll(t *testing.T, st adsStream) {
	t.Helper()
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		if err := st.subscribe(typeURL); err != nil {
			t.Fatalf("subscribe %s: %v", typeURL, err)
		}
	}
}

func checkResponse(t *testing.T, responses map[string]response, typeURL, version string, names ...string) response {
	t.Helper()
	r, ok := responses[typeURL]
	if !ok {
		t.Fatalf("no %s response, got %v", typeURL, responses)
	}
	if r.version != version {
		t.Errorf("%s version = %q, want %q", typeURL, r.version, version)
	}
	got, err := r.resourceNames()
	if err != nil {
		t.Fatalf("%s: %v", typeURL, err)
	}
	if !slices.Equal(got, names) {
		t.Errorf("%s names = %v, want %v", typeURL, got, names)
	}
	return r
}

// waitExpiring waits with a deadline that must expire: nothing will ACK.
func waitExpiring(t *testing.T, s *testServer, node, version string, typeURLs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitForACK(ctx, node, version, typeURLs...); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForACK(%s) before the ACK = %v, want deadline exceeded", version, err)
	}
}

func waitACK(t *testing.T, s *testServer, node, version string, typeURLs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := s.WaitForACK(ctx, node, version, typeURLs...); err != nil {
		t.Fatalf("WaitForACK(%s): %v", version, err)
	}
}

func nodeStatus(s *testServer, node string) (NodeStatus, bool) {
	for _, ns := range s.Status() {
		if ns.Node == node {
			return ns, true
		}
	}
	return NodeStatus{}, false
}

func typeStatus(ns NodeStatus, typeURL string) TypeStatus {
	for _, ts := range ns.Types {
		if ts.TypeURL == typeURL {
			return ts
		}
	}
	return TypeStatus{}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestADS walks one node through its life over a real gRPC ADS stream:
// first push, ACK, version bump, NACK, reconnect.
func TestADS(t *testing.T) {
	const (
		node     = "node-a"
		cluster  = "moat/egress"
		listener = "moat/egress-http/15001"
	)
	for _, tr := range transports {
		for _, p := range protocols {
			t.Run(string(p)+"/"+tr.name, func(t *testing.T) {
				s := startServer(t, tr.tcp, t.Output())
				conn := s.dial(t, tr.tcp)
				ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
				defer cancel()

				if err := s.SetResources(ctx, node, "v1", testResources(t, "v1")); err != nil {
					t.Fatal(err)
				}
				if err := s.WaitForACK(ctx, node, "v1"); !errors.Is(err, ErrNotSubscribed) {
					t.Fatalf("WaitForACK before any stream = %v, want ErrNotSubscribed", err)
				}

				// First push.
				st, err := openStream(ctx, conn, p, node)
				if err != nil {
					t.Fatal(err)
				}
				subscribeAll(t, st)
				got := recvN(t, st, 2)
				c1 := checkResponse(t, got, resource.ClusterType, "v1", cluster)
				l1 := checkResponse(t, got, resource.ListenerType, "v1", listener)
				waitExpiring(t, s, node, "v1")
				mustAck(t, st, c1, l1)
				waitACK(t, s, node, "v1", resource.ClusterType, resource.ListenerType)
				waitACK(t, s, node, "v1") // every non-empty type
				ns, _ := nodeStatus(s, node)
				if !ns.Connected || ns.Streams != 1 || ns.Version != "v1" {
					t.Errorf("status = %+v, want connected with 1 stream at v1", ns)
				}

				// Version bump: v2 waits for both types.
				if err := s.SetResources(ctx, node, "v2", testResources(t, "v2")); err != nil {
					t.Fatal(err)
				}
				got = recvN(t, st, 2)
				c2 := checkResponse(t, got, resource.ClusterType, "v2", cluster)
				l2 := checkResponse(t, got, resource.ListenerType, "v2", listener)
				mustAck(t, st, c2)
				waitExpiring(t, s, node, "v2", resource.ClusterType, resource.ListenerType)
				waitACK(t, s, node, "v2", resource.ClusterType) // the cluster alone is done
				mustAck(t, st, l2)
				waitACK(t, s, node, "v2", resource.ClusterType, resource.ListenerType)
				waitACK(t, s, node, "v1", resource.ListenerType) // superseded

				// NACK of the listener of v3.
				if err := s.SetResources(ctx, node, "v3", testResources(t, "v3")); err != nil {
					t.Fatal(err)
				}
				got = recvN(t, st, 2)
				c3 := checkResponse(t, got, resource.ClusterType, "v3", cluster)
				l3 := checkResponse(t, got, resource.ListenerType, "v3", listener)
				mustAck(t, st, c3)
				const detail = "Error adding/updating listener(s) moat/egress-http/15001: unknown filter"
				if err := st.nack(l3, detail); err != nil {
					t.Fatal(err)
				}
				err = s.WaitForACK(ctx, node, "v3", resource.ClusterType, resource.ListenerType)
				var nack *NACKError
				if !errors.As(err, &nack) {
					t.Fatalf("WaitForACK(v3) = %v, want *NACKError", err)
				}
				want := NACKError{Node: node, Type: resource.ListenerType, Version: "v3", Detail: detail}
				if *nack != want {
					t.Errorf("NACKError = %+v, want %+v", *nack, want)
				}
				if n := promtest.ToFloat64(s.m.nacks.WithLabelValues("listener")); n != 1 {
					t.Errorf("moat_xds_nacks_total{type=listener} = %v, want 1", n)
				}
				if n := promtest.ToFloat64(s.m.waitFailures.WithLabelValues(ReasonNACK)); n != 1 {
					t.Errorf("moat_xds_wait_failures_total{reason=nack} = %v, want 1", n)
				}
				ns, _ = nodeStatus(s, node)
				lst := typeStatus(ns, resource.ListenerType)
				if lst.Sent != "v3" || lst.ACKed != "v2" || lst.LastNACK == nil || lst.LastNACK.Version != "v3" || lst.LastNACK.Detail != detail || lst.LastNACK.Code != 3 {
					t.Errorf("listener status = %+v (NACK %+v), want sent v3, ACKed v2, NACK of v3", lst, lst.LastNACK)
				}

				// Reconnect: the new stream gets the current version again,
				// and its ACK is tracked.
				st.close()
				eventually(t, "node disconnected", func() bool {
					ns, _ := nodeStatus(s, node)
					return !ns.Connected
				})
				if n := promtest.ToFloat64(s.m.connectedNodes); n != 0 {
					t.Errorf("moat_xds_connected_nodes = %v after close, want 0", n)
				}
				st, err = openStream(ctx, conn, p, node)
				if err != nil {
					t.Fatal(err)
				}
				defer st.close()
				subscribeAll(t, st)
				got = recvN(t, st, 2)
				c3 = checkResponse(t, got, resource.ClusterType, "v3", cluster)
				l3 = checkResponse(t, got, resource.ListenerType, "v3", listener)
				mustAck(t, st, c3, l3)
				waitACK(t, s, node, "v3", resource.ClusterType, resource.ListenerType)
				if n := promtest.ToFloat64(s.m.connectedNodes); n != 1 {
					t.Errorf("moat_xds_connected_nodes = %v, want 1", n)
				}
				if n := promtest.ToFloat64(s.m.acks.WithLabelValues("listener")); n != 3 {
					t.Errorf("moat_xds_acks_total{type=listener} = %v, want 3", n)
				}
			})
		}
	}
}

// TestWaitForACKUnchangedType: a version that leaves a type as it was is
// ACKed for that type by the ACK of the earlier version. Delta sends nothing
// for such a type, so without this the wait would never end.
func TestWaitForACKUnchangedType(t *testing.T) {
	const node = "node-b"
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			s := startServer(t, false, t.Output())
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			st, err := openStream(ctx, s.dial(t, false), p, node)
			if err != nil {
				t.Fatal(err)
			}
			defer st.close()
			subscribeAll(t, st)
			if err := s.SetResources(ctx, node, "1", testResources(t, "same")); err != nil {
				t.Fatal(err)
			}
			got := recvN(t, st, 2)
			mustAck(t, st, got[resource.ClusterType], got[resource.ListenerType])
			waitACK(t, s, node, "1")

			res := testResources(t, "same")
			res[resource.ClusterType] = append(res[resource.ClusterType], testCluster("moat/extra", "2"))
			if err := s.SetResources(ctx, node, "2", res); err != nil {
				t.Fatal(err)
			}
			want := 2 // SotW resends every type with the new version
			if p == delta {
				want = 1 // delta sends the cluster change only
			}
			got = recvN(t, st, want)
			if _, ok := got[resource.ClusterType]; !ok {
				t.Fatalf("no cluster response: %v", got)
			}
			waitExpiring(t, s, node, "2")
			for _, r := range got {
				mustAck(t, st, r)
			}
			waitACK(t, s, node, "2", resource.ClusterType, resource.ListenerType)
		})
	}
}

// TestWaitForACKFailsClosed covers the waits that fail without an ACK.
func TestWaitForACKFailsClosed(t *testing.T) {
	s := startServer(t, false, t.Output())
	ctx := t.Context()
	if err := s.SetResources(ctx, "known", "v1", testResources(t, "v1")); err != nil {
		t.Fatal(err)
	}
	st, err := openStream(ctx, s.dial(t, false), sotw, "known")
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	subscribeAll(t, st)
	recvN(t, st, 2)

	tests := []struct {
		name    string
		node    string
		version string
		timeout time.Duration
		want    error
		reason  string
	}{
		{"node that never subscribed", "never", "v1", waitTimeout, ErrNotSubscribed, ReasonNotSubscribed},
		{"version never set", "known", "v9", waitTimeout, ErrUnknownVersion, ReasonUnknownVersion},
		{"no ACK before the deadline", "known", "v1", 20 * time.Millisecond, context.DeadlineExceeded, ReasonTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := promtest.ToFloat64(s.m.waitFailures.WithLabelValues(tt.reason))
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			if err := s.WaitForACK(ctx, tt.node, tt.version); !errors.Is(err, tt.want) {
				t.Fatalf("WaitForACK = %v, want %v", err, tt.want)
			}
			if after := promtest.ToFloat64(s.m.waitFailures.WithLabelValues(tt.reason)); after != before+1 {
				t.Errorf("moat_xds_wait_failures_total{reason=%s} = %v, want %v", tt.reason, after, before+1)
			}
		})
	}
}

func TestSetResourcesRejects(t *testing.T) {
	s := startServer(t, false, nil)
	ctx := t.Context()
	if err := s.SetResources(ctx, "n", "v1", testResources(t, "v1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetResources(ctx, "n", "v2", testResources(t, "v2")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		node    string
		version string
		wantErr string
	}{
		{name: "empty node", node: "", version: "v3", wantErr: "set xds resources: empty node"},
		{name: "empty version", node: "n", version: "", wantErr: `set xds resources for node "n": empty version`},
		{name: "current version reused", node: "n", version: "v2", wantErr: `"v2"`},
		{name: "older version reused", node: "n", version: "v1", wantErr: `"v1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.SetResources(ctx, tt.node, tt.version, testResources(t, "x"))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SetResources: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("inconsistent snapshot", func(t *testing.T) {
		res := testResources(t, "v3")
		res[resource.RouteType] = append(res[resource.RouteType], testRouteConfig("unreferenced"))
		if err := s.SetResources(ctx, "n", "v3", res); err == nil || !strings.Contains(err.Error(), `check snapshot "v3" for node "n"`) || !strings.Contains(err.Error(), "RouteConfiguration\" reference and resource lengths") {
			t.Fatalf("SetResources with a route that no listener references: %v, want the consistency check naming it", err)
		}
	})
	t.Run("unknown type", func(t *testing.T) {
		res := testResources(t, "v4")
		res["type.googleapis.com/example.Unknown"] = nil
		if err := s.SetResources(ctx, "n", "v4", res); err == nil || !strings.Contains(err.Error(), "example.Unknown") {
			t.Fatalf("SetResources with an unknown type: %v, want an error naming it", err)
		}
	})
}

func TestSocket(t *testing.T) {
	t.Run("mode 0660 and removed on exit", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "xds")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "sub", "xds.sock")
		runUntilReady(t, path, func() {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
				t.Errorf("socket mode = %v, want socket with 0660", fi.Mode())
			}
		})
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket left behind after Run: %v", err)
		}
	})
	t.Run("stale socket is replaced", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "xds")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "xds.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		// Stopping right after Ready may come before Serve starts: still
		// a clean end, and the socket is still removed.
		runUntilReady(t, path, func() {})
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket left behind after Run: %v", err)
		}
	})
	tests := []struct {
		name   string
		create func(t *testing.T, path string)
	}{
		{"regular file is kept", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"live socket is kept", func(t *testing.T, path string) {
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "xds")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			path := filepath.Join(dir, "xds.sock")
			tt.create(t, path)
			s, err := New(Config{Socket: path}, discardLogger(), newRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Run(t.Context()); err == nil {
				t.Fatal("Run succeeded, want an error")
			}
			if _, err := os.Lstat(path); err != nil {
				t.Errorf("%s was removed: %v", path, err)
			}
		})
	}
}

// runUntilReady runs a server on path, calls check once it is ready, then
// stops it and waits for Run to return.
func runUntilReady(t *testing.T, path string, check func()) {
	t.Helper()
	s, err := New(Config{Socket: path}, discardLogger(), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	}
	check()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestPerTypeService: the non-ADS listener discovery service serves the same
// snapshot and its ACKs are tracked.
func TestPerTypeService(t *testing.T) {
	const node = "node-lds"
	s := startServer(t, false, t.Output())
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := s.SetResources(ctx, node, "v1", testResources(t, "v1")); err != nil {
		t.Fatal(err)
	}
	st, err := listenerservice.NewListenerDiscoveryServiceClient(s.dial(t, false)).StreamListeners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersionInfo() != "v1" || len(resp.GetResources()) != 1 {
		t.Fatalf("response version %q with %d resources, want v1 with 1", resp.GetVersionInfo(), len(resp.GetResources()))
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: "v1", ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitACK(t, s, node, "v1", resource.ListenerType)
}
