package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/moatnet/moat/cni"
	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/k8s"
	"github.com/moatnet/moat/policy"
)

// cni.go is the agent's side of moat-cni (Kubernetes mode, Config.CNI):
// the /v1/cni/* handlers of the local API.
//
// ADD: wait (bounded by CNIPodWait) until the Kubernetes source is synced
// and the pod is in its cache, on this node, with the runtime's UID; take
// an address from the node's pod CIDR (ipam.go) or, chained, the previous
// plugin's; record the attachment (state dir) before touching the kernel;
// make the routed veth in the runtime's netns with the standalone
// endpoint code (datapath.EnsureInNetns) unless chained; then make the pod
// an endpoint (k8s.PodAttachments: a local pod's address and interface
// come from its attachment, never from its status) and wait until a
// reconcile has attached the programs to its host veth and written the
// maps (ipcache, policy) for its address. Only then does ADD answer: the
// pod's first packet is policed. The pod's identity is the one its labels
// in the informer cache give (the labels are not taken from the request:
// the cache is what later changes follow, so there is one source).
//
// DEL: the reverse, idempotent: the pod stops being an endpoint, a
// reconcile detaches and removes its entries, then the veth (or, chained,
// moat's changes to the previous plugin's veth) goes, the address is
// released and the record deleted. GC does DEL for every attachment the
// runtime does not list valid, and releases addresses owned by no
// attachment.

// cniAttachmentsFile is the attachment records' file under StateDir.
const cniAttachmentsFile = "cni-attachments.json"

// cniAttachment is one CNI attachment: a pod sandbox's interface.
type cniAttachment struct {
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
	Netns       string     `json:"netns,omitempty"`
	Namespace   string     `json:"namespace"`
	Name        string     `json:"name"`
	UID         string     `json:"uid,omitempty"`
	IPv4        netip.Addr `json:"ipv4,omitzero"`
	HostIfname  string     `json:"hostIfname"`
	// Chained: the previous plugin made the veth and owns the address.
	Chained bool `json:"chained,omitempty"`
}

func (t *cniAttachment) key() string { return t.ContainerID + "/" + t.IfName }
func (t *cniAttachment) pod() string { return t.Namespace + "/" + t.Name }
func (t *cniAttachment) endpoint() policy.Endpoint {
	return policy.Endpoint{Namespace: t.Namespace, Name: t.Name, IPv4: t.IPv4}
}

// runtimePlumbing is what cni.go needs of the endpoint manager beyond
// endpointPlumbing (*datapath.EndpointManager implements it).
type runtimePlumbing interface {
	EnsureInNetns(ctx context.Context, ep policy.Endpoint, l datapath.RuntimeLink) (datapath.EndpointLink, error)
	CheckInNetns(ep policy.Endpoint, l datapath.RuntimeLink) (datapath.EndpointLink, error)
	RemoveRuntimeLink(ep policy.Endpoint, hostIfname string) error
	Remove(ctx context.Context, ep policy.Endpoint) error
}

var _ runtimePlumbing = (*datapath.EndpointManager)(nil)

// cniServer holds the attachments; see the file comment.
type cniServer struct {
	a    *Agent
	path string
	ipam *ipam

	// opMu serialises changes to attachments (not the waits for
	// reconciles).
	opMu sync.Mutex
	mu   sync.RWMutex
	atts map[string]*cniAttachment // by key()
	pods map[string]*cniAttachment // by pod(): the newest attachment

	// reconciled is closed (and replaced) after every reconcile.
	rmu        sync.Mutex
	reconciled chan struct{}

	m *cniMetrics
}

func newCNIServer(a *Agent) *cniServer {
	c := &cniServer{
		a:          a,
		path:       filepath.Join(a.cfg.StateDir, cniAttachmentsFile),
		atts:       map[string]*cniAttachment{},
		pods:       map[string]*cniAttachment{},
		reconciled: make(chan struct{}),
	}
	c.m = newCNIMetrics(a.reg, c)
	return c
}

