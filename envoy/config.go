package envoy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy"
)

// Defaults of Config.
const (
	DefaultEgressHTTPPort   uint16 = 15001
	DefaultIngressHTTPPort  uint16 = 15002
	DefaultAccessLogCluster        = "moat/access-log"
	DefaultConnectTimeout          = 5 * time.Second
	// DefaultMaxRegexProgramSize keeps policy regexes well below the RE2
	// program size limit that Bootstrap gives Envoy (DefaultRE2ProgramSize).
	DefaultMaxRegexProgramSize = DefaultRE2ProgramSize * 3 / 4
)

// DeniedBody is the body of the 403 a request gets when no rule allows it.
const DeniedBody = "Access denied"

// Config holds what Translate needs besides the Plan.
type Config struct {
	// NodeName is the xDS node ID the resources are for (used in names of
	// access logs only; resources do not depend on it otherwise).
	NodeName string
	// EgressHTTPPort and IngressHTTPPort are the ports the datapath
	// redirects HTTP traffic to (to-proxy mark). Defaults 15001 and 15002.
	EgressHTTPPort  uint16
	IngressHTTPPort uint16
	// ListenAddresses are the listener addresses; the first is the listener
	// address, the others become additional_addresses. Default 0.0.0.0.
	ListenAddresses []netip.Addr
	// AccessLogCluster names the static bootstrap cluster that reaches the
	// agent's access-log service over its unix socket. Default
	// "moat/access-log" (what Bootstrap defines).
	AccessLogCluster string
	// ConnectTimeout bounds upstream connection set-up. Default 5s.
	ConnectTimeout time.Duration
	// MaxRegexProgramSize refuses policy regexes whose compiled program has
	// more instructions (an estimate of Envoy's RE2 program size). Default
	// DefaultMaxRegexProgramSize; negative turns the check off.
	MaxRegexProgramSize int
	// PathMode is how strictly the proxy treats request targets (see
	// internal/httpnorm). httpnorm.ModeStrict, the default, rejects with
	// 400 every path that is ambiguous across common back ends; the
	// connection manager then says path_with_escaped_slashes_action
	// REJECT_REQUEST, which l7proxy reads as "strict". httpnorm.ModeEnvoy
	// is Envoy's exact behaviour: UNESCAPE_AND_REDIRECT, and paths such as
	// "/public/..;/admin" reach the upstream as they are. With Envoy as the
	// data plane, strict mode rejects escaped slashes only: the other
	// ambiguity checks are l7proxy's.
	PathMode httpnorm.Mode
	// EgressKeepSource puts original_src on the egress listener too, so
	// that its upstream connections leave from the client pod's address
	// (without a mark of its own: each cluster's SO_MARK keeps carrying
	// the client's identity). Envoy applies it to every destination of the
	// listener, so it is for nodes where the replies of every egress
	// destination come back through the datapath: local endpoints (their
	// veth) and destinations routed through an uplink with the datapath's
	// uplink program. The node's own addresses, and local endpoints whose
	// ingress also goes through the proxy, answer from the host itself:
	// those replies go to the client pod instead, so such destinations
	// must not be redirected to this listener. Off by default (l7proxy,
	// without it, decides per destination).
	EgressKeepSource bool
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.EgressHTTPPort == 0 {
		c.EgressHTTPPort = DefaultEgressHTTPPort
	}
	if c.IngressHTTPPort == 0 {
		c.IngressHTTPPort = DefaultIngressHTTPPort
	}
	if len(c.ListenAddresses) == 0 {
		c.ListenAddresses = []netip.Addr{netip.IPv4Unspecified()}
	}
	if c.AccessLogCluster == "" {
		c.AccessLogCluster = DefaultAccessLogCluster
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxRegexProgramSize == 0 {
		c.MaxRegexProgramSize = DefaultMaxRegexProgramSize
	}
	return c
}

// Validate reports the first problem of a defaulted Config.
func (c Config) Validate() error {
	if c.EgressHTTPPort == 0 || c.IngressHTTPPort == 0 {
		return errors.New("validate envoy config: proxy ports must be set")
	}
	if c.EgressHTTPPort == c.IngressHTTPPort {
		return fmt.Errorf("validate envoy config: egress and ingress HTTP ports are both %d", c.EgressHTTPPort)
	}
	seen := map[netip.Addr]bool{}
	for _, a := range c.ListenAddresses {
		if !a.IsValid() {
			return errors.New("validate envoy config: invalid listen address")
		}
		if seen[a] {
			return fmt.Errorf("validate envoy config: listen address %s given twice", a)
		}
		seen[a] = true
	}
	if c.AccessLogCluster == "" {
		return errors.New("validate envoy config: access-log cluster must be set")
	}
	if c.PathMode != httpnorm.ModeStrict && c.PathMode != httpnorm.ModeEnvoy {
		return fmt.Errorf("validate envoy config: unknown path mode %v", c.PathMode)
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("validate envoy config: negative connect timeout %s", c.ConnectTimeout)
	}
	return nil
}

func (c Config) port(d policy.Direction) uint16 {
	if d == policy.Egress {
		return c.EgressHTTPPort
	}
	return c.IngressHTTPPort
}

// escapedSlashesAction is the connection manager's
// path_with_escaped_slashes_action for the path mode; l7proxy reads
// REJECT_REQUEST as httpnorm.ModeStrict.
func (c Config) escapedSlashesAction() hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction {
	if c.PathMode == httpnorm.ModeEnvoy {
		return hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
	}
	return hcmv3.HttpConnectionManager_REJECT_REQUEST
}
