package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policyload"
)

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Validate, compile and trace policies offline",
	}
	cmd.AddCommand(newPolicyValidateCommand(), newPolicyCompileCommand(), newPolicyTraceCommand())
	return cmd
}

func newPolicyValidateCommand() *cobra.Command {
	var (
		endpoints string
		kube      kubeInputs
	)
	cmd := &cobra.Command{
		Use:   "validate [PATH...] [--endpoints FILE] | --kubeconfig PATH",
		Short: "Check policy files and directories and an endpoints file, or a cluster's policy objects; one line per error",
		RunE: func(cmd *cobra.Command, args []string) error {
			if kube.kubeconfig != "" {
				if len(args) > 0 || endpoints != "" {
					return errors.New("--kubeconfig validates the cluster's policy objects: give no paths and no --endpoints with it")
				}
				return validateKube(cmd.Context(), &kube, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			if kube.context != "" {
				return errors.New("--context needs --kubeconfig")
			}
			if len(args) == 0 && endpoints == "" {
				return errors.New("nothing to validate: give policy files or directories, or --endpoints FILE")
			}
			var errs policy.ErrorList
			var policies []policy.Policy
			if len(args) > 0 {
				var err error
				policies, err = policyload.Load(args...)
				if err != nil && !errors.As(err, &errs) {
					return err
				}
			}
			var eps *policy.EndpointsFile
			if endpoints != "" {
				var err error
				eps, err = policyload.LoadEndpoints(endpoints)
				var l policy.ErrorList
				if errors.As(err, &l) {
					errs = append(errs, l...)
				} else if err != nil {
					return err
				}
			}
			if len(errs) > 0 {
				return reportPolicyErrors(cmd.ErrOrStderr(), errs)
			}
			if len(args) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d policies valid\n", len(policies))
			}
			if eps != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d endpoints valid\n", endpoints, len(eps.Endpoints))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&endpoints, "endpoints", "", "also validate this endpoints file (the standalone format)")
	kube.register(cmd, false)
	return cmd
}

// reportPolicyErrors prints one line per field error and returns an
// exitError so that main exits non-zero without repeating them.
func reportPolicyErrors(w io.Writer, err error) error {
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, fe := range list {
			fmt.Fprintln(w, fe.Error())
		}
		return &exitError{code: 1, msg: fmt.Sprintf("%d error(s) found", len(list))}
	}
	return err
}

// planInputs are the flags that compile and trace share.
type planInputs struct {
	policies  []string
	endpoints string
}

func (in *planInputs) register(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&in.policies, "policies", nil, "policy file or directory (repeatable)")
	cmd.Flags().StringVar(&in.endpoints, "endpoints", "", "endpoints file (the standalone format)")
	_ = cmd.MarkFlagRequired("policies")
	_ = cmd.MarkFlagRequired("endpoints")
}

// registerOrKube registers the file flags, required unless --kubeconfig
// is given (checked by check).
func (in *planInputs) registerOrKube(cmd *cobra.Command, kube *kubeInputs) {
	cmd.Flags().StringSliceVar(&in.policies, "policies", nil, "policy file or directory (repeatable)")
	cmd.Flags().StringVar(&in.endpoints, "endpoints", "", "endpoints file (the standalone format)")
	kube.register(cmd, true)
}

// check says which flags are missing or do not go together.
func (in *planInputs) check(kube *kubeInputs) error {
	if kube.kubeconfig != "" {
		if len(in.policies) > 0 || in.endpoints != "" {
			return errors.New("--kubeconfig reads policies and pods from the cluster: give no --policies and no --endpoints with it")
		}
		return nil
	}
	if kube.node != "" || kube.context != "" {
		return errors.New("--node and --context need --kubeconfig")
	}
	var missing []string
	if len(in.policies) == 0 {
		missing = append(missing, `"policies"`)
	}
	if in.endpoints == "" {
		missing = append(missing, `"endpoints"`)
	}
	if len(missing) > 0 {
		return fmt.Errorf("required flag(s) %s not set (or give --kubeconfig)", strings.Join(missing, ", "))
	}
	return nil
}

func (in *planInputs) plan(stderr io.Writer) (*policy.Plan, error) {
	plan, err := agent.StandalonePlan(in.policies, in.endpoints)
	var list policy.ErrorList
	if errors.As(err, &list) {
		return nil, reportPolicyErrors(stderr, err)
	}
	return plan, err
}

func newPolicyCompileCommand() *cobra.Command {
	var (
		in       planInputs
		endpoint string
		output   string
	)
	cmd := &cobra.Command{
		Use:   "compile --policies PATH --endpoints FILE",
		Short: "Print the Plan the datapath and proxies will enforce",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := in.plan(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if endpoint != "" {
				ns, name := splitEndpointRef(endpoint)
				ep := plan.Endpoint(ns, name)
				if ep == nil {
					return fmt.Errorf("--endpoint %q: no such endpoint in %s", endpoint, in.endpoints)
				}
				return writeStructured(cmd.OutOrStdout(), output, ep)
			}
			return writeStructured(cmd.OutOrStdout(), output, plan)
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only this endpoint (namespace/name or name in default)")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output format: json or yaml")
	return cmd
}

func newPolicyTraceCommand() *cobra.Command {
	var (
		in                 planInputs
		from, to, port     string
		method, path, host string
		headers            []string
		dnsQuery, output   string
		httpPaths          string
		kube               kubeInputs
	)
	cmd := &cobra.Command{
		Use:   "trace (--policies PATH --endpoints FILE | --kubeconfig PATH) --from EP --to EP|IP --port 80/TCP",
		Short: "Explain whether a packet or request would be allowed, and by which rule",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := in.check(&kube); err != nil {
				return err
			}
			req, err := buildTraceRequest(from, to, port, method, path, host, headers, dnsQuery)
			if err != nil {
				return err
			}
			if req.HTTP != nil {
				if _, err := httpnorm.ParseMode(httpPaths); err != nil {
					return fmt.Errorf("--http-paths: %w", err)
				}
				req.HTTP.PathMode = httpPaths
			}
			var plan *policy.Plan
			if kube.kubeconfig != "" {
				snap, err := kube.snapshot(cmd.Context(), []policy.TracePeer{req.From, req.To})
				if err != nil {
					return err
				}
				for _, p := range []policy.TracePeer{req.From, req.To} {
					if p.Name != "" && snap.plan.Endpoint(p.Namespace, p.Name) == nil {
						return fmt.Errorf("pod %s/%s is not an endpoint: it has no pod IP yet, runs on the host network, or has finished", p.Namespace, p.Name)
					}
				}
				snap.warnings(cmd.ErrOrStderr())
				plan = snap.plan
			} else {
				plan, err = in.plan(cmd.ErrOrStderr())
				if err != nil {
					return err
				}
			}
			res := policy.Trace(plan, req)
			if res.Error != "" {
				return errors.New(res.Error)
			}
			switch output {
			case "", "text":
				fmt.Fprint(cmd.OutOrStdout(), formatTrace(req, res))
			case "json", "yaml":
				if err := writeStructured(cmd.OutOrStdout(), output, res); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--output %q: want text, json or yaml", output)
			}
			if !res.Allowed() {
				return &exitError{code: 2}
			}
			return nil
		},
	}
	in.registerOrKube(cmd, &kube)
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source endpoint (namespace/name) or IP address")
	f.StringVar(&to, "to", "", "destination endpoint (namespace/name) or IP address")
	f.StringVar(&port, "port", "", "destination port and protocol: 80/TCP, 53/UDP, 8/ICMP (type)")
	f.StringVar(&method, "http-method", "", "HTTP method (turns on L7 evaluation)")
	f.StringVar(&path, "http-path", "", "HTTP request target, e.g. /v1/request-landing")
	f.StringVar(&host, "http-host", "", "HTTP Host header")
	f.StringArrayVar(&headers, "http-header", nil, "HTTP header 'Name: value' (repeatable)")
	f.StringVar(&httpPaths, "http-paths", "", "the proxy's path handling: strict (default) or envoy, as the agent's httpPaths")
	f.StringVar(&dnsQuery, "dns-query", "", "DNS query name (for port 53 redirects)")
	f.StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagRequired("port")
	return cmd
}

func splitEndpointRef(s string) (namespace, name string) {
	if ns, n, ok := strings.Cut(s, "/"); ok {
		return ns, n
	}
	return "default", s
}

func parseTracePeer(flag, s string) (policy.TracePeer, error) {
	if s == "" {
		return policy.TracePeer{}, fmt.Errorf("--%s is empty", flag)
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return policy.TracePeer{IP: ip}, nil
	}
	ns, name := splitEndpointRef(s)
	if ns == "" || name == "" {
		return policy.TracePeer{}, fmt.Errorf("--%s %q: want namespace/name or an IP address", flag, s)
	}
	return policy.TracePeer{Namespace: ns, Name: name}, nil
}

var protoNames = map[string]policy.Protocol{
	"TCP": policy.ProtoTCP, "UDP": policy.ProtoUDP, "SCTP": policy.ProtoSCTP,
	"ICMP": policy.ProtoICMP, "ICMPV6": policy.ProtoICMPv6,
}

func parsePortProto(s string) (uint16, policy.Protocol, error) {
	p, proto, ok := strings.Cut(s, "/")
	if !ok {
		proto = "TCP"
	}
	pr, known := protoNames[strings.ToUpper(proto)]
	if !known {
		return 0, 0, fmt.Errorf("--port %q: unknown protocol %q (TCP, UDP, SCTP, ICMP, ICMPv6)", s, proto)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("--port %q: port must be a number from 0 to 65535", s)
	}
	if (pr == policy.ProtoICMP || pr == policy.ProtoICMPv6) && n > 255 {
		return 0, 0, fmt.Errorf("--port %q: ICMP type must be 0 to 255", s)
	}
	return uint16(n), pr, nil
}

func buildTraceRequest(from, to, port, method, path, host string, headers []string, dnsQuery string) (policy.TraceRequest, error) {
	var req policy.TraceRequest
	var err error
	if req.From, err = parseTracePeer("from", from); err != nil {
		return req, err
	}
	if req.To, err = parseTracePeer("to", to); err != nil {
		return req, err
	}
	if req.Port, req.Proto, err = parsePortProto(port); err != nil {
		return req, err
	}
	if method != "" || path != "" || host != "" || len(headers) > 0 {
		if req.Proto != policy.ProtoTCP {
			return req, fmt.Errorf("--http-* flags need a TCP port, got --port %q", port)
		}
		h := &policy.TraceHTTP{Method: method, Path: path, Host: host, Headers: map[string]string{}}
		if h.Method == "" {
			h.Method = "GET"
		}
		if h.Path == "" {
			h.Path = "/"
		}
		for _, kv := range headers {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return req, fmt.Errorf("--http-header %q: want 'Name: value'", kv)
			}
			h.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		req.HTTP = h
	}
	req.DNSQuery = dnsQuery
	return req, nil
}

// formatTrace renders a trace result for people.
func formatTrace(req policy.TraceRequest, res policy.TraceResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (identity %s) -> %s (identity %s) %d/%s\n",
		res.Source.Peer, res.Source.Identity, res.Destination.Peer, res.Destination.Identity, req.Port, req.Proto)
	for _, s := range res.Steps {
		verdict := "allowed"
		if !s.Allowed {
			verdict = "denied"
		}
		fmt.Fprintf(&b, "  %s of %s: %s", s.Direction, s.Endpoint, verdict)
		if s.Proxy != "" {
			fmt.Fprintf(&b, ", redirected to %s proxy", s.Proxy)
		}
		fmt.Fprintf(&b, " (%s)\n", s.Reason)
		if h := s.HTTP; h != nil && h.NormalizedPath != "" {
			fmt.Fprintf(&b, "    http path %s (normalisation: %s)\n", h.NormalizedPath, h.Action)
		}
	}
	fmt.Fprintf(&b, "Verdict: %s\n", res.Verdict)
	return b.String()
}
