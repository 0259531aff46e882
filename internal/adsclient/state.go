package adsclient

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/anypb"
)

// State is what a client holds after applying responses in order: per type
// URL, the resources by name and the version of the last response. It
// plays the part of a proxy's applied configuration. It is not safe for
// concurrent use.
type State struct {
	types    map[string]map[string]*anypb.Any
	versions map[string]string
}

// NewState returns an empty State.
func NewState() *State {
	return &State{types: map[string]map[string]*anypb.Any{}, versions: map[string]string{}}
}

// Apply folds r into s: a SotW response replaces every resource of its
// type, a delta response adds, replaces and removes the ones it names.
func (s *State) Apply(r *Response) error {
	names, err := r.Names()
	if err != nil {
		return err
	}
	m := s.types[r.TypeURL]
	if m == nil || !r.Delta {
		m = make(map[string]*anypb.Any, len(r.Resources))
		s.types[r.TypeURL] = m
	}
	for i, n := range names {
		m[n] = r.Resources[i].Body
	}
	for _, n := range r.Removed {
		delete(m, n)
	}
	s.versions[r.TypeURL] = r.Version
	return nil
}

// Resources returns the resources of typeURL by name (a copy of the map).
func (s *State) Resources(typeURL string) map[string]*anypb.Any {
	return maps.Clone(s.types[typeURL])
}

// Version is the version of the last response of typeURL applied.
func (s *State) Version(typeURL string) string { return s.versions[typeURL] }

// Types returns the type URLs s holds, sorted.
func (s *State) Types() []string {
	return slices.Sorted(maps.Keys(s.types))
}
