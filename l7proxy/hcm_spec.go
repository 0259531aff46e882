package l7proxy

import (
	"fmt"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpcalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/moatnet/moat/internal/httpnorm"
)

// hcmSpec is a validated HTTP connection manager. Path normalisation
// (normalize_path, merge_slashes), header-name checks and the trust model
// (use_remote_address, no X-Forwarded-For append) are fixed: the proxy
// refuses a connection manager that asks for anything else.
type hcmSpec struct {
	statPrefix string
	routeName  string
	// pathMode is httpnorm.ModeStrict when path_with_escaped_slashes_action
	// is REJECT_REQUEST (moat's default: every ambiguous target gets 400),
	// httpnorm.ModeEnvoy for UNESCAPE_AND_REDIRECT (Envoy's behaviour).
	pathMode     httpnorm.Mode
	rbac         *rbacEngine // nil: no RBAC filter
	accessLogs   []accessLogSpec
	localReplies []replyMapper
}

type accessLogSpec struct {
	logName        string
	cluster        string
	requestHeaders []string // lower case
	responseHeader []string
}

// replyMapper rewrites the proxy's own replies whose status matches.
type replyMapper struct {
	op      accesslogv3.ComparisonFilter_Op
	status  uint32
	body    string
	hasBody bool
	code    uint32 // replacement status, 0 keeps it
}

func (m *replyMapper) matches(status int) bool {
	s := uint32(status)
	switch m.op {
	case accesslogv3.ComparisonFilter_EQ:
		return s == m.status
	case accesslogv3.ComparisonFilter_GE:
		return s >= m.status
	case accesslogv3.ComparisonFilter_LE:
		return s <= m.status
	}
	return false
}

func compileHCM(a *anypb.Any, where string) (*hcmSpec, error) {
	cfg := &hcmv3.HttpConnectionManager{}
	if err := unpack(a, cfg, where); err != nil {
		return nil, err
	}
	if err := onlyFields(cfg, where, "codec_type", "stat_prefix", "rds", "http_filters", "access_log",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "common_http_protocol_options",
		"use_remote_address", "skip_xff_append", "generate_request_id", "server_header_transformation",
		"local_reply_config"); err != nil {
		return nil, err
	}
	h := &hcmSpec{statPrefix: cfg.GetStatPrefix()}
	switch cfg.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1:
	default:
		return nil, fmt.Errorf("%s.codec_type: unsupported %s", where, cfg.GetCodecType())
	}
	// The fixed safe defaults.
	if !cfg.GetNormalizePath().GetValue() {
		return nil, fmt.Errorf("%s.normalize_path: must be true (this proxy always normalises paths)", where)
	}
	if !cfg.GetMergeSlashes() {
		return nil, fmt.Errorf("%s.merge_slashes: must be true (this proxy always merges slashes)", where)
	}
	switch cfg.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		h.pathMode = httpnorm.ModeEnvoy
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		h.pathMode = httpnorm.ModeStrict
	default:
		return nil, fmt.Errorf("%s.path_with_escaped_slashes_action: unsupported %s", where, cfg.GetPathWithEscapedSlashesAction())
	}
	po := cfg.GetCommonHttpProtocolOptions()
	if err := onlyFields(po, where+".common_http_protocol_options", "headers_with_underscores_action"); err != nil {
		return nil, err
	}
	if po.GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_REJECT_REQUEST {
		return nil, fmt.Errorf("%s.common_http_protocol_options.headers_with_underscores_action: unsupported %s", where, po.GetHeadersWithUnderscoresAction())
	}
	if !cfg.GetUseRemoteAddress().GetValue() || !cfg.GetSkipXffAppend() {
		return nil, fmt.Errorf("%s: use_remote_address and skip_xff_append must be true", where)
	}
	if cfg.GetGenerateRequestId() == nil || cfg.GetGenerateRequestId().GetValue() {
		return nil, fmt.Errorf("%s.generate_request_id: must be false", where)
	}
	if cfg.GetServerHeaderTransformation() != hcmv3.HttpConnectionManager_PASS_THROUGH {
		return nil, fmt.Errorf("%s.server_header_transformation: unsupported %s", where, cfg.GetServerHeaderTransformation())
	}

	rds := cfg.GetRds()
	if rds == nil {
		return nil, fmt.Errorf("%s: route_specifier must be rds", where)
	}
	if err := onlyFields(rds, where+".rds", "config_source", "route_config_name"); err != nil {
		return nil, err
	}
	cs := rds.GetConfigSource()
	if err := onlyFields(cs, where+".rds.config_source", "ads", "resource_api_version"); err != nil {
		return nil, err
	}
	if cs.GetAds() == nil || cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
		return nil, fmt.Errorf("%s.rds.config_source: must be ads with resource_api_version V3", where)
	}
	if rds.GetRouteConfigName() == "" {
		return nil, fmt.Errorf("%s.rds.route_config_name: empty", where)
	}
	h.routeName = rds.GetRouteConfigName()

	if err := h.compileFilters(cfg.GetHttpFilters(), where+".http_filters"); err != nil {
		return nil, err
	}
	for i, al := range cfg.GetAccessLog() {
		spec, err := compileAccessLog(al, fmt.Sprintf("%s.access_log[%d]", where, i))
		if err != nil {
			return nil, err
		}
		h.accessLogs = append(h.accessLogs, spec)
	}
	if lr := cfg.GetLocalReplyConfig(); lr != nil {
		if err := onlyFields(lr, where+".local_reply_config", "mappers"); err != nil {
			return nil, err
		}
		for i, m := range lr.GetMappers() {
			rm, err := compileMapper(m, fmt.Sprintf("%s.local_reply_config.mappers[%d]", where, i))
			if err != nil {
				return nil, err
			}
			h.localReplies = append(h.localReplies, rm)
		}
	}
	return h, nil
}

