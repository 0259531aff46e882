package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/datapath"
)

// newFlagSet binds one flag to every field of cfg, with the field's current
// value as the flag's default: parsing overwrites only the flags given. It
// also returns the flags that are not config fields.
func newFlagSet(cfg *agent.Config) (fs *flag.FlagSet, configPath *string, noMetrics, noTCPHealth *bool, logLevel *string) {
	fs = flag.NewFlagSet("moat-agent", flag.ContinueOnError)
	configPath = fs.String("config", "", "agent config file (YAML); flags override it")
	logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	noMetrics = fs.Bool("no-metrics", false, "do not serve /metrics (same as --metrics-address=\"\")")
	noTCPHealth = fs.Bool("no-tcp-health", false, "same as --tcp-health=false")

	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "node name, the xDS node ID (default: hostname)")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "state directory (default "+agent.DefaultStateDir+")")
	fs.StringVar(&cfg.RunDir, "run-dir", cfg.RunDir, "socket directory (default "+agent.DefaultRunDir+")")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "Kubernetes mode: kubeconfig of the cluster (policies and pods from the API)")
	fs.BoolVar(&cfg.InCluster, "in-cluster", cfg.InCluster, "Kubernetes mode with the pod's service account")
	fs.StringVar(&cfg.ConfigMap, "config-map", cfg.ConfigMap, "Kubernetes mode: the agent's ConfigMap, namespace/name (e.g. kube-system/moat-config): config fields over the file, under the flags")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "Kubernetes mode: the agent's namespace, for the identity counter ConfigMap (default: the ConfigMap's, else kube-system)")
	fs.Var(listFlag{list: &cfg.IdentityExcludedLabels, set: new(bool)}, "identity-excluded-labels", "label key left out of identities, \"prefix*\" for a prefix (repeat the flag; default: pod-template-hash, controller-revision-hash, ...)")
	fs.BoolVar(&cfg.CNI, "cni", cfg.CNI, "Kubernetes mode: be the node's CNI (moat-cni hands pods to the agent; local pods' addresses come from it)")
	fs.StringVar(&cfg.CNIPodCIDR, "cni-pod-cidr", cfg.CNIPodCIDR, "moat-cni address pool when the Node has no spec.podCIDR (IPv4 CIDR)")
	fs.Var(durationFlag{&cfg.CNIPodWait}, "cni-pod-wait", "how long a CNI request waits for the pod and its enforcement (default 30s)")
	fs.StringVar(&cfg.CNIBinDir, "cni-bin-dir", cfg.CNIBinDir, "install moat-cni here (with --cni-conf-dir; off when empty)")
	fs.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "install moat-cni's conflist here once the agent is ready")
	fs.StringVar(&cfg.CNIConfName, "cni-conf-name", cfg.CNIConfName, "file name of the conflist (default "+agent.DefaultCNIConfName+")")
	fs.StringVar(&cfg.CNIPluginBinary, "cni-plugin-binary", cfg.CNIPluginBinary, "moat-cni binary to install (default: moat-cni beside moat-agent)")
	fs.BoolVar(&cfg.CNIRemoveConfOnExit, "cni-remove-conf-on-exit", cfg.CNIRemoveConfOnExit, "remove the conflist and node routes on a clean stop (default off: fail closed, pods wait for the agent)")
	fs.BoolVar(&cfg.NodeRoutes, "node-routes", cfg.NodeRoutes, "Kubernetes mode: route other nodes' pod CIDRs via their InternalIP (direct routing)")
	fs.StringVar(&cfg.Policies, "policies", cfg.Policies, "policy file or directory to watch")
	fs.StringVar(&cfg.Endpoints, "endpoints", cfg.Endpoints, "endpoints file to watch")
	fs.Var(durationFlag{&cfg.PollInterval}, "poll-interval", "how often the policy and endpoint sources are checked (default 1s)")
	fs.StringVar(&cfg.BPFRoot, "bpf-root", cfg.BPFRoot, "bpffs pin directory (default "+datapath.DefaultPinRoot+")")
	fs.StringVar(&cfg.Attach, "attach", cfg.Attach, "program attachment: tcx, tc, or empty (TCX, falling back to tc)")
	fs.Var(uintFlag[uint32]{&cfg.EventsPerSecond}, "events-per-second", "cap on datapath events per CPU (0: unlimited)")
	fs.BoolVar(&cfg.VerdictEvents, "verdict-events", cfg.VerdictEvents, "report every new flow's verdict, not only drops")
	fs.StringVar(&cfg.NetnsPrefix, "netns-prefix", cfg.NetnsPrefix, "prefix of the network namespaces the agent creates")
	fs.Var(durationFlag{&cfg.ConntrackGCInterval}, "conntrack-gc-interval", "how often expired connection-tracking entries are deleted (default 30s)")
	fs.Var(boolPtrFlag{&cfg.LocalDelivery}, "local-delivery", "deliver node-local endpoint-to-endpoint flows veth to veth (default true)")
	fs.IntVar(&cfg.ConntrackMaxEntries, "conntrack-max-entries", cfg.ConntrackMaxEntries, "size of the connection-tracking map (default 262144)")
	fs.Var(boolPtrFlag{&cfg.TCPHealth}, "tcp-health", "report TCP health from a sock_ops program (default true)")
	fs.StringVar(&cfg.TCPHealthCgroup, "tcp-health-cgroup", cfg.TCPHealthCgroup, "cgroup v2 directory the TCP health program watches (default: the root)")
	fs.Var(listFlag{list: &cfg.PrefilterDeny, set: new(bool)}, "prefilter-deny", "CIDR denied at XDP before the network stack (repeat the flag for more)")
	fs.Var(listFlag{list: &cfg.PrefilterInterfaces, set: new(bool)}, "prefilter-interfaces", "interface the XDP prefilter attaches to (repeat the flag for more)")
	fs.BoolVar(&cfg.ServiceTranslation, "service-translation", cfg.ServiceTranslation, "translate Service ClusterIPs to ready backends at the socket (cgroup sock_addr programs) for local endpoints; Services come from the API (Kubernetes mode) or the config file's services list")
	fs.StringVar(&cfg.ServiceCgroup, "service-cgroup", cfg.ServiceCgroup, "cgroup v2 directory the Service programs attach to (default: the cgroup v2 root)")
	fs.Var(listFlag{list: &cfg.Uplinks, set: new(bool)}, "uplinks", "interface towards other nodes and the world, where replies to the egress proxy's upstream connections arrive; upstreams routed through one keep the client's address (repeat the flag for more)")
	fs.BoolVar(&cfg.AllowHostIngress, "allow-host-ingress", cfg.AllowHostIngress, "let the node itself into every endpoint")
	fs.StringVar(&cfg.Proxy, "proxy", cfg.Proxy, "HTTP proxy: embedded (default), envoy (run --envoy-binary) or external")
	fs.StringVar(&cfg.EnvoyBinary, "envoy-binary", cfg.EnvoyBinary, "Envoy executable for --proxy envoy")
	fs.StringVar(&cfg.HTTPPaths, "http-paths", cfg.HTTPPaths, "HTTP path handling: strict (default: ambiguous paths get 400) or envoy (Envoy's exact behaviour)")
	fs.Var(uintFlag[uint16]{&cfg.EgressHTTPPort}, "egress-http-port", "port of the egress HTTP proxy listener (default 15001)")
	fs.Var(uintFlag[uint16]{&cfg.IngressHTTPPort}, "ingress-http-port", "port of the ingress HTTP proxy listener (default 15002)")
	fs.Var(uintFlag[uint16]{&cfg.DNSProxyPort}, "dns-proxy-port", "port of the DNS proxy's transparent UDP and TCP listeners (default 15053)")
	fs.IntVar(&cfg.DNSUpstreamSocketQueries, "dns-upstream-socket-queries", 0, "UDP queries the DNS proxy sends from one upstream socket (default 1: a fresh random source port per query)")
	fs.Var(durationFlag{&cfg.ACKTimeout}, "ack-timeout", "how long redirects wait for the proxy's ACK before they fail closed (default 5s)")
	fs.StringVar(&cfg.XDSAddress, "xds-address", cfg.XDSAddress, "also serve xDS on this loopback TCP address")
	fs.StringVar(&cfg.MetricsAddress, "metrics-address", cfg.MetricsAddress, "serve /metrics here (default "+agent.DefaultMetricsAddress+")")
	fs.Var(listFlag{list: &cfg.Metrics, set: new(bool)}, "metrics", "Hubble metric handler with options, e.g. httpV2:exemplars=true (repeat the flag for more)")
	fs.IntVar(&cfg.FlowBuffer, "flow-buffer", cfg.FlowBuffer, "recent flows kept for moat observe (default 4096)")
	return fs, configPath, noMetrics, noTCPHealth, logLevel
}