// load reads the persisted attachments and allocations (Run, before the
// source starts: the first Plan already has every attached pod).
func (c *cniServer) load() error {
	m, err := openIPAM(c.a.cfg.StateDir)
	if err != nil {
		return err
	}
	c.ipam = m
	data, err := os.ReadFile(c.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read cni attachments: %w", err)
	}
	var list []*cniAttachment
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("read cni attachments %s: %w", c.path, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range list {
		c.atts[t.key()] = t
		c.pods[t.pod()] = t // list is in attachment order: the newest wins
	}
	return nil
}

// saveLocked writes the attachments (c.mu held), oldest first.
func (c *cniServer) saveLocked(order []*cniAttachment) error {
	data, err := json.MarshalIndent(order, "", "  ")
	if err != nil {
		return fmt.Errorf("encode cni attachments: %w", err)
	}
	if err := writeFileAtomic(c.path, data, 0o600); err != nil {
		return fmt.Errorf("write cni attachments: %w", err)
	}
	return nil
}

// ordered lists the attachments with each pod's newest last (c.mu held).
func (c *cniServer) orderedLocked() []*cniAttachment {
	out := make([]*cniAttachment, 0, len(c.atts))
	for _, t := range c.atts {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		ci, cj := c.pods[out[i].pod()] == out[i], c.pods[out[j].pod()] == out[j]
		if ci != cj {
			return cj // current ones last
		}
		return out[i].key() < out[j].key()
	})
	return out
}

// put records t (as its pod's newest attachment when current).
func (c *cniServer) put(t *cniAttachment, current bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prevT, hadT := c.atts[t.key()]
	prevP, hadP := c.pods[t.pod()]
	c.atts[t.key()] = t
	if current {
		c.pods[t.pod()] = t
	}
	if err := c.saveLocked(c.orderedLocked()); err != nil {
		if hadT {
			c.atts[t.key()] = prevT
		} else {
			delete(c.atts, t.key())
		}
		if hadP {
			c.pods[t.pod()] = prevP
		} else {
			delete(c.pods, t.pod())
		}
		return err
	}
	return nil
}

// unpublish makes t no longer its pod's current attachment.
func (c *cniServer) unpublish(t *cniAttachment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pods[t.pod()] == t {
		delete(c.pods, t.pod())
	}
}

// drop forgets t.
func (c *cniServer) drop(t *cniAttachment) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.atts, t.key())
	if c.pods[t.pod()] == t {
		delete(c.pods, t.pod())
	}
	return c.saveLocked(c.orderedLocked())
}

func (c *cniServer) get(key string) *cniAttachment {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.atts[key]
}

// Attachment implements k8s.PodAttachments.
func (c *cniServer) Attachment(namespace, name, uid string) (k8s.Attachment, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.pods[namespace+"/"+name]
	if !ok || (t.UID != "" && uid != "" && t.UID != uid) {
		return k8s.Attachment{}, false
	}
	return k8s.Attachment{IPv4: t.IPv4, HostIfname: t.HostIfname}, true
}

// signalReconciled wakes the waits; reconcile calls it after every pass.
func (c *cniServer) signalReconciled() {
	c.rmu.Lock()
	close(c.reconciled)
	c.reconciled = make(chan struct{})
	c.rmu.Unlock()
}

func (c *cniServer) reconciledCh() <-chan struct{} {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.reconciled
}

// waitFor polls cond after every reconcile (and every 50 ms) until it
// holds or ctx ends; it then returns cond's last reason.
func (c *cniServer) waitFor(ctx context.Context, cond func() (bool, string)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ch := c.reconciledCh()
		ok, why := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", why, ctx.Err())
		case <-ch:
		case <-t.C:
		}
	}
}

func (c *cniServer) kube() *k8s.Source {
	if ks, ok := c.a.src.(*kubeSource); ok {
		return ks.src
	}
	return nil
}

