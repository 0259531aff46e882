package envoy

import (
	"fmt"
	"net/netip"
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	grpcalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	originalsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/moatnet/moat/policy"
)

// Extension names as Envoy registers them.
const (
	hcmFilterName         = "envoy.filters.network.http_connection_manager"
	rbacFilterName        = "envoy.filters.http.rbac"
	routerFilterName      = "envoy.filters.http.router"
	grpcAccessLogName     = "envoy.access_loggers.http_grpc"
	originalSrcFilterName = "envoy.filters.listener.original_src"
	deniedStatusRuntime   = "moat.access_denied_status"
	deniedStatus          = 403
)

// httpListener returns the transparent listener of direction d with the
// given filter chains.
//
// The ingress listener keeps the client's address on its upstream
// connections (original_src, with the ingress from-proxy mark, identity
// unknown): the destination is always the local endpoint its chain matched,
// whose veth program hands the server's replies back to the proxy's socket
// (bpf/proxy.h, proxy_return). The egress listener does the same only with
// Config.EgressKeepSource (original_src without a mark: the cluster of the
// client's identity sets SO_MARK), since original_src applies to every
// destination of a listener and a destination whose replies do not come
// back through the datapath would break (l7proxy, without it, keeps the
// client's address per destination, which Envoy cannot express).
func httpListener(cfg Config, d policy.Direction, chains []*listenerv3.FilterChain) (*listenerv3.Listener, error) {
	port := cfg.port(d)
	l := &listenerv3.Listener{
		Name:         ListenerName(d, port),
		Address:      socketAddress(cfg.ListenAddresses[0], port),
		Transparent:  wrapperspb.Bool(true),
		FilterChains: chains,
	}
	var osrc *originalsrcv3.OriginalSrc
	if d == policy.Egress {
		l.TrafficDirection = corev3.TrafficDirection_OUTBOUND
		if cfg.EgressKeepSource {
			osrc = &originalsrcv3.OriginalSrc{}
		}
	} else {
		l.TrafficDirection = corev3.TrafficDirection_INBOUND
		mark, err := policy.ProxyMark(d, policy.IDUnknown)
		if err != nil {
			return nil, fmt.Errorf("build listener %s: %w", l.Name, err)
		}
		osrc = &originalsrcv3.OriginalSrc{Mark: mark}
	}
	if osrc != nil {
		a, err := toAny(osrc)
		if err != nil {
			return nil, fmt.Errorf("build listener %s: %w", l.Name, err)
		}
		l.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       originalSrcFilterName,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
		}}
	}
	for _, a := range cfg.ListenAddresses[1:] {
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: socketAddress(a, port)})
	}
	if chainsMatchIPv6(chains) && !slices.ContainsFunc(cfg.ListenAddresses, netip.Addr.Is6) {
		// The datapath hands an IPv6 flow to the listener on [::]:port;
		// without it, redirected IPv6 traffic would fail closed.
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: socketAddress(netip.IPv6Unspecified(), port)})
	}
	return l, nil
}

// chainsMatchIPv6 says whether a chain matches an endpoint's IPv6 address.
func chainsMatchIPv6(chains []*listenerv3.FilterChain) bool {
	for _, fc := range chains {
		m := fc.GetFilterChainMatch()
		for _, r := range append(slices.Clone(m.GetPrefixRanges()), m.GetSourcePrefixRanges()...) {
			if a, err := netip.ParseAddr(r.GetAddressPrefix()); err == nil && a.Is6() && !a.Is4In6() {
				return true
			}
		}
	}
	return false
}

func socketAddress(a netip.Addr, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       a.String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// filterChain returns the chain of one local endpoint: matched on its
// addresses (egress: source, ingress: destination), with an HTTP connection
// manager that enforces rbac and routes through RDS to routeName.
func filterChain(cfg Config, d policy.Direction, ep *policy.EndpointPlan, rbac *rbacfilterv3.RBAC, routeName string) (*listenerv3.FilterChain, error) {
	match := &listenerv3.FilterChainMatch{}
	for _, a := range ep.Addresses {
		a = a.Unmap()
		r := cidr(netip.PrefixFrom(a, a.BitLen()))
		if d == policy.Egress {
			match.SourcePrefixRanges = append(match.SourcePrefixRanges, r)
		} else {
			match.PrefixRanges = append(match.PrefixRanges, r)
		}
	}
	hcm, err := httpConnectionManager(cfg, d, rbac, routeName)
	if err != nil {
		return nil, fmt.Errorf("build filter chain %s: %w", filterChainName(ep), err)
	}
	hcmAny, err := toAny(hcm)
	if err != nil {
		return nil, fmt.Errorf("build filter chain %s: %w", filterChainName(ep), err)
	}
	return &listenerv3.FilterChain{
		Name:             filterChainName(ep),
		FilterChainMatch: match,
		Filters: []*listenerv3.Filter{{
			Name:       hcmFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
		}},
	}, nil
}

// httpConnectionManager carries the safe defaults every moat proxy uses:
// paths normalised (RFC 3986) with merged slashes, escaped slashes
// unescaped and redirected, header names with underscores rejected, the
// codec chosen per connection (HTTP/1.1 or HTTP/2), the source address taken
// from the connection and never from X-Forwarded-For, request headers left
// as the client sent them, one gRPC access-log entry per exchange, and RBAC
// denials answered with 403 DeniedBody.
//
// The body comes from a local_reply_config mapper on status 403: mappers
// only rewrite replies Envoy generates itself, and the only filter here that
// generates a 403 is RBAC (whose own body is "RBAC: access denied").
// Upstream 403s pass through untouched.
func httpConnectionManager(cfg Config, d policy.Direction, rbac *rbacfilterv3.RBAC, routeName string) (*hcmv3.HttpConnectionManager, error) {
	rbacAny, err := toAny(rbac)
	if err != nil {
		return nil, fmt.Errorf("build rbac filter: %w", err)
	}
	routerAny, err := toAny(&routerv3.Router{})
	if err != nil {
		return nil, fmt.Errorf("build router filter: %w", err)
	}
	alsAny, err := toAny(&grpcalv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalv3.CommonGrpcAccessLogConfig{
			LogName: ListenerName(d, cfg.port(d)),
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cfg.AccessLogCluster},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("build access log: %w", err)
	}
	return &hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: statPrefix(d),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			RouteConfigName: routeName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: rbacFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rbacAny}},
			{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: routerAny}},
		},
		AccessLog: []*accesslogv3.AccessLog{{
			Name:       grpcAccessLogName,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: alsAny},
		}},
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: cfg.escapedSlashesAction(),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST,
		},
		UseRemoteAddress:           wrapperspb.Bool(true),
		SkipXffAppend:              true,
		GenerateRequestId:          wrapperspb.Bool(false),
		ServerHeaderTransformation: hcmv3.HttpConnectionManager_PASS_THROUGH,
		LocalReplyConfig: &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
			Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
				StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
					Op:    accesslogv3.ComparisonFilter_EQ,
					Value: &corev3.RuntimeUInt32{DefaultValue: deniedStatus, RuntimeKey: deniedStatusRuntime},
				}},
			}},
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: DeniedBody}},
		}}},
	}, nil
}
