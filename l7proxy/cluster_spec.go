package l7proxy

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

const httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Linux socket option numbers.
const (
	solSocket = 1  // SOL_SOCKET
	soMark    = 36 // SO_MARK
)

// clusterSpec is a validated ORIGINAL_DST cluster.
type clusterSpec struct {
	name           string
	connectTimeout time.Duration
	mark           uint32
	hasMark        bool
}

func compileCluster(c *clusterv3.Cluster) (*clusterSpec, error) {
	where := fmt.Sprintf("cluster %q", c.GetName())
	if c.GetName() == "" {
		return nil, fmt.Errorf("cluster: empty name")
	}
	if err := onlyFields(c, where, "name", "type", "lb_policy", "connect_timeout", "upstream_bind_config", "typed_extension_protocol_options"); err != nil {
		return nil, err
	}
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST {
		return nil, fmt.Errorf("%s.type: unsupported %s (only ORIGINAL_DST)", where, c.GetType())
	}
	if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
		return nil, fmt.Errorf("%s.lb_policy: unsupported %s (only CLUSTER_PROVIDED)", where, c.GetLbPolicy())
	}
	cs := &clusterSpec{name: c.GetName(), connectTimeout: 5 * time.Second} // Envoy's default
	if t := c.GetConnectTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			return nil, fmt.Errorf("%s.connect_timeout: must be positive", where)
		}
		cs.connectTimeout = t.AsDuration()
	}
	if bc := c.GetUpstreamBindConfig(); bc != nil {
		if err := onlyFields(bc, where+".upstream_bind_config", "socket_options"); err != nil {
			return nil, err
		}
		for i, o := range bc.GetSocketOptions() {
			w := fmt.Sprintf("%s.upstream_bind_config.socket_options[%d]", where, i)
			if err := onlyFields(o, w, "description", "level", "name", "int_value", "state"); err != nil {
				return nil, err
			}
			if o.GetLevel() != solSocket || o.GetName() != soMark {
				return nil, fmt.Errorf("%s: unsupported option level %d name %d (only SOL_SOCKET/SO_MARK)", w, o.GetLevel(), o.GetName())
			}
			if o.GetState() != corev3.SocketOption_STATE_PREBIND {
				return nil, fmt.Errorf("%s.state: unsupported %s (only STATE_PREBIND)", w, o.GetState())
			}
			v := o.GetIntValue()
			if v < 0 || v > 0xFFFFFFFF {
				return nil, fmt.Errorf("%s.int_value: %d is not a 32-bit mark", w, v)
			}
			if cs.hasMark {
				return nil, fmt.Errorf("%s: SO_MARK set twice", w)
			}
			cs.mark, cs.hasMark = uint32(v), true
		}
	}
	for name, a := range c.GetTypedExtensionProtocolOptions() {
		w := fmt.Sprintf("%s.typed_extension_protocol_options[%q]", where, name)
		if name != httpProtocolOptionsName {
			return nil, fmt.Errorf("%s: unsupported extension", w)
		}
		po := &upstreamhttpv3.HttpProtocolOptions{}
		if err := unpack(a, po, w); err != nil {
			return nil, err
		}
		if err := onlyFields(po, w, "use_downstream_protocol_config"); err != nil {
			return nil, err
		}
		d := po.GetUseDownstreamProtocolConfig()
		if err := onlyFields(d, w+".use_downstream_protocol_config", "http_protocol_options", "http2_protocol_options"); err != nil {
			return nil, err
		}
		if err := onlyFields(d.GetHttpProtocolOptions(), w+".use_downstream_protocol_config.http_protocol_options"); err != nil {
			return nil, err
		}
		if err := onlyFields(d.GetHttp2ProtocolOptions(), w+".use_downstream_protocol_config.http2_protocol_options"); err != nil {
			return nil, err
		}
	}
	return cs, nil
}
