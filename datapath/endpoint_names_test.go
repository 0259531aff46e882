package datapath

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

func TestEndpointNetnsName(t *testing.T) {
	long := strings.Repeat("n", 100)
	tests := []struct {
		name   string
		ep     policy.Endpoint
		want   string // exact; empty means check the hashed form
		hashed bool
	}{
		{name: "plain", ep: policy.Endpoint{Namespace: "default", Name: "web"}, want: "moat-default-web"},
		{name: "dots and dashes", ep: policy.Endpoint{Namespace: "kube-system", Name: "core.dns-1"}, want: "moat-kube-system-core.dns-1"},
		{name: "long", ep: policy.Endpoint{Namespace: "default", Name: long}, hashed: true},
		{name: "unsafe characters", ep: policy.Endpoint{Namespace: "a b", Name: "c/d"}, hashed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := epNetnsName("moat-", tt.ep)
			if !tt.hashed {
				if got != tt.want {
					t.Fatalf("epNetnsName = %q, want %q", got, tt.want)
				}
				return
			}
			if len(got) > epNetnsNameMax || !epCleanName(got) || !strings.HasPrefix(got, "moat-") {
				t.Fatalf("epNetnsName = %q: want a clean name of at most %d bytes starting with the prefix", got, epNetnsNameMax)
			}
			if again := epNetnsName("moat-", tt.ep); again != got {
				t.Fatalf("epNetnsName not deterministic: %q then %q", got, again)
			}
		})
	}
	t.Run("truncation keeps names apart", func(t *testing.T) {
		a := epNetnsName("moat-", policy.Endpoint{Namespace: "default", Name: long + "a"})
		b := epNetnsName("moat-", policy.Endpoint{Namespace: "default", Name: long + "b"})
		if a == b {
			t.Fatalf("two long names map to the same netns %q", a)
		}
	})
}

func TestEndpointHostIfname(t *testing.T) {
	eps := []policy.Endpoint{
		{Namespace: "default", Name: "web"},
		{Namespace: "default", Name: "web2"},
		{Namespace: "default-web", Name: ""},
		{Namespace: "a-b", Name: "c"},
		{Namespace: "a", Name: "b-c"},
	}
	seen := map[string]policy.Endpoint{}
	for _, ep := range eps {
		name := epHostIfname("moat-", ep)
		if len(name) > 15 || !strings.HasPrefix(name, "lxc") {
			t.Errorf("epHostIfname(%v) = %q: want lxc… of at most 15 characters", ep, name)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("epHostIfname(%v) = %q, same as for %v", ep, name, other)
		}
		seen[name] = ep
	}
	if epHostIfname("moat-", eps[0]) == epHostIfname("test-", eps[0]) {
		t.Errorf("host interface name does not depend on the prefix")
	}
}

func TestEndpointAlias(t *testing.T) {
	tests := []struct {
		name  string
		alias string
		ok    bool
		want  [3]string
	}{
		{name: "round trip", alias: epAlias("moat-", policy.Endpoint{Namespace: "ns", Name: "web"}), ok: true, want: [3]string{"moat-", "ns", "web"}},
		{name: "name with slash and colon", alias: epAlias("p", policy.Endpoint{Namespace: "ns", Name: "a/b:c"}), ok: true, want: [3]string{"p", "ns", "a/b:c"}},
		{name: "empty namespace", alias: epAlias("p", policy.Endpoint{Name: "web"}), ok: true, want: [3]string{"p", "", "web"}},
		{name: "foreign alias", alias: "uplink to rack 3"},
		{name: "no prefix", alias: "moat::ns/web"},
		{name: "no name", alias: "moat:p:ns/"},
		{name: "no slash", alias: "moat:p:nsweb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ns, n, ok := epParseAlias(tt.alias)
			if ok != tt.ok {
				t.Fatalf("epParseAlias(%q) ok = %v, want %v", tt.alias, ok, tt.ok)
			}
			if ok && [3]string{p, ns, n} != tt.want {
				t.Fatalf("epParseAlias(%q) = %q, want %q", tt.alias, [3]string{p, ns, n}, tt.want)
			}
		})
	}
}

func TestEndpointValidate(t *testing.T) {
	v4 := netip.MustParseAddr("10.200.0.1")
	v6 := netip.MustParseAddr("fd00:200::1")
	tests := []struct {
		name    string
		ep      policy.Endpoint
		wantErr string
	}{
		{name: "v4 only", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv4: v4}},
		{name: "v6 only", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv6: v6}},
		{name: "dual stack adopted", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv4: v4, IPv6: v6, Interface: "veth0"}},
		{name: "no name", ep: policy.Endpoint{Namespace: "ns", IPv4: v4}, wantErr: "name is empty"},
		{name: "no address", ep: policy.Endpoint{Namespace: "ns", Name: "a"}, wantErr: "no IPv4"},
		{name: "v6 in v4 field", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv4: v6}, wantErr: "ipv4"},
		{name: "mapped v4 in v6 field", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv6: netip.MustParseAddr("::ffff:10.0.0.1")}, wantErr: "ipv6"},
		{name: "link-local v6", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv6: netip.MustParseAddr("fe80::1")}, wantErr: "ipv6"},
		{name: "slash in namespace", ep: policy.Endpoint{Namespace: "a/b", Name: "a", IPv4: v4}, wantErr: "namespace"},
		{name: "interface too long", ep: policy.Endpoint{Namespace: "ns", Name: "a", IPv4: v4, Interface: "abcdefghijklmnop"}, wantErr: "interface"},
		{name: "too long for alias", ep: policy.Endpoint{Namespace: "ns", Name: strings.Repeat("a", 250), IPv4: v4}, wantErr: "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := epValidate("moat-", tt.ep)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("epValidate = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("epValidate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
