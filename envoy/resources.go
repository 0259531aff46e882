package envoy

import (
	"errors"
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// ByType returns the resources keyed by xDS type URL, the shape
// go-control-plane's cache.NewSnapshot takes.
func (r *Resources) ByType() map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: make([]types.Resource, 0, len(r.Listeners)),
		resource.ClusterType:  make([]types.Resource, 0, len(r.Clusters)),
		resource.RouteType:    make([]types.Resource, 0, len(r.Routes)),
	}
	for _, l := range r.Listeners {
		out[resource.ListenerType] = append(out[resource.ListenerType], l)
	}
	for _, c := range r.Clusters {
		out[resource.ClusterType] = append(out[resource.ClusterType], c)
	}
	for _, rc := range r.Routes {
		out[resource.RouteType] = append(out[resource.RouteType], rc)
	}
	return out
}

// Validate checks every resource with go-control-plane's ValidateAll,
// including the typed configs packed in Any fields (HTTP connection manager,
// RBAC, router, access log, upstream protocol options), checks that names
// are unique per type, that every route configuration a listener asks for
// over RDS exists, and that every cluster a route sends to exists. Clusters
// named by gRPC services (the access log) are bootstrap clusters and are not
// checked here.
func (r *Resources) Validate() error {
	var errs []error
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		if clusters[c.GetName()] {
			errs = append(errs, fmt.Errorf("cluster %q defined twice", c.GetName()))
		}
		clusters[c.GetName()] = true
		if err := validateDeep(c); err != nil {
			errs = append(errs, fmt.Errorf("validate cluster %q: %w", c.GetName(), err))
		}
	}
	routes := map[string]bool{}
	for _, rc := range r.Routes {
		if routes[rc.GetName()] {
			errs = append(errs, fmt.Errorf("route configuration %q defined twice", rc.GetName()))
		}
		routes[rc.GetName()] = true
		if err := validateDeep(rc); err != nil {
			errs = append(errs, fmt.Errorf("validate route configuration %q: %w", rc.GetName(), err))
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if c := rt.GetRoute().GetCluster(); c != "" && !clusters[c] {
					errs = append(errs, fmt.Errorf("route configuration %q: route %q sends to missing cluster %q", rc.GetName(), rt.GetName(), c))
				}
			}
		}
	}
	listeners := map[string]bool{}
	for _, l := range r.Listeners {
		if listeners[l.GetName()] {
			errs = append(errs, fmt.Errorf("listener %q defined twice", l.GetName()))
		}
		listeners[l.GetName()] = true
		if err := validateDeep(l); err != nil {
			errs = append(errs, fmt.Errorf("validate listener %q: %w", l.GetName(), err))
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
						errs = append(errs, fmt.Errorf("listener %q chain %q: %w", l.GetName(), fc.GetName(), err))
						continue
					}
					if n := hcm.GetRds().GetRouteConfigName(); n != "" && !routes[n] {
						errs = append(errs, fmt.Errorf("listener %q chain %q: missing route configuration %q", l.GetName(), fc.GetName(), n))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

type validator interface{ ValidateAll() error }

// validateDeep runs ValidateAll on m and on every message packed in an Any
// anywhere inside it. protoc-gen-validate never looks inside an Any.
func validateDeep(m proto.Message) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	return walkAny(m.ProtoReflect())
}

func walkAny(m protoreflect.Message) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = visit(mv.Message())
				return err == nil
			})
		case fd.Message() == nil:
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = visit(l.Get(i).Message())
			}
		default:
			err = visit(v.Message())
		}
		return err == nil
	})
	return err
}

func visit(m protoreflect.Message) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err)
		}
		if err := validateDeep(inner); err != nil {
			return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		return nil
	}
	return walkAny(m)
}

// toAny packs m deterministically: RBAC policies are a map, and the default
// marshaller orders map entries at random, which would change the bytes (and
// the xDS version hash) of identical configs.
func toAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("pack %T: %w", m, err)
	}
	return a, nil
}