// ready says whether ADD can be served now, and why not.
func (c *cniServer) ready() (bool, string) {
	ks := c.kube()
	if ks == nil {
		return false, "the agent is not in Kubernetes mode"
	}
	if !c.a.src.synced() {
		return false, "the agent's Kubernetes caches are not synced yet"
	}
	c.a.mu.RLock()
	planned := c.a.state.plan != nil
	c.a.mu.RUnlock()
	if !planned {
		return false, "the agent has not enforced its first plan yet"
	}
	return true, ""
}

// refreshPool sets the address pool from this node's Node object, else the
// configured cniPodCIDR.
func (c *cniServer) refreshPool() {
	var pool netip.Prefix
	if ks := c.kube(); ks != nil {
		for _, n := range ks.Nodes() {
			if n.Name != c.a.cfg.NodeName {
				continue
			}
			for _, p := range n.PodCIDRs {
				if p.Addr().Is4() {
					pool = p
					break
				}
			}
		}
	}
	if !pool.IsValid() && c.a.cfg.CNIPodCIDR != "" {
		pool, _ = netip.ParsePrefix(c.a.cfg.CNIPodCIDR) // checked by Validate
	}
	if pool.IsValid() {
		c.ipam.setPool(pool)
	}
}

// enforced reports whether t's pod is attached on t's host veth and the
// maps hold the Plan in which it has t's address.
func (c *cniServer) enforced(t *cniAttachment, hostIfindex int) (bool, string, policy.ID) {
	a := c.a
	a.mu.RLock()
	defer a.mu.RUnlock()
	plan := a.state.plan
	if plan == nil {
		return false, "no plan enforced yet", 0
	}
	k := datapath.EndpointKey{Namespace: t.Namespace, Name: t.Name}
	if idx, ok := a.state.ifaces[k]; !ok || idx != hostIfindex {
		why := fmt.Sprintf("programs not attached to %s", t.HostIfname)
		if a.state.lastError != "" {
			why += " (last error: " + a.state.lastError + ")"
		}
		return false, why, 0
	}
	for i := range plan.Endpoints {
		pe := &plan.Endpoints[i]
		if pe.Namespace != t.Namespace || pe.Name != t.Name {
			continue
		}
		if !slices.Contains(pe.Addresses, t.IPv4) {
			return false, fmt.Sprintf("the plan has endpoint %s without address %s", k, t.IPv4), 0
		}
		if a.proxy.syncedGen != plan.Generation {
			return false, "the maps do not hold the current plan yet", 0
		}
		return true, "", pe.Identity
	}
	return false, fmt.Sprintf("endpoint %s not in the plan", k), 0
}

// gone reports whether nothing enforces t any more: its pod is not
// attached on t's veth and no Plan endpoint of the pod has t's address.
func (c *cniServer) gone(t *cniAttachment, hostIfindex int) (bool, string) {
	a := c.a
	a.mu.RLock()
	defer a.mu.RUnlock()
	plan := a.state.plan
	if plan == nil {
		return false, "no plan enforced yet"
	}
	k := datapath.EndpointKey{Namespace: t.Namespace, Name: t.Name}
	if idx, ok := a.state.ifaces[k]; ok && hostIfindex != 0 && idx == hostIfindex {
		return false, fmt.Sprintf("programs still attached to %s", t.HostIfname)
	}
	for i := range plan.Endpoints {
		pe := &plan.Endpoints[i]
		if pe.Namespace == t.Namespace && pe.Name == t.Name && slices.Contains(pe.Addresses, t.IPv4) {
			return false, fmt.Sprintf("endpoint %s still in the plan with %s", k, t.IPv4)
		}
	}
	if a.proxy.syncedGen != plan.Generation {
		return false, "the maps do not hold the current plan yet"
	}
	return true, ""
}

// detachStale releases the programs on ifindex unless a reconcile has it
// attached for an endpoint.
func (c *cniServer) detachStale(ifindex int) error {
	if ifindex == 0 {
		return nil
	}
	c.a.mu.RLock()
	_, inUse := c.a.state.byIfindex[ifindex]
	c.a.mu.RUnlock()
	if inUse {
		return nil
	}
	if err := c.a.maps.Detach(ifindex); err != nil {
		return fmt.Errorf("detach programs from ifindex %d: %w", ifindex, err)
	}
	return nil
}

