package l7proxy

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// onlyFields refuses a message that sets any field outside allowed (proto
// field names) or carries fields unknown to this build: the proxy runs
// exactly what it understands and NACKs the rest.
func onlyFields(m proto.Message, where string, allowed ...string) error {
	if m == nil {
		return nil
	}
	r := m.ProtoReflect()
	if !r.IsValid() {
		return nil
	}
	var bad []string
	for fd := range r.Range {
		if !slices.Contains(allowed, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%s: unsupported field %s", where, strings.Join(bad, ", "))
	}
	if len(r.GetUnknown()) > 0 {
		return fmt.Errorf("%s: fields unknown to this proxy", where)
	}
	return nil
}

// unpack decodes a typed config into m, which must be its type.
func unpack(a *anypb.Any, m proto.Message, where string) error {
	if a == nil {
		return fmt.Errorf("%s: missing typed_config", where)
	}
	if !a.MessageIs(m) {
		return fmt.Errorf("%s: unsupported type %s", where, a.GetTypeUrl())
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("%s: decode %s: %w", where, a.GetTypeUrl(), err)
	}
	return nil
}
