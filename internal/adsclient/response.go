package adsclient

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Response is one discovery response, SotW or delta.
type Response struct {
	TypeURL string
	// Version is version_info (SotW) or system_version_info (delta).
	Version string
	Nonce   string
	// Delta tells a delta response (changed resources and Removed) from a
	// SotW one (every resource of the subscription).
	Delta     bool
	Resources []Resource
	Removed   []string // delta only
}

// Resource is one resource of a response. Name and Version are set for
// delta responses; a SotW resource carries its name only inside Body (see
// Response.Names), which is decoded on demand, not on receipt, so that a
// client that only ACKs stays cheap.
type Resource struct {
	Name    string
	Version string
	Body    *anypb.Any
}

// Names returns the names of r's resources, in order, decoding SotW bodies.
func (r *Response) Names() ([]string, error) {
	names := make([]string, 0, len(r.Resources))
	for i := range r.Resources {
		n, err := r.Resources[i].name()
		if err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, nil
}

// Messages decodes r's resources.
func (r *Response) Messages() ([]proto.Message, error) {
	out := make([]proto.Message, 0, len(r.Resources))
	for _, res := range r.Resources {
		m, err := res.Body.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", res.Body.GetTypeUrl(), err)
		}
		out = append(out, m)
	}
	return out, nil
}

func (res *Resource) name() (string, error) {
	if res.Name != "" {
		return res.Name, nil
	}
	m, err := res.Body.UnmarshalNew()
	if err != nil {
		return "", fmt.Errorf("decode %s: %w", res.Body.GetTypeUrl(), err)
	}
	n, ok := m.(interface{ GetName() string })
	if !ok {
		return "", fmt.Errorf("decode %s: resource has no name", res.Body.GetTypeUrl())
	}
	return n.GetName(), nil
}
