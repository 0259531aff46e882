package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/internal/httpnorm"
)

// Config is the agent's configuration. The config file (YAML) and the
// command-line flags map onto the same struct; zero fields take defaults.
type Config struct {
	// NodeName names this node; it is the xDS node ID the proxy uses.
	NodeName string `json:"nodeName,omitempty"`
	// StateDir keeps state that must survive restarts (identities).
	StateDir string `json:"stateDir,omitempty"`
	// RunDir holds the agent's sockets: agent.sock (local API), xds.sock,
	// accesslog.sock.
	RunDir string `json:"runDir,omitempty"`

	// Kubeconfig, or InCluster (the pod's service account), selects
	// Kubernetes mode: policies, pods, namespaces and nodes come from the
	// API (package k8s) instead of Policies and Endpoints.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	InCluster  bool   `json:"inCluster,omitempty"`
	// ConfigMap names the agent's ConfigMap ("namespace/name"; Kubernetes
	// mode): its keys are this struct's fields, one per key (the value is
	// the field's YAML), over the config file; the flags given override
	// both. A change after the start is validated and reported; it takes
	// effect when the agent restarts.
	ConfigMap string `json:"configMap,omitempty"`
	// Namespace is the agent's namespace (Kubernetes mode): it holds the
	// identity counter ConfigMap. Default: the ConfigMap's namespace, else
	// kube-system.
	Namespace string `json:"namespace,omitempty"`
	// IdentityExcludedLabels are the pod and namespace label keys left out
	// of identities (Kubernetes mode; a key ending in "*" is a prefix).
	// Empty means k8s.DefaultExcludedLabels (pod-template-hash,
	// controller-revision-hash, ...).
	IdentityExcludedLabels []string `json:"identityExcludedLabels,omitempty"`

	// CNI makes the agent the node's CNI (Kubernetes mode, cni.go):
	// moat-cni hands it each pod sandbox, and local pods' addresses come
	// from those attachments, never from the pods' status.
	CNI bool `json:"cni,omitempty"`
	// CNIPodCIDR is the pods' address pool when the Node has no
	// spec.podCIDR(s) (IPv4).
	CNIPodCIDR string `json:"cniPodCIDR,omitempty"`
	// CNIPodWait bounds how long a CNI request waits for the pod in the
	// cache and for its enforcement (default 30s).
	CNIPodWait Duration `json:"cniPodWait,omitempty"`
	// CNIBinDir and CNIConfDir, when set, are where the agent installs
	// moat-cni (CNIPluginBinary) and its conflist (CNIConfName) at start
	// (cniinstall.go).
	CNIBinDir       string `json:"cniBinDir,omitempty"`
	CNIConfDir      string `json:"cniConfDir,omitempty"`
	CNIConfName     string `json:"cniConfName,omitempty"`
	CNIPluginBinary string `json:"cniPluginBinary,omitempty"`
	// CNIRemoveConfOnExit removes the conflist when the agent stops
	// cleanly. Off by default (fail closed): with the conflist in place and
	// the agent down, ADD fails and the runtime retries, so no pod starts
	// unpoliced.
	CNIRemoveConfOnExit bool `json:"cniRemoveConfOnExit,omitempty"`
	// NodeRoutes installs a route to every other node's pod CIDR via its
	// InternalIP (Kubernetes mode, direct routing, noderoutes.go).
	NodeRoutes bool `json:"nodeRoutes,omitempty"`

	// Policies is a policy file or directory, watched for changes.
	Policies string `json:"policies,omitempty"`
	// Endpoints is the standalone endpoints file, watched for changes.
	Endpoints string `json:"endpoints,omitempty"`
	// PollInterval is how often the policy and endpoint sources are checked.
	PollInterval Duration `json:"pollInterval,omitempty"`

	// BPFRoot is where maps and links are pinned.
	BPFRoot string `json:"bpfRoot,omitempty"`
	// Attach is "" (TCX, falling back to legacy tc), "tcx" or "tc".
	Attach string `json:"attach,omitempty"`
	// EventsPerSecond caps datapath events per CPU (0: unlimited).
	EventsPerSecond uint32 `json:"eventsPerSecond,omitempty"`
	// VerdictEvents reports every new flow's verdict, not only drops.
	VerdictEvents bool `json:"verdictEvents,omitempty"`
	// NetnsPrefix names the network namespaces the agent creates.
	NetnsPrefix string `json:"netnsPrefix,omitempty"`
	// ConntrackGCInterval is how often expired connection-tracking entries
	// are deleted and moat_ct's pressure measured (a pass over a full map
	// costs about 0.1 s of CPU).
	ConntrackGCInterval Duration `json:"conntrackGCInterval,omitempty"`
	// LocalDelivery sends the packets of flows between two endpoints of
	// this node that both ends track from veth to veth, past the host's
	// routing and netfilter (default true). Turn it off on hosts whose
	// firewall drops conntrack INVALID packets in FORWARD.
	LocalDelivery *bool `json:"localDelivery,omitempty"`
	// ConntrackMaxEntries sizes the connection-tracking map (default
	// 262,144; about 152 bytes each, preallocated). A pinned map of another
	// size is kept until `moat-agent cleanup`.
	ConntrackMaxEntries int `json:"conntrackMaxEntries,omitempty"`

	// TCPHealth reports TCP health (unanswered SYNs, retransmissions, RTT,
	// resets) from a cgroup sock_ops program; TCPHealthCgroup is the cgroup
	// v2 directory it watches ("" = the cgroup root: every socket on the
	// node).
	TCPHealth       *bool  `json:"tcpHealth,omitempty"`
	TCPHealthCgroup string `json:"tcpHealthCgroup,omitempty"`
	// PrefilterDeny is a CIDR deny list enforced at XDP on
	// PrefilterInterfaces, before the network stack.
	PrefilterDeny       []string `json:"prefilterDeny,omitempty"`
	PrefilterInterfaces []string `json:"prefilterInterfaces,omitempty"`
	// ServiceTranslation turns Service frontends (ClusterIPs) into their
	// backends at the socket, in cgroup sock_addr programs attached to
	// ServiceCgroup ("" = the cgroup v2 root), for the sockets of local
	// endpoints only, so that egress policy is judged against the backend
	// a pod reaches (services.go). Kubernetes mode reads Services and
	// EndpointSlices; standalone mode takes Services.
	ServiceTranslation bool   `json:"serviceTranslation,omitempty"`
	ServiceCgroup      string `json:"serviceCgroup,omitempty"`
	// Services are standalone mode's Services (with ServiceTranslation).
	Services []StaticService `json:"services,omitempty"`
	// Uplinks are the node's interfaces towards other nodes and the world
	// (by name). The egress proxy's upstream connections keep the client
	// pod's address towards every destination routed through one of them,
	// as they do towards local endpoints: the replies that arrive there
	// are handed to the proxy (bpf/moat.c, from_uplink). Without uplinks,
	// destinations outside the node see the node's address. An interface
	// on which the node masquerades pod traffic must not be listed: the
	// replies would arrive addressed to the node and never reach the proxy.
	Uplinks []string `json:"uplinks,omitempty"`

	// AllowHostIngress lets the node itself into every endpoint (kubelet
	// probes); off in standalone mode, where the host is a peer like others.
	AllowHostIngress bool `json:"allowHostIngress,omitempty"`

	// Proxy selects the HTTP proxy: "embedded" (default: moat's l7proxy in
	// the agent process), "envoy" (the agent runs EnvoyBinary with moat's
	// bootstrap and supervises it) or "external" (an Envoy the agent does
	// not run, e.g. the chart's DaemonSet, connects to xds.sock).
	Proxy string `json:"proxy,omitempty"`
	// EnvoyBinary is the Envoy executable for Proxy "envoy".
	EnvoyBinary string `json:"envoyBinary,omitempty"`

	// Proxy ports of the transparent listeners.
	EgressHTTPPort  uint16 `json:"egressHTTPPort,omitempty"`
	IngressHTTPPort uint16 `json:"ingressHTTPPort,omitempty"`
	// DNSProxyPort is the port of the DNS proxy's transparent UDP and TCP
	// listeners (default 15053): the datapath redirects DNS traffic of
	// ports with DNS rules there.
	DNSProxyPort uint16 `json:"dnsProxyPort,omitempty"`
	// DNSUpstreamSocketQueries is how many UDP queries the DNS proxy sends
	// from one upstream socket (one source port). Default 1: a fresh
	// random port for every query; more saves system calls per query at
	// the cost of port entropy (dnsproxy.Config.UpstreamSocketQueries).
	DNSUpstreamSocketQueries int `json:"dnsUpstreamSocketQueries,omitempty"`
	// HTTPPaths is how the HTTP proxy treats request paths: "strict" (the
	// default, also when empty) rejects with 400 every path that is
	// ambiguous across common back ends; "envoy" is Envoy's exact
	// behaviour (see internal/httpnorm and the README's proxy section).
	HTTPPaths string `json:"httpPaths,omitempty"`
	// ACKTimeout bounds the wait for the proxy to ACK new listeners; after
	// it, redirects stay absent and their traffic is dropped (fail closed).
	ACKTimeout Duration `json:"ackTimeout,omitempty"`
	// XDSAddress optionally serves xDS on a loopback TCP address too.
	XDSAddress string `json:"xdsAddress,omitempty"`

	// MetricsAddress serves /metrics ("" disables it).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// Metrics enables Hubble metric handlers, with Hubble's option syntax.
	Metrics []string `json:"metrics,omitempty"`
	// FlowBuffer is the number of recent flows kept for moat observe.
	FlowBuffer int `json:"flowBuffer,omitempty"`
}