// compileFilters accepts at most one RBAC filter followed by the router,
// which must come last.
func (h *hcmSpec) compileFilters(filters []*hcmv3.HttpFilter, where string) error {
	if n := len(filters); n == 0 || filters[n-1].GetName() != routerFilterName {
		return fmt.Errorf("%s: the last filter must be %s", where, routerFilterName)
	}
	for i, f := range filters {
		w := fmt.Sprintf("%s[%d]", where, i)
		if err := onlyFields(f, w, "name", "typed_config"); err != nil {
			return err
		}
		switch {
		case f.GetName() == routerFilterName && i == len(filters)-1:
			r := &routerv3.Router{}
			if err := unpack(f.GetTypedConfig(), r, w+".typed_config"); err != nil {
				return err
			}
			if err := onlyFields(r, w+".typed_config"); err != nil {
				return err
			}
		case f.GetName() == rbacFilterName && h.rbac == nil:
			cfg := &rbacfilterv3.RBAC{}
			if err := unpack(f.GetTypedConfig(), cfg, w+".typed_config"); err != nil {
				return err
			}
			e, err := compileRBACFilter(cfg, w+".typed_config")
			if err != nil {
				return err
			}
			h.rbac = e
		default:
			return fmt.Errorf("%s: unsupported HTTP filter %q here", w, f.GetName())
		}
	}
	return nil
}

func compileAccessLog(al *accesslogv3.AccessLog, where string) (accessLogSpec, error) {
	if err := onlyFields(al, where, "name", "typed_config"); err != nil {
		return accessLogSpec{}, err
	}
	cfg := &grpcalv3.HttpGrpcAccessLogConfig{}
	if err := unpack(al.GetTypedConfig(), cfg, where+".typed_config"); err != nil {
		return accessLogSpec{}, err
	}
	w := where + ".typed_config"
	if err := onlyFields(cfg, w, "common_config", "additional_request_headers_to_log", "additional_response_headers_to_log"); err != nil {
		return accessLogSpec{}, err
	}
	cc := cfg.GetCommonConfig()
	if err := onlyFields(cc, w+".common_config", "log_name", "grpc_service", "transport_api_version"); err != nil {
		return accessLogSpec{}, err
	}
	if cc.GetLogName() == "" {
		return accessLogSpec{}, fmt.Errorf("%s.common_config.log_name: empty", w)
	}
	if cc.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		return accessLogSpec{}, fmt.Errorf("%s.common_config.transport_api_version: must be V3", w)
	}
	gs := cc.GetGrpcService()
	if err := onlyFields(gs, w+".common_config.grpc_service", "envoy_grpc"); err != nil {
		return accessLogSpec{}, err
	}
	eg := gs.GetEnvoyGrpc()
	if err := onlyFields(eg, w+".common_config.grpc_service.envoy_grpc", "cluster_name"); err != nil {
		return accessLogSpec{}, err
	}
	if eg.GetClusterName() == "" {
		return accessLogSpec{}, fmt.Errorf("%s.common_config.grpc_service: envoy_grpc.cluster_name must be set", w)
	}
	spec := accessLogSpec{logName: cc.GetLogName(), cluster: eg.GetClusterName()}
	for _, h := range cfg.GetAdditionalRequestHeadersToLog() {
		spec.requestHeaders = append(spec.requestHeaders, strings.ToLower(h))
	}
	for _, h := range cfg.GetAdditionalResponseHeadersToLog() {
		spec.responseHeader = append(spec.responseHeader, strings.ToLower(h))
	}
	return spec, nil
}

func compileMapper(m *hcmv3.ResponseMapper, where string) (replyMapper, error) {
	if err := onlyFields(m, where, "filter", "body", "status_code"); err != nil {
		return replyMapper{}, err
	}
	f := m.GetFilter()
	if err := onlyFields(f, where+".filter", "status_code_filter"); err != nil {
		return replyMapper{}, err
	}
	cmp := f.GetStatusCodeFilter().GetComparison()
	if cmp == nil {
		return replyMapper{}, fmt.Errorf("%s.filter: status_code_filter.comparison must be set", where)
	}
	if err := onlyFields(cmp, where+".filter.status_code_filter.comparison", "op", "value"); err != nil {
		return replyMapper{}, err
	}
	if err := onlyFields(cmp.GetValue(), where+".filter.status_code_filter.comparison.value", "default_value", "runtime_key"); err != nil {
		return replyMapper{}, err
	}
	rm := replyMapper{op: cmp.GetOp(), status: cmp.GetValue().GetDefaultValue(), code: m.GetStatusCode().GetValue()}
	if b := m.GetBody(); b != nil {
		if err := onlyFields(b, where+".body", "inline_string"); err != nil {
			return replyMapper{}, err
		}
		rm.body, rm.hasBody = b.GetInlineString(), true
	}
	return rm, nil
}