func ifindexOf(name string) int {
	if i, err := net.InterfaceByName(name); err == nil {
		return i.Index
	}
	return 0
}

func cniErr(code uint, msg string, err error) *cni.Error {
	e := &cni.Error{Code: code, Msg: msg}
	if err != nil {
		e.Details = err.Error()
	}
	return e
}

// add serves ADD; see the file comment.
func (c *cniServer) add(ctx context.Context, req *cni.Request) (*cni.Response, *cni.Error) {
	if err := req.Validate("add"); err != nil {
		return nil, cniErr(cni.CodeInvalidEnv, "invalid ADD request", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.a.cfg.CNIPodWait))
	defer cancel()
	if err := c.waitFor(ctx, c.ready); err != nil {
		return nil, cniErr(cni.CodeTryAgainLater, "moat agent not ready", err)
	}
	ks := c.kube()
	var pod k8s.PodInfo
	err := c.waitFor(ctx, func() (bool, string) {
		p, ok := ks.Pod(req.Namespace, req.Name)
		switch {
		case !ok:
			return false, fmt.Sprintf("pod %s/%s not in the agent's cache", req.Namespace, req.Name)
		case req.UID != "" && p.UID != req.UID:
			return false, fmt.Sprintf("pod %s/%s in the agent's cache has uid %s, not %s", req.Namespace, req.Name, p.UID, req.UID)
		case p.NodeName != c.a.cfg.NodeName:
			return false, fmt.Sprintf("pod %s/%s is bound to node %q, not %q", req.Namespace, req.Name, p.NodeName, c.a.cfg.NodeName)
		}
		pod = p
		return true, ""
	})
	if err != nil {
		return nil, cniErr(cni.CodeTryAgainLater, "wait for the pod", err)
	}
	if pod.HostNetwork {
		return nil, cniErr(cni.CodeInvalidConfig, fmt.Sprintf("pod %s/%s uses the host network", req.Namespace, req.Name), nil)
	}
	plumb, ok := c.a.plumb.(runtimePlumbing)
	if !ok {
		return nil, cniErr(cni.CodeInternal, "the endpoint manager cannot plumb runtime netns", nil)
	}

	c.opMu.Lock()
	t, ferr := c.attach(ctx, req, plumb)
	c.opMu.Unlock()
	if ferr != nil {
		return nil, ferr
	}
	ks.TouchPod(t.Namespace, t.Name)
	hostIfindex := ifindexOf(t.HostIfname)
	var id policy.ID
	err = c.waitFor(ctx, func() (bool, string) {
		ok, why, pid := c.enforced(t, hostIfindex)
		id = pid
		return ok, why
	})
	if err != nil {
		return nil, cniErr(cni.CodeTryAgainLater, fmt.Sprintf("pod %s/%s not enforced", t.Namespace, t.Name), err)
	}
	resp := &cni.Response{HostIfname: t.HostIfname, Identity: uint32(id)}
	if t.IPv4.IsValid() {
		resp.IPv4 = netip.PrefixFrom(t.IPv4, 32)
		resp.Gateway = c.a.endpointConfig().GatewayIPv4
	}
	if l, err := net.InterfaceByName(t.HostIfname); err == nil {
		resp.HostMAC = l.HardwareAddr.String()
	}
	if !t.Chained {
		if link, err := plumb.CheckInNetns(t.endpoint(), t.runtimeLink()); err == nil && link.MAC != nil {
			resp.PodMAC = link.MAC.String()
		}
	}
	c.a.log.Info("cni add: pod enforced", "pod", t.pod(), "container", t.ContainerID, "ip", t.IPv4, "host_ifname", t.HostIfname, "identity", id)
	return resp, nil
}