// Duration is a time.Duration that reads "1s" from YAML/JSON.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := yaml.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// Default values.
const (
	DefaultStateDir        = "/var/lib/moat"
	DefaultRunDir          = "/run/moat"
	DefaultPollInterval    = time.Second
	DefaultConntrackGC     = 30 * time.Second
	DefaultEgressHTTPPort  = 15001
	DefaultIngressHTTPPort = 15002
	DefaultDNSProxyPort    = 15053
	DefaultACKTimeout      = 5 * time.Second
	DefaultMetricsAddress  = "127.0.0.1:9965"
	DefaultFlowBuffer      = 4096
	DefaultCNIPodWait      = 30 * time.Second
	DefaultCNIConfName     = "05-moat.conflist"
)

// Proxy choices.
const (
	ProxyEmbedded = "embedded"
	ProxyEnvoy    = "envoy"
	ProxyExternal = "external"
)

// DefaultMetrics are the Hubble handlers enabled when none are configured.
var DefaultMetrics = []string{
	"dns", "drop", "tcp", "flow", "port-distribution", "icmp",
	"httpV2:exemplars=true;labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction",
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.NodeName == "" {
		if h, err := os.Hostname(); err == nil {
			c.NodeName = h
		} else {
			c.NodeName = "node"
		}
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.PollInterval == 0 {
		c.PollInterval = Duration(DefaultPollInterval)
	}
	if c.ConntrackGCInterval == 0 {
		c.ConntrackGCInterval = Duration(DefaultConntrackGC)
	}
	if c.EgressHTTPPort == 0 {
		c.EgressHTTPPort = DefaultEgressHTTPPort
	}
	if c.IngressHTTPPort == 0 {
		c.IngressHTTPPort = DefaultIngressHTTPPort
	}
	if c.DNSProxyPort == 0 {
		c.DNSProxyPort = DefaultDNSProxyPort
	}
	if c.ACKTimeout == 0 {
		c.ACKTimeout = Duration(DefaultACKTimeout)
	}
	if c.Proxy == "" {
		c.Proxy = ProxyEmbedded
	}
	if c.LocalDelivery == nil {
		on := true
		c.LocalDelivery = &on
	}
	if c.TCPHealth == nil {
		on := true
		c.TCPHealth = &on
	}
	if c.Metrics == nil {
		c.Metrics = DefaultMetrics
	}
	if c.FlowBuffer == 0 {
		c.FlowBuffer = DefaultFlowBuffer
	}
	if c.CNIPodWait == 0 {
		c.CNIPodWait = Duration(DefaultCNIPodWait)
	}
	if c.CNIConfName == "" {
		c.CNIConfName = DefaultCNIConfName
	}
	return c
}

// Validate reports every problem with the configuration, naming the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Kubernetes() {
		if c.Kubeconfig != "" && c.InCluster {
			bad("inCluster", "set with kubeconfig: choose one")
		}
		if c.Policies != "" {
			bad("policies", "not used in Kubernetes mode (policies come from the API)")
		}
		if c.Endpoints != "" {
			bad("endpoints", "not used in Kubernetes mode (pods come from the API)")
		}
		if c.ConfigMap != "" {
			if ns, name, ok := strings.Cut(c.ConfigMap, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				bad("configMap", "%q: want namespace/name", c.ConfigMap)
			}
		}
		for i, k := range c.IdentityExcludedLabels {
			if strings.TrimSuffix(k, "*") == "" {
				bad(fmt.Sprintf("identityExcludedLabels[%d]", i), "empty label key")
			}
		}
	} else {
		if c.Policies == "" {
			bad("policies", "required: a policy file or directory (or kubeconfig/inCluster for Kubernetes mode)")
		}
		if c.Endpoints == "" {
			bad("endpoints", "required: the endpoints file")
		}
		if c.ConfigMap != "" {
			bad("configMap", "only in Kubernetes mode (kubeconfig or inCluster)")
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("stateDir", "%q is not an absolute path", c.StateDir)
	}
	if !filepath.IsAbs(c.RunDir) {
		bad("runDir", "%q is not an absolute path", c.RunDir)
	}
	if c.PollInterval < Duration(10*time.Millisecond) {
		bad("pollInterval", "%s is below 10ms", time.Duration(c.PollInterval))
	}
	if n := c.ConntrackMaxEntries; n != 0 && (n < datapath.MinCTMaxEntries || n > datapath.MaxCTMaxEntries) {
		bad("conntrackMaxEntries", "%d: want %d to %d", n, datapath.MinCTMaxEntries, datapath.MaxCTMaxEntries)
	}
	if c.ConntrackGCInterval < Duration(time.Second) {
		bad("conntrackGCInterval", "%s is below 1s", time.Duration(c.ConntrackGCInterval))
	}
	switch c.Attach {
	case "", "tcx", "tc":
	default:
		bad("attach", "%q: want tcx, tc or empty (automatic)", c.Attach)
	}
	switch c.Proxy {
	case ProxyEmbedded, ProxyExternal:
	case ProxyEnvoy:
		if c.EnvoyBinary == "" {
			bad("envoyBinary", "required when proxy is %q", ProxyEnvoy)
		}
	default:
		bad("proxy", "%q: want embedded, envoy or external", c.Proxy)
	}
	if c.EgressHTTPPort == c.IngressHTTPPort {
		bad("ingressHTTPPort", "must differ from egressHTTPPort (%d)", c.EgressHTTPPort)
	}
	if c.DNSProxyPort == c.EgressHTTPPort || c.DNSProxyPort == c.IngressHTTPPort {
		bad("dnsProxyPort", "%d is an HTTP proxy port; the DNS proxy's TCP listener needs its own", c.DNSProxyPort)
	}
	if c.DNSUpstreamSocketQueries < 0 {
		bad("dnsUpstreamSocketQueries", "%d is negative; want 0 or 1 (a fresh port per query) or more", c.DNSUpstreamSocketQueries)
	}
	if _, err := httpnorm.ParseMode(c.HTTPPaths); err != nil {
		bad("httpPaths", "%q: want strict, envoy or empty (strict)", c.HTTPPaths)
	}
	if c.ACKTimeout <= 0 {
		bad("ackTimeout", "must be positive")
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			bad("metricsAddress", "%q: %v", c.MetricsAddress, err)
		}
	}
	if _, err := flow.ParseMetricsList(c.Metrics); err != nil {
		bad("metrics", "%v", err)
	}
	errs = append(errs, c.validateServices()...)
	for i, p := range c.PrefilterDeny {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad(fmt.Sprintf("prefilterDeny[%d]", i), "%q: %v", p, err)
		}
	}
	if len(c.PrefilterDeny) > 0 && len(c.PrefilterInterfaces) == 0 {
		bad("prefilterInterfaces", "required when prefilterDeny is set")
	}
	if c.FlowBuffer < 1 {
		bad("flowBuffer", "%d: must be at least 1", c.FlowBuffer)
	}
	c.validateCNI(bad)
	return errors.Join(errs...)
}

