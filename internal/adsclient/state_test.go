package adsclient

import (
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

const clusterType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

func clusterAny(t *testing.T, name string) *anypb.Any {
	t.Helper()
	a, err := anypb.New(&clusterv3.Cluster{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestStateApply(t *testing.T) {
	sotw := func(version string, names ...string) func(*testing.T) *Response {
		return func(t *testing.T) *Response {
			r := &Response{TypeURL: clusterType, Version: version}
			for _, n := range names {
				r.Resources = append(r.Resources, Resource{Body: clusterAny(t, n)})
			}
			return r
		}
	}
	delta := func(version string, removed []string, names ...string) func(*testing.T) *Response {
		return func(t *testing.T) *Response {
			r := &Response{TypeURL: clusterType, Version: version, Delta: true, Removed: removed}
			for _, n := range names {
				r.Resources = append(r.Resources, Resource{Name: n, Body: clusterAny(t, n)})
			}
			return r
		}
	}
	tests := []struct {
		name      string
		responses []func(*testing.T) *Response
		want      []string
		version   string
	}{
		{"sotw replaces the type", []func(*testing.T) *Response{sotw("1", "a", "b"), sotw("2", "c")}, []string{"c"}, "2"},
		{"sotw empty response clears", []func(*testing.T) *Response{sotw("1", "a"), sotw("2")}, nil, "2"},
		{"delta adds and removes", []func(*testing.T) *Response{delta("1", nil, "a", "b"), delta("2", []string{"a"}, "c")}, []string{"b", "c"}, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState()
			for _, r := range tt.responses {
				if err := s.Apply(r(t)); err != nil {
					t.Fatal(err)
				}
			}
			got := slices.Sorted(maps.Keys(s.Resources(clusterType)))
			if !slices.Equal(got, tt.want) {
				t.Errorf("resources = %v, want %v", got, tt.want)
			}
			if v := s.Version(clusterType); v != tt.version {
				t.Errorf("version = %q, want %q", v, tt.version)
			}
			if types := s.Types(); !slices.Equal(types, []string{clusterType}) {
				t.Errorf("types = %v, want [%s]", types, clusterType)
			}
		})
	}
}

func TestResponseNamesOfUnnamedResource(t *testing.T) {
	a, err := anypb.New(&anypb.Any{})
	if err != nil {
		t.Fatal(err)
	}
	r := &Response{TypeURL: a.GetTypeUrl(), Resources: []Resource{{Body: a}}}
	if _, err := r.Names(); err == nil {
		t.Fatal("Names of a resource without a name field succeeded")
	}
}
