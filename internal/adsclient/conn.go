package adsclient

import (
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultMaxMessageSize bounds a received response. A node's listener with
// a thousand filter chains is several MiB; gRPC's own default (4 MiB) is
// too small for that.
const DefaultMaxMessageSize = 64 << 20

// Conn is a gRPC client connection to an xDS server. It embeds the
// *grpc.ClientConn, so the per-type discovery clients of go-control-plane
// can use it too.
type Conn struct {
	*grpc.ClientConn
}

// Dial returns a connection to target: a unix socket path (absolute,
// relative starting with ".", or "unix:PATH") or host:port. The connection
// is insecure (the xds server listens on a local socket or on loopback)
// and receives messages up to DefaultMaxMessageSize; opts are applied after
// those defaults. Like grpc.NewClient, Dial does not connect: the first
// stream does.
func Dial(target string, opts ...grpc.DialOption) (*Conn, error) {
	t, err := grpcTarget(target)
	if err != nil {
		return nil, err
	}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(DefaultMaxMessageSize)),
	}, opts...)
	cc, err := grpc.NewClient(t, all...)
	if err != nil {
		return nil, fmt.Errorf("dial xds server %s: %w", target, err)
	}
	return &Conn{ClientConn: cc}, nil
}

// grpcTarget turns a socket path or host:port into a gRPC target.
func grpcTarget(target string) (string, error) {
	switch {
	case target == "":
		return "", fmt.Errorf("dial xds server: empty target")
	case strings.HasPrefix(target, "unix:"):
		if strings.TrimPrefix(strings.TrimPrefix(target, "unix:"), "//") == "" {
			return "", fmt.Errorf("dial xds server %q: empty socket path", target)
		}
		return target, nil
	case strings.HasPrefix(target, "/"), strings.HasPrefix(target, "."):
		return "unix:" + target, nil
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil || port == "" {
		return "", fmt.Errorf("dial xds server %q: neither a socket path (/…, ./…, unix:…) nor host:port", target)
	}
	return "passthrough:///" + net.JoinHostPort(host, port), nil
}
