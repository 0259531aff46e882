package l7proxy

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	base := Config{Node: "n", XDSTarget: "/run/moat/xds.sock"}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"defaults are valid", func(*Config) {}, ""},
		{"tcp target", func(c *Config) { c.XDSTarget = "127.0.0.1:18000" }, ""},
		{"unix scheme target", func(c *Config) { c.XDSTarget = "unix:/run/x.sock" }, ""},
		{"missing node", func(c *Config) { c.Node = "" }, "node: must not be empty"},
		{"missing target", func(c *Config) { c.XDSTarget = "" }, "xdsTarget: must not be empty"},
		{"bad target", func(c *Config) { c.XDSTarget = "nohostport" }, "xdsTarget"},
		{"bad access log target", func(c *Config) { c.AccessLogTarget = "x" }, "accessLogTarget"},
		{"admin on a public address", func(c *Config) { c.AdminAddr = "10.0.0.1:9901" }, "not a loopback"},
		{"admin on loopback", func(c *Config) { c.AdminAddr = "127.0.0.1:0" }, ""},
		{"admin on a socket", func(c *Config) { c.AdminAddr = "/run/moat/admin.sock" }, ""},
		{"backoff inverted", func(c *Config) { c.BackoffMin, c.BackoffMax = 2, 1 }, "backoff"},
		{"bad listen override", func(c *Config) { c.ListenOverride = "x" }, "listenOverride"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			err := c.WithDefaults().Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