func (t *cniAttachment) runtimeLink() datapath.RuntimeLink {
	l := datapath.RuntimeLink{Netns: t.Netns, PodIfname: t.IfName, HostIfname: t.HostIfname}
	if t.Chained {
		l.PodIfname = ""
	}
	return l
}

// attach records and plumbs one attachment (opMu held). A failure undoes
// what it did.
func (c *cniServer) attach(ctx context.Context, req *cni.Request, plumb runtimePlumbing) (_ *cniAttachment, ferr *cni.Error) {
	t := &cniAttachment{
		ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns,
		Namespace: req.Namespace, Name: req.Name, UID: req.UID, Chained: req.Chained,
	}
	if old := c.get(t.key()); old != nil && (old.pod() != t.pod() || old.Chained != t.Chained) {
		return nil, cniErr(cni.CodeInvalidConfig, fmt.Sprintf("attachment %s already belongs to pod %s", t.key(), old.pod()), nil)
	}
	if t.Chained {
		t.HostIfname = req.HostIfname
		for _, ip := range req.IPs {
			if ip.Is4() && !t.IPv4.IsValid() {
				t.IPv4 = ip
			}
		}
		if !t.IPv4.IsValid() {
			return nil, cniErr(cni.CodeInvalidConfig, "chained: prevResult has no IPv4 address (moat-cni supports IPv4 pods)", nil)
		}
	} else {
		c.refreshPool()
		ip, err := c.ipam.allocate(t.key())
		if err != nil {
			code := uint(cni.CodeInternal)
			if errors.Is(err, errPoolExhausted) {
				code = cni.CodeTryAgainLater
			}
			return nil, cniErr(code, "allocate pod address", err)
		}
		t.IPv4 = ip
		t.HostIfname = datapath.RuntimeHostIfname(t.ContainerID, t.IfName)
	}
	undo := func() {
		if !t.Chained {
			_ = plumb.RemoveRuntimeLink(t.endpoint(), t.HostIfname)
			_ = c.ipam.release(t.key())
		}
		_ = c.drop(t)
	}
	// Recorded before the kernel is touched: GC finds what a crash left.
	if err := c.put(t, false); err != nil {
		undo()
		return nil, cniErr(cni.CodeInternal, "record attachment", err)
	}
	if !t.Chained {
		if _, err := plumb.EnsureInNetns(ctx, t.endpoint(), t.runtimeLink()); err != nil {
			undo()
			return nil, cniErr(cni.CodeInternal, "make the pod's veth", err)
		}
	}
	if err := c.put(t, true); err != nil {
		undo()
		return nil, cniErr(cni.CodeInternal, "record attachment", err)
	}
	return t, nil
}

// del serves DEL; idempotent.
func (c *cniServer) del(ctx context.Context, req *cni.Request) *cni.Error {
	if err := req.Validate("del"); err != nil {
		return cniErr(cni.CodeInvalidEnv, "invalid DEL request", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.a.cfg.CNIPodWait))
	defer cancel()
	key := req.ContainerID + "/" + req.IfName
	t := c.get(key)
	if t == nil {
		// Unknown (already deleted, or ADD never recorded it): make sure
		// nothing of it is left.
		t = &cniAttachment{ContainerID: req.ContainerID, IfName: req.IfName, Namespace: req.Namespace, Name: req.Name,
			HostIfname: datapath.RuntimeHostIfname(req.ContainerID, req.IfName)}
		c.opMu.Lock()
		defer c.opMu.Unlock()
		if err := c.detachStale(ifindexOf(t.HostIfname)); err != nil {
			return cniErr(cni.CodeInternal, "detach programs", err)
		}
		if plumb, ok := c.a.plumb.(runtimePlumbing); ok {
			if err := plumb.RemoveRuntimeLink(t.endpoint(), t.HostIfname); err != nil {
				return cniErr(cni.CodeInternal, "remove veth", err)
			}
		}
		if c.ipam != nil {
			if err := c.ipam.release(key); err != nil {
				return cniErr(cni.CodeInternal, "release address", err)
			}
		}
		return nil
	}
	if err := c.remove(ctx, t); err != nil {
		return cniErr(cni.CodeTryAgainLater, fmt.Sprintf("remove attachment %s of pod %s", t.key(), t.pod()), err)
	}
	c.a.log.Info("cni del: attachment removed", "pod", t.pod(), "container", t.ContainerID, "ip", t.IPv4)
	return nil
}

