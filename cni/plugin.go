package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// SupportedVersions are the CNI spec versions moat-cni speaks (1.0+: GC and
// STATUS come with 1.1).
var SupportedVersions = version.PluginSupports("1.0.0", "1.1.0")

// Conf is moat-cni's network config (one plugin of a conflist).
type Conf struct {
	types.PluginConf
	// Socket is the agent's local API socket (default /run/moat/agent.sock).
	Socket string `json:"socket,omitempty"`
	// Timeout bounds each call to the agent, as a Go duration (default 60s).
	Timeout string `json:"timeout,omitempty"`

	timeout time.Duration
}

// ParseConf reads the network config from stdin data. Errors say what is
// wrong (code 6 for bad JSON, 7 for a bad field).
func ParseConf(data []byte) (*Conf, error) {
	c := &Conf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parse moat-cni network config", err.Error())
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	c.timeout = DefaultTimeout
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "moat-cni network config: timeout", fmt.Sprintf("%q: want a positive Go duration like 60s", c.Timeout))
		}
		c.timeout = d
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "moat-cni network config: prevResult", err.Error())
		}
	}
	return c, nil
}

func (c *Conf) client() Client { return Client{Socket: c.Socket, Timeout: c.timeout} }

// ParseArgs reads CNI_ARGS ("K1=V1;K2=V2"): the pod's namespace, name and
// UID (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID). Other keys are
// ignored, as the runtime passes IgnoreUnknown and more.
func ParseArgs(s string) (namespace, name, uid string, err error) {
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", "", "", types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS", fmt.Sprintf("%q is not KEY=VALUE", kv))
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		case "K8S_POD_UID":
			uid = v
		}
	}
	return namespace, name, uid, nil
}

// request builds the API request of one verb.
func request(verb string, args *skel.CmdArgs, c *Conf) (*Request, error) {
	ns, name, uid, err := ParseArgs(args.Args)
	if err != nil {
		return nil, err
	}
	r := &Request{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns, Namespace: ns, Name: name, UID: uid}
	if c.PrevResult != nil {
		prev, err := types100.NewResultFromResult(c.PrevResult)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "moat-cni: convert prevResult", err.Error())
		}
		r.Chained = true
		for _, i := range prev.Interfaces {
			if i.Sandbox == "" && r.HostIfname == "" {
				r.HostIfname = i.Name
			}
		}
		for _, ip := range prev.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
				r.IPs = append(r.IPs, a.Unmap())
			}
		}
	}
	if err := r.Validate(verb); err != nil {
		code := uint(types.ErrInvalidEnvironmentVariables)
		if r.Chained {
			code = types.ErrInvalidNetworkConfig
		}
		return nil, types.NewError(code, "moat-cni "+verb, err.Error())
	}
	return r, nil
}

// asTypesError turns the client's *Error into the CNI library's error.
func asTypesError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return types.NewError(e.Code, e.Msg, e.Details)
	}
	return err
}

// Add handles ADD: the agent makes (or, chained, adopts) the pod's veth,
// allocates its address and enforces it, then the result is printed.
func Add(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	req, err := request("add", args, c)
	if err != nil {
		return err
	}
	var resp Response
	if err := c.client().Do(context.Background(), PathAdd, req, &resp); err != nil {
		return asTypesError(err)
	}
	var result *types100.Result
	if req.Chained {
		if result, err = types100.NewResultFromResult(c.PrevResult); err != nil {
			return types.NewError(types.ErrInternal, "moat-cni: convert prevResult", err.Error())
		}
	} else if result, err = buildResult(args, &resp); err != nil {
		return err
	}
	return types.PrintResult(result, c.CNIVersion)
}

// buildResult is the CNI result of a veth moat-cni made.
func buildResult(args *skel.CmdArgs, resp *Response) (*types100.Result, error) {
	hostMAC, podMAC := resp.HostMAC, resp.PodMAC
	res := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: resp.HostIfname, Mac: hostMAC},
			{Name: args.IfName, Mac: podMAC, Sandbox: args.Netns},
		},
	}
	pod := 1
	add := func(p netip.Prefix, gw netip.Addr) {
		if !p.IsValid() {
			return
		}
		res.IPs = append(res.IPs, &types100.IPConfig{
			Interface: &pod,
			Address:   net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Gateway:   gw.AsSlice(),
		})
		dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if p.Addr().Is6() {
			dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		res.Routes = append(res.Routes, &types.Route{Dst: dst, GW: gw.AsSlice()})
	}
	add(resp.IPv4, resp.Gateway)
	add(resp.IPv6, resp.GatewayIPv6)
	if len(res.IPs) == 0 {
		return nil, types.NewError(types.ErrInternal, "moat-cni: the agent returned no address", "")
	}
	return res, nil
}

// Del handles DEL: idempotent; the agent removes the attachment's
// enforcement, veth and address.
func Del(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	req, err := request("del", args, c)
	if err != nil {
		return err
	}
	return asTypesError(c.client().Do(context.Background(), PathDel, req, nil))
}

// Check handles CHECK: the agent verifies the veth, address and programs.
func Check(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "moat-cni check", "prevResult is required")
	}
	req, err := request("check", args, c)
	if err != nil {
		return err
	}
	if !req.Chained {
		return types.NewError(types.ErrInvalidNetworkConfig, "moat-cni check", "prevResult is required")
	}
	// CHECK's prevResult is moat's own ADD result unless chained; the agent
	// knows which by its attachment.
	req.Chained, req.HostIfname, req.IPs = false, "", nil
	var resp Response
	return asTypesError(c.client().Do(context.Background(), PathCheck, req, &resp))
}

// GC handles GC: the agent removes every attachment not listed valid.
func GC(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	gc := GCRequest{Valid: []Attachment{}}
	for _, a := range c.ValidAttachments {
		gc.Valid = append(gc.Valid, Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return asTypesError(c.client().Do(context.Background(), PathGC, gc, &GCResponse{}))
}

// Status handles STATUS: an error (code 50) unless the agent is ready.
func Status(args *skel.CmdArgs) error {
	c, err := ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	var st StatusResponse
	if err := c.client().Do(context.Background(), PathStatus, nil, &st); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code == CodeTryAgainLater {
			e.Code = CodeNotAvailable
		}
		return asTypesError(err)
	}
	if !st.Ready {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("moat agent on %s is not ready", c.Socket), st.Reason)
	}
	return nil
}

// Main runs the plugin (the CNI_COMMAND environment, stdin config).
func Main(about string) {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}, SupportedVersions, about)
}
