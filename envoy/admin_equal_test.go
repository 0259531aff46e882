package envoy

import (
	"fmt"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

// adminEqualListener builds a listener whose HCM packs an RBAC filter with
// a policy map; deterministic chooses how the Any values are encoded.
func adminEqualListener(t *testing.T, policies int, prefix string, deterministic bool) *listenerv3.Listener {
	t.Helper()
	pack := func(m proto.Message) *anypb.Any {
		a := &anypb.Any{}
		if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: deterministic}); err != nil {
			t.Fatal(err)
		}
		return a
	}
	pol := map[string]*rbacv3.Policy{}
	for i := range policies {
		pol[fmt.Sprintf("p%d", i)] = &rbacv3.Policy{Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}
	}
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: prefix, HttpFilters: []*hcmv3.HttpFilter{{
		Name:       "envoy.filters.http.rbac",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(&rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Policies: pol}})},
	}}}
	return &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: pack(hcm)},
	}}}}}
}

// TestCanonicalEqual checks the fast equality against protocmp, the slow
// and obviously right one.
func TestCanonicalEqual(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b *listenerv3.Listener
	}{
		{"same, both deterministic", adminEqualListener(t, 30, "x", true), adminEqualListener(t, 30, "x", true)},
		{"same, encoded differently", adminEqualListener(t, 30, "x", false), adminEqualListener(t, 30, "x", true)},
		{"same, both random order", adminEqualListener(t, 30, "x", false), adminEqualListener(t, 30, "x", false)},
		{"one policy more", adminEqualListener(t, 30, "x", false), adminEqualListener(t, 31, "x", true)},
		{"nested field differs", adminEqualListener(t, 30, "x", false), adminEqualListener(t, 30, "y", false)},
		{"unknown Any type kept as bytes", &listenerv3.Listener{Name: "l", ListenerFilters: []*listenerv3.ListenerFilter{{
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/vendor.X", Value: []byte{8, 1}}},
		}}}, &listenerv3.Listener{Name: "l", ListenerFilters: []*listenerv3.ListenerFilter{{
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/vendor.X", Value: []byte{8, 2}}},
		}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := cmp.Equal(tc.a, tc.b, protocmp.Transform())
			if got := canonicalEqual(tc.a, tc.b); got != want {
				t.Errorf("canonicalEqual = %v, protocmp says %v", got, want)
			}
			if !canonicalEqual(tc.a, tc.a) {
				t.Error("a message differs from itself")
			}
		})
	}
}