// remove takes t out of enforcement, then removes its veth (or moat's
// changes to a chained one), address and record.
func (c *cniServer) remove(ctx context.Context, t *cniAttachment) error {
	hostIfindex := ifindexOf(t.HostIfname)
	c.unpublish(t)
	if ks := c.kube(); ks != nil {
		ks.TouchPod(t.Namespace, t.Name)
	}
	if err := c.waitFor(ctx, func() (bool, string) { return c.gone(t, hostIfindex) }); err != nil {
		return err
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	plumb, ok := c.a.plumb.(runtimePlumbing)
	if !ok {
		return errors.New("the endpoint manager cannot plumb runtime netns")
	}
	// An attachment replaced by a newer sandbox of its pod was never
	// detached by a reconcile (its pod stayed): release its programs.
	if err := c.detachStale(hostIfindex); err != nil {
		return err
	}
	if t.Chained {
		ep := t.endpoint()
		ep.Interface = t.HostIfname
		if err := plumb.Remove(ctx, ep); err != nil {
			return err
		}
	} else {
		if err := plumb.RemoveRuntimeLink(t.endpoint(), t.HostIfname); err != nil {
			return err
		}
		if err := c.ipam.release(t.key()); err != nil {
			return err
		}
	}
	return c.drop(t)
}

// check serves CHECK.
func (c *cniServer) check(req *cni.Request) (*cni.Response, *cni.Error) {
	if err := req.Validate("check"); err != nil {
		return nil, cniErr(cni.CodeInvalidEnv, "invalid CHECK request", err)
	}
	t := c.get(req.ContainerID + "/" + req.IfName)
	if t == nil {
		return nil, cniErr(cni.CodeUnknownContainer, fmt.Sprintf("no attachment %s/%s", req.ContainerID, req.IfName), nil)
	}
	plumb, ok := c.a.plumb.(runtimePlumbing)
	if !ok {
		return nil, cniErr(cni.CodeInternal, "the endpoint manager cannot plumb runtime netns", nil)
	}
	link, err := plumb.CheckInNetns(t.endpoint(), t.runtimeLink())
	if err != nil {
		return nil, cniErr(cni.CodeInternal, fmt.Sprintf("check pod %s", t.pod()), err)
	}
	ok, why, id := c.enforced(t, link.HostIfindex)
	if !ok {
		return nil, cniErr(cni.CodeInternal, fmt.Sprintf("pod %s is not enforced", t.pod()), errors.New(why))
	}
	return &cni.Response{IPv4: netip.PrefixFrom(t.IPv4, 32), HostIfname: t.HostIfname, Identity: uint32(id)}, nil
}

// gc serves GC: every attachment not in valid is removed, and addresses
// that no attachment owns are released.
func (c *cniServer) gc(ctx context.Context, req *cni.GCRequest) (*cni.GCResponse, *cni.Error) {
	valid := map[string]bool{}
	for _, v := range req.Valid {
		valid[v.ContainerID+"/"+v.IfName] = true
	}
	c.mu.RLock()
	var stale []*cniAttachment
	for k, t := range c.atts {
		if !valid[k] {
			stale = append(stale, t)
		}
	}
	c.mu.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.a.cfg.CNIPodWait))
	defer cancel()
	resp := &cni.GCResponse{Removed: []cni.Attachment{}}
	var errs []error
	for _, t := range stale {
		if err := c.remove(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("remove attachment %s: %w", t.key(), err))
			continue
		}
		resp.Removed = append(resp.Removed, cni.Attachment{ContainerID: t.ContainerID, IfName: t.IfName})
	}
	c.opMu.Lock()
	for _, owner := range c.ipam.allocated() {
		if c.get(owner) == nil && !valid[owner] {
			if err := c.ipam.release(owner); err != nil {
				errs = append(errs, err)
			}
		}
	}
	c.opMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return nil, cniErr(cni.CodeTryAgainLater, "gc", err)
	}
	if len(resp.Removed) > 0 {
		c.a.log.Info("cni gc: stale attachments removed", "removed", len(resp.Removed))
	}
	return resp, nil
}

