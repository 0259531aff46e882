package envoy

import (
	"slices"
	"sync"

	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	// Every Envoy type that a moat-driven Envoy can put in a config dump or
	// that moat's own resources pack into an Any, linked in so that
	// protoregistry.GlobalTypes resolves them. Blank imports only register
	// the generated types; they run no code of their own.
	_ "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// adminTypes resolves type URLs for protojson. Types that moat does not link
// in resolve to an empty placeholder message instead of failing the whole
// config dump: a dump of an Envoy with extensions moat never configures
// still parses, the unknown Any values come out empty, and the URLs are
// recorded so that callers can say what they could not read.
type adminTypes struct {
	placeholder protoreflect.MessageType

	mu      sync.Mutex
	unknown map[string]bool
}

func newAdminTypes() *adminTypes {
	return &adminTypes{placeholder: placeholderType(), unknown: map[string]bool{}}
}

// placeholderType builds a field-less message type. It is not a well-known
// type, so protojson reads the Any's inline fields into it (and discards
// them, with DiscardUnknown).
func placeholderType() protoreflect.MessageType {
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:        ptr("moat/envoy/admin_placeholder.proto"),
		Package:     ptr("moat.envoy.admin"),
		Syntax:      ptr("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: ptr("Unknown")}},
	}, nil)
	if err != nil {
		// The descriptor is a constant; failing to build it is a bug.
		panic("envoy: build placeholder descriptor: " + err.Error())
	}
	return dynamicpb.NewMessageType(fd.Messages().Get(0))
}

func ptr[T any](v T) *T { return &v }

func (r *adminTypes) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(n)
}

func (r *adminTypes) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err == protoregistry.NotFound {
		r.mu.Lock()
		r.unknown[url] = true
		r.mu.Unlock()
		return r.placeholder, nil
	}
	return mt, err
}

func (r *adminTypes) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(n)
}

func (r *adminTypes) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(m, n)
}

// Unknown returns the type URLs that resolved to the placeholder, sorted.
func (r *adminTypes) Unknown() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.unknown))
	for u := range r.unknown {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}
