package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	good := Config{Policies: "/p", Endpoints: "/e"}.WithDefaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults with sources: %v", err)
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no policies", func(c *Config) { c.Policies = "" }, "policies: required"},
		{"no endpoints", func(c *Config) { c.Endpoints = "" }, "endpoints: required"},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, "stateDir:"},
		{"relative run dir", func(c *Config) { c.RunDir = "run" }, "runDir:"},
		{"poll too fast", func(c *Config) { c.PollInterval = Duration(time.Millisecond) }, "pollInterval:"},
		{"conntrack GC too often", func(c *Config) { c.ConntrackGCInterval = Duration(100 * time.Millisecond) }, "conntrackGCInterval:"},
		{"conntrack map too small", func(c *Config) { c.ConntrackMaxEntries = 10 }, "conntrackMaxEntries: 10"},
		{"bad attach", func(c *Config) { c.Attach = "xdp" }, `attach: "xdp"`},
		{"same proxy ports", func(c *Config) { c.IngressHTTPPort = c.EgressHTTPPort }, "ingressHTTPPort:"},
		{"dns proxy on an http port", func(c *Config) { c.DNSProxyPort = c.EgressHTTPPort }, "dnsProxyPort: 15001 is an HTTP proxy port"},
		{"bad metrics address", func(c *Config) { c.MetricsAddress = "nope" }, "metricsAddress:"},
		{"unknown hubble handler", func(c *Config) { c.Metrics = []string{"bogus"} }, "metrics:"},
		{"empty flow buffer", func(c *Config) { c.FlowBuffer = -1 }, "flowBuffer:"},
		{"bad http paths", func(c *Config) { c.HTTPPaths = "loose" }, `httpPaths: "loose": want strict, envoy`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("good", func(t *testing.T) {
		c, err := LoadConfig(write("good.yaml", "policies: /etc/moat/policies\nendpoints: /etc/moat/endpoints.yaml\npollInterval: 250ms\nnodeName: n1\n"))
		if err != nil {
			t.Fatal(err)
		}
		if c.PollInterval != Duration(250*time.Millisecond) || c.NodeName != "n1" || c.RunDir != DefaultRunDir {
			t.Fatalf("config %+v", c)
		}
	})
	t.Run("local delivery", func(t *testing.T) {
		c, err := LoadConfig(write("ld.yaml", "policies: /p\nendpoints: /e\n"))
		if err != nil || c.LocalDelivery == nil || !*c.LocalDelivery {
			t.Fatalf("default: %v, %v: want local delivery on", c.LocalDelivery, err)
		}
		c, err = LoadConfig(write("ld-off.yaml", "policies: /p\nendpoints: /e\nlocalDelivery: false\nconntrackMaxEntries: 524288\n"))
		if err != nil || c.LocalDelivery == nil || *c.LocalDelivery || c.ConntrackMaxEntries != 524288 {
			t.Fatalf("localDelivery: false: %v, %d, %v", c.LocalDelivery, c.ConntrackMaxEntries, err)
		}
	})
	t.Run("unknown field", func(t *testing.T) {
		_, err := LoadConfig(write("unknown.yaml", "policies: /p\nendpoints: /e\npolicys: /x\n"))
		if err == nil || !strings.Contains(err.Error(), "unknown.yaml") || !strings.Contains(err.Error(), "policys") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad duration", func(t *testing.T) {
		_, err := LoadConfig(write("dur.yaml", "policies: /p\nendpoints: /e\npollInterval: soon\n"))
		if err == nil || !strings.Contains(err.Error(), "soon") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("invalid value", func(t *testing.T) {
		_, err := LoadConfig(write("invalid.yaml", "policies: /p\nendpoints: /e\nattach: xdp\n"))
		if err == nil || !strings.Contains(err.Error(), "invalid.yaml") || !strings.Contains(err.Error(), "attach") {
			t.Fatalf("err = %v", err)
		}
	})
}
