package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/moatnet/moat/agent"
)

// flagName is the flag of a config field: its JSON name in kebab case
// (conntrackGCInterval -> conntrack-gc-interval).
func flagName(json string) string {
	r := []rune(json)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			prevLower := unicode.IsLower(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (unicode.IsUpper(r[i-1]) && nextLower) {
				b.WriteByte('-')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// TestEveryConfigFieldHasAFlag sets each field of agent.Config through its
// flag and checks that exactly that field changed.
// configFileOnly are the config fields no flag can spell, with the reason.
var configFileOnly = map[string]string{
	"services": "a list of objects (name, frontends, backends)",
}

func TestEveryConfigFieldHasAFlag(t *testing.T) {
	typ := reflect.TypeFor[agent.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		json, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if json == "" || json == "-" {
			t.Errorf("field %s has no JSON name", f.Name)
			continue
		}
		name := flagName(json)
		if reason, ok := configFileOnly[json]; ok {
			t.Logf("%s: config file only (%s)", json, reason)
			continue
		}
		t.Run(name, func(t *testing.T) {
			var cfg agent.Config
			fs, _, _, _, _ := newFlagSet(&cfg)
			if fs.Lookup(name) == nil {
				t.Fatalf("config field %s (%s) has no flag --%s", f.Name, json, name)
			}
			var value string
			switch f.Type {
			case reflect.TypeFor[string]():
				value = "/x"
			case reflect.TypeFor[agent.Duration]():
				value = "7s"
			case reflect.TypeFor[bool](), reflect.TypeFor[*bool]():
				value = "true"
			case reflect.TypeFor[int](), reflect.TypeFor[uint32](), reflect.TypeFor[uint16]():
				value = "7"
			case reflect.TypeFor[[]string]():
				value = "a,b"
			default:
				t.Fatalf("field %s: no test value for type %s", f.Name, f.Type)
			}
			if err := fs.Parse([]string{"--" + name + "=" + value}); err != nil {
				t.Fatalf("--%s=%s: %v", name, value, err)
			}
			got := reflect.ValueOf(cfg)
			for j := range typ.NumField() {
				zero := got.Field(j).IsZero()
				if j == i && zero {
					t.Errorf("--%s=%s left %s unset", name, value, f.Name)
				}
				if j != i && !zero {
					t.Errorf("--%s=%s set %s too", name, value, typ.Field(j).Name)
				}
			}
		})
	}
}

// TestFlagsOverrideConfigFile: the file's values stand unless a flag is
// given; a flag switches a default-on boolean off, and a file's true off.
func TestFlagsOverrideConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	file := "policies: /p\nendpoints: /e\nverdictEvents: true\nallowHostIngress: true\ntcpHealth: true\nackTimeout: 3s\nmetrics: [dns, \"httpV2:labelsContext=source_namespace,destination_namespace\"]\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseArgs([]string{"--local-delivery=false", "--config", path, "--tcp-health=false", "--allow-host-ingress=false", "--poll-interval", "250ms"}, nil)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	if cfg.LocalDelivery == nil || *cfg.LocalDelivery {
		t.Errorf("--local-delivery=false: LocalDelivery = %v, want false", cfg.LocalDelivery)
	}
	if cfg.TCPHealth == nil || *cfg.TCPHealth {
		t.Errorf("--tcp-health=false over the file's true: TCPHealth = %v, want false", cfg.TCPHealth)
	}
	if cfg.AllowHostIngress {
		t.Error("--allow-host-ingress=false over the file's true: still true")
	}
	if !cfg.VerdictEvents || cfg.Policies != "/p" || cfg.ACKTimeout != agent.Duration(3*time.Second) {
		t.Errorf("file values lost: verdictEvents=%v policies=%q ackTimeout=%v", cfg.VerdictEvents, cfg.Policies, time.Duration(cfg.ACKTimeout))
	}
	if cfg.PollInterval != agent.Duration(250*time.Millisecond) {
		t.Errorf("--poll-interval 250ms: %v", time.Duration(cfg.PollInterval))
	}
	if len(cfg.Metrics) != 2 || !strings.Contains(cfg.Metrics[1], "destination_namespace") {
		t.Errorf("metrics from the file: %q", cfg.Metrics)
	}

	// A list flag replaces the file's list; repeated, it appends.
	cfg, _, err = parseArgs([]string{"--config", path, "--metrics", "drop", "--metrics", "httpV2:labelsContext=source_pod,destination_pod"}, nil)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	if want := []string{"drop", "httpV2:labelsContext=source_pod,destination_pod"}; !reflect.DeepEqual(cfg.Metrics, want) {
		t.Errorf("--metrics twice: %q, want %q", cfg.Metrics, want)
	}

	// Bad values name the flag.
	for _, args := range [][]string{{"--local-delivery=maybe"}, {"--egress-http-port=70000"}, {"--ack-timeout=soon"}} {
		_, _, err := parseArgs(args, nil)
		name := strings.TrimPrefix(strings.SplitN(args[0], "=", 2)[0], "--")
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("parseArgs(%q) = %v, want an error naming -%s", args, err, name)
		}
	}
}
