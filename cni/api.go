package cni

import (
	"fmt"
	"net/netip"
)

// Paths of the agent's CNI API (on its local socket, agent.sock).
const (
	PathAdd    = "/v1/cni/add"
	PathDel    = "/v1/cni/del"
	PathCheck  = "/v1/cni/check"
	PathGC     = "/v1/cni/gc"
	PathStatus = "/v1/cni/status"
)

// Request is ADD, DEL and CHECK: one attachment of one pod.
type Request struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Netns is the runtime's netns path (empty on a DEL after the runtime
	// dropped it).
	Netns     string `json:"netns,omitempty"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
	// Chained mode (a previous plugin made the veth): its host side and the
	// pod's addresses, from prevResult.
	Chained    bool         `json:"chained,omitempty"`
	HostIfname string       `json:"hostIfname,omitempty"`
	IPs        []netip.Addr `json:"ips,omitempty"`
}

// Validate names the first missing field.
func (r *Request) Validate(verb string) error {
	switch {
	case r.ContainerID == "":
		return fmt.Errorf("%s: containerID is required", verb)
	case r.IfName == "":
		return fmt.Errorf("%s: ifName is required", verb)
	case r.Namespace == "" || r.Name == "":
		return fmt.Errorf("%s: the pod's namespace and name are required (CNI_ARGS K8S_POD_NAMESPACE, K8S_POD_NAME)", verb)
	case verb == "add" && r.Netns == "":
		return fmt.Errorf("%s: netns is required", verb)
	case r.Chained && verb == "add" && (r.HostIfname == "" || len(r.IPs) == 0):
		return fmt.Errorf("%s: chained mode needs the previous plugin's host interface and addresses", verb)
	}
	return nil
}

// Response is what ADD and CHECK return: where the pod is.
type Response struct {
	IPv4    netip.Prefix `json:"ipv4,omitzero"`
	IPv6    netip.Prefix `json:"ipv6,omitzero"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	// GatewayIPv6 is the link-local IPv6 gateway (when IPv6 is set).
	GatewayIPv6 netip.Addr `json:"gatewayIPv6,omitzero"`
	HostIfname  string     `json:"hostIfname"`
	HostMAC     string     `json:"hostMAC,omitempty"`
	PodMAC      string     `json:"podMAC,omitempty"`
	// Identity is the pod's security identity (informational).
	Identity uint32 `json:"identity,omitempty"`
}

// Attachment names one attachment (GC's valid list).
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// GCRequest lists the attachments the runtime still uses; the agent
// removes every other one.
type GCRequest struct {
	Valid []Attachment `json:"valid"`
}

// GCResponse lists what GC removed.
type GCResponse struct {
	Removed []Attachment `json:"removed"`
}

// StatusResponse says whether the agent can serve ADD.
type StatusResponse struct {
	Ready bool `json:"ready"`
	// Reason says why not.
	Reason  string `json:"reason,omitempty"`
	PodCIDR string `json:"podCIDR,omitempty"`
}

// Error is the body of every non-2xx answer: a CNI error code (the spec's
// table: 7 invalid config, 11 try again later, 50 not available, 999
// internal) and a message.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// CNI error codes the agent and plugin use (the spec's well-known codes).
const (
	CodeIncompatibleVersion = 1
	CodeUnknownContainer    = 3
	CodeInvalidEnv          = 4
	CodeDecoding            = 6
	CodeInvalidConfig       = 7
	CodeTryAgainLater       = 11
	CodeNotAvailable        = 50
	CodeInternal            = 999
)