// registerCNIAPI serves moat-cni: the CNI API when the agent is the
// node's CNI, else an answer that says it is not.
func (a *Agent) registerCNIAPI(mux *http.ServeMux) {
	if a.cni != nil {
		a.cni.register(mux)
		return
	}
	mux.HandleFunc("/v1/cni/", func(w http.ResponseWriter, r *http.Request) {
		writeCNIError(w, cniErr(cni.CodeNotAvailable, fmt.Sprintf("moat agent on node %s is not the node's CNI: run it in Kubernetes mode with --cni", a.cfg.NodeName), nil))
	})
}

// register adds the CNI API to the local API's mux.
func (c *cniServer) register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+cni.PathAdd, func(w http.ResponseWriter, r *http.Request) {
		var req cni.Request
		if e := decodeCNI(r, &req); e != nil {
			writeCNIError(w, e)
			return
		}
		start := time.Now()
		resp, e := c.add(r.Context(), &req)
		c.m.observe("add", e != nil, start)
		if e != nil {
			writeCNIError(w, e)
			return
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("POST "+cni.PathDel, func(w http.ResponseWriter, r *http.Request) {
		var req cni.Request
		if e := decodeCNI(r, &req); e != nil {
			writeCNIError(w, e)
			return
		}
		e := c.del(r.Context(), &req)
		c.m.observe("del", e != nil, time.Time{})
		if e != nil {
			writeCNIError(w, e)
			return
		}
		writeJSON(w, struct{}{})
	})
	mux.HandleFunc("POST "+cni.PathCheck, func(w http.ResponseWriter, r *http.Request) {
		var req cni.Request
		if e := decodeCNI(r, &req); e != nil {
			writeCNIError(w, e)
			return
		}
		resp, e := c.check(&req)
		c.m.observe("check", e != nil, time.Time{})
		if e != nil {
			writeCNIError(w, e)
			return
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("POST "+cni.PathGC, func(w http.ResponseWriter, r *http.Request) {
		var req cni.GCRequest
		if e := decodeCNI(r, &req); e != nil {
			writeCNIError(w, e)
			return
		}
		resp, e := c.gc(r.Context(), &req)
		c.m.observe("gc", e != nil, time.Time{})
		if e != nil {
			writeCNIError(w, e)
			return
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("GET "+cni.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		ok, why := c.ready()
		st := cni.StatusResponse{Ready: ok, Reason: why}
		if c.ipam != nil {
			c.refreshPool()
			if p := c.ipam.Pool(); p.IsValid() {
				st.PodCIDR = p.String()
			} else if ok {
				st.Ready, st.Reason = false, "no pod CIDR: the Node has no spec.podCIDR and cniPodCIDR is not set"
			}
		}
		c.m.observe("status", !st.Ready, time.Time{})
		writeJSON(w, st)
	})
}

func decodeCNI(r *http.Request, v any) *cni.Error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return cniErr(cni.CodeDecoding, "decode CNI request", err)
	}
	return nil
}

func writeCNIError(w http.ResponseWriter, e *cni.Error) {
	status := http.StatusInternalServerError
	switch e.Code {
	case cni.CodeInvalidEnv, cni.CodeDecoding, cni.CodeInvalidConfig:
		status = http.StatusBadRequest
	case cni.CodeUnknownContainer:
		status = http.StatusNotFound
	case cni.CodeTryAgainLater, cni.CodeNotAvailable:
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}
