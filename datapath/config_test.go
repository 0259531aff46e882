package datapath

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"relative pin root", func(c *Config) { c.PinRoot = "moat" }, "pinRoot"},
		{"unknown attach mode", func(c *Config) { c.Attach = "xdp" }, "attach"},
		{"CT lifetime below a second", func(c *Config) { c.CTLifetimeClosing = time.Millisecond }, "ctLifetimeClosing"},
		{"CT map too small", func(c *Config) { c.CTMaxEntries = 100 }, "ctMaxEntries 100"},
		{"CT map too large", func(c *Config) { c.CTMaxEntries = 1 << 25 }, "ctMaxEntries 33554432"},
		{"CT map at the bounds", func(c *Config) { c.CTMaxEntries = MinCTMaxEntries }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
	if got := DefaultConfig().CTMaxEntries; got != 262144 {
		t.Errorf("default CTMaxEntries %d, want 262144", got)
	}
}