// durationFlag sets an agent.Duration from a Go duration ("1s").
type durationFlag struct{ d *agent.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return time.Duration(*f.d).String()
}

func (f durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like 1s: %w", err)
	}
	*f.d = agent.Duration(v)
	return nil
}

// boolPtrFlag sets a *bool whose nil means "the default": --x, --x=true
// and --x=false all set it.
type boolPtrFlag struct{ b **bool }

func (f boolPtrFlag) String() string {
	if f.b == nil || *f.b == nil {
		return ""
	}
	return strconv.FormatBool(**f.b)
}

func (f boolPtrFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	*f.b = &v
	return nil
}

func (boolPtrFlag) IsBoolFlag() bool { return true }

// uintFlag sets an unsigned integer of a fixed size.
type uintFlag[T uint16 | uint32] struct{ v *T }

func (f uintFlag[T]) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(*f.v), 10)
}

func (f uintFlag[T]) Set(s string) error {
	bits := 8 * int(unsafe.Sizeof(*f.v))
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return fmt.Errorf("want an integer from 0 to %d", uint64(1)<<bits-1)
	}
	*f.v = T(v)
	return nil
}

// listFlag sets a list, one element per occurrence of the flag (elements
// may contain commas: Hubble's options do). The first occurrence replaces
// the list from the config file.
type listFlag struct {
	list *[]string
	set  *bool
}

func (f listFlag) String() string {
	if f.list == nil {
		return ""
	}
	return strings.Join(*f.list, " ")
}

func (f listFlag) Set(s string) error {
	if f.set == nil || !*f.set {
		*f.list = nil
		if f.set != nil {
			*f.set = true
		}
	}
	*f.list = append(*f.list, s)
	return nil
}