// Kubernetes reports whether the agent runs in Kubernetes mode.
func (c Config) Kubernetes() bool { return c.Kubeconfig != "" || c.InCluster }

// LoadConfig reads a YAML config file strictly (unknown fields are errors),
// applies defaults and validates. Errors name the file.
func LoadConfig(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// validateCNI checks the moat-cni and node-route fields.
func (c Config) validateCNI(bad func(field, format string, args ...any)) {
	if c.CNI && !c.Kubernetes() {
		bad("cni", "only in Kubernetes mode (kubeconfig or inCluster)")
	}
	if c.NodeRoutes && !c.Kubernetes() {
		bad("nodeRoutes", "only in Kubernetes mode (kubeconfig or inCluster)")
	}
	if c.CNIPodCIDR != "" {
		p, err := netip.ParsePrefix(c.CNIPodCIDR)
		switch {
		case err != nil:
			bad("cniPodCIDR", "%q: %v", c.CNIPodCIDR, err)
		case !p.Addr().Is4():
			bad("cniPodCIDR", "%q: want an IPv4 prefix", c.CNIPodCIDR)
		case p.Bits() > 30:
			bad("cniPodCIDR", "%q: want /30 or larger", c.CNIPodCIDR)
		}
	}
	if c.CNIPodWait < Duration(time.Second) {
		bad("cniPodWait", "%s is below 1s", time.Duration(c.CNIPodWait))
	}
	if (c.CNIBinDir == "") != (c.CNIConfDir == "") {
		bad("cniConfDir", "cniBinDir and cniConfDir go together (both set installs moat-cni)")
	}
	for field, dir := range map[string]string{"cniBinDir": c.CNIBinDir, "cniConfDir": c.CNIConfDir} {
		if dir != "" && !filepath.IsAbs(dir) {
			bad(field, "%q is not an absolute path", dir)
		}
	}
	if c.CNIBinDir != "" && !c.CNI {
		bad("cniBinDir", "installing moat-cni needs cni: true")
	}
	if c.CNIConfName != "" && (strings.Contains(c.CNIConfName, "/") || !strings.HasSuffix(c.CNIConfName, ".conflist")) {
		bad("cniConfName", "%q: want a file name ending in .conflist", c.CNIConfName)
	}
}
