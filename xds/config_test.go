package xds

import (
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func testRouteConfig(name string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"defaults", Config{}, ""},
		{"loopback v4", Config{TCPAddr: "127.0.0.1:18000"}, ""},
		{"loopback v6", Config{TCPAddr: "[::1]:0"}, ""},
		{"localhost", Config{TCPAddr: "localhost:18000"}, ""},
		{"not loopback", Config{TCPAddr: "10.0.0.1:18000"}, "not a loopback address"},
		{"any address", Config{TCPAddr: "0.0.0.0:18000"}, "not a loopback address"},
		{"empty host", Config{TCPAddr: ":18000"}, "neither an IP address nor localhost"},
		{"no port", Config{TCPAddr: "127.0.0.1"}, "tcpAddr"},
		{"host name", Config{TCPAddr: "example.com:80"}, "neither an IP address nor localhost"},
		{"socket too long", Config{Socket: "/" + strings.Repeat("s", 120)}, "longer than the unix socket limit"},
		{"history too short", Config{VersionHistory: 1}, "versionHistory"},
		{"negative grace", Config{ShutdownGrace: -time.Second}, "shutdownGrace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.WithDefaults().Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("zero config without defaults", func(t *testing.T) {
		if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "socket: must not be empty") {
			t.Fatalf("Validate() of a zero Config = %v, want the empty socket reported", err)
		}
	})
	t.Run("New validates", func(t *testing.T) {
		if _, err := New(Config{TCPAddr: "192.0.2.1:1"}, discardLogger(), newRegistry()); err == nil || !strings.Contains(err.Error(), "is not a loopback address") {
			t.Fatalf("New with a non-loopback TCP address: %v, want it refused as not loopback", err)
		}
	})
}

func TestMetricsLint(t *testing.T) {
	reg := newRegistry()
	if _, err := New(Config{}, discardLogger(), reg); err != nil {
		t.Fatal(err)
	}
	problems, err := promtest.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if _, err := New(Config{}, discardLogger(), reg); err == nil || !strings.Contains(err.Error(), "duplicate metrics collector registration") {
		t.Errorf("a second New on the same registry: %v, want a duplicate registration error", err)
	}
}

// TestNoPolicyImport: xds serves resources and must not know policies.
func TestNoPolicyImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/moatnet/moat/policy" || strings.HasPrefix(dep, "github.com/moatnet/moat/policy/") {
			t.Errorf("xds depends on %s", dep)
		}
	}
}
