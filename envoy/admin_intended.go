package envoy

import (
	"encoding/json"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// IntendedResourcesPath is the agent API path that serves a node's
// intended resources as IntendedResources JSON (query: node=NAME).
const IntendedResourcesPath = "/v1/xds/resources"

// IntendedResources are the resources the agent serves a node over xDS,
// as the agent's local API hands them to `moat envoy status|diff`.
//
// Wire format (JSON):
//
//	{"node": "n1", "version": "…",
//	 "resources": {"type.googleapis.com/envoy.config.listener.v3.Listener": [{"@type": "…", …}, …], …}}
//
// Each resource is a protojson google.protobuf.Any whose @type equals its
// key.
type IntendedResources struct {
	Node      string
	Version   string
	Resources map[resource.Type][]types.Resource
}

type intendedWire struct {
	Node      string                       `json:"node,omitempty"`
	Version   string                       `json:"version"`
	Resources map[string][]json.RawMessage `json:"resources"`
}

// MarshalJSON encodes r in the wire format. Types are ordered by URL and
// resources keep their order, so equal inputs give equal bytes.
func (r *IntendedResources) MarshalJSON() ([]byte, error) {
	w := intendedWire{Node: r.Node, Version: r.Version, Resources: map[string][]json.RawMessage{}}
	for typeURL, rs := range r.Resources {
		list := make([]json.RawMessage, 0, len(rs))
		for _, res := range rs {
			a := &anypb.Any{}
			if err := anypb.MarshalFrom(a, res, proto.MarshalOptions{Deterministic: true}); err != nil {
				return nil, fmt.Errorf("encode intended %s: %w", typeURL, err)
			}
			if a.GetTypeUrl() != typeURL {
				return nil, fmt.Errorf("encode intended resources: %s listed under %s", a.GetTypeUrl(), typeURL)
			}
			b, err := protojson.MarshalOptions{Resolver: protoregistry.GlobalTypes}.Marshal(a)
			if err != nil {
				return nil, fmt.Errorf("encode intended %s: %w", typeURL, err)
			}
			list = append(list, b)
		}
		w.Resources[typeURL] = list
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the wire format. A resource whose @type differs
// from its key, or that moat cannot resolve, is an error.
func (r *IntendedResources) UnmarshalJSON(data []byte) error {
	var w intendedWire
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("decode intended resources: %w", err)
	}
	out := IntendedResources{Node: w.Node, Version: w.Version, Resources: make(map[resource.Type][]types.Resource, len(w.Resources))}
	for typeURL, list := range w.Resources {
		rs := make([]types.Resource, 0, len(list))
		for i, raw := range list {
			a := &anypb.Any{}
			if err := (protojson.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, a); err != nil {
				return fmt.Errorf("decode intended resources: %s[%d]: %w", typeURL, i, err)
			}
			if a.GetTypeUrl() != typeURL {
				return fmt.Errorf("decode intended resources: %s[%d]: @type is %s", typeURL, i, a.GetTypeUrl())
			}
			m, err := a.UnmarshalNew()
			if err != nil {
				return fmt.Errorf("decode intended resources: %s[%d]: %w", typeURL, i, err)
			}
			rs = append(rs, m)
		}
		out.Resources[typeURL] = rs
	}
	*r = out
	return nil
}

// MarshalIntended encodes r for the agent API.
func MarshalIntended(r *IntendedResources) ([]byte, error) { return r.MarshalJSON() }

// UnmarshalIntended decodes an agent API answer.
func UnmarshalIntended(data []byte) (*IntendedResources, error) {
	r := &IntendedResources{}
	if err := r.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return r, nil
}
