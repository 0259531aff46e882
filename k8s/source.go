package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/moatnet/moat/policy"
)

// Sink receives the Source's changes; *policy.Compiler implements it.
type Sink interface {
	UpsertPolicy(p policy.Policy)
	DeletePolicy(kind policy.Kind, namespace, name string) bool
	UpsertNamespace(ns policy.Namespace) error
	DeleteNamespace(name string) error
	UpsertEndpoint(ep policy.Endpoint) error
	DeleteEndpoint(namespace, name string) (bool, error)
	UpsertRemoteEndpoint(ep policy.Endpoint) error
	DeleteRemoteEndpoint(namespace, name string) (bool, error)
	SetNode(n policy.Node)
	SetRemoteNodes(addrs []netip.Addr)
	SetAPIServers(addrs []netip.Addr)
}

var _ Sink = (*policy.Compiler)(nil)

// objKind says which informer an object key belongs to.
type objKind uint8

const (
	kindNamespace objKind = iota
	kindNode
	kindSlice
	kindPod
	kindPolicy
	kindConfigMap
)

// objKey is one changed object: its informer (and policy kind), namespace
// and name.
type objKey struct {
	kind      objKind
	policy    int // index into policyKinds for kindPolicy
	namespace string
	name      string
}

// policyWatch is the informer of one policy kind.
type policyWatch struct {
	informer cache.SharedIndexInformer
	reg      cache.ResourceEventHandlerRegistration
	stop     chan struct{}
}

// PolicyError is a policy object that does not parse or validate.
type PolicyError struct {
	// Kind, Namespace and Name identify the object.
	Kind      policy.Kind
	Namespace string
	Name      string
	// Err is the policy.ErrorList naming the field paths.
	Err error
	// Previous: an earlier valid version of the object stays in force.
	Previous bool
}

// Error says what is wrong and, truthfully, what is in force.
func (e *PolicyError) Error() string {
	if e.Previous {
		return e.Err.Error() + "; the previous version of this object stays in force"
	}
	return e.Err.Error() + "; nothing from this object is in force (no earlier version of it was valid)"
}

// Source watches the cluster. Create it with New, start it with Run, and
// call Drain from one goroutine when Changed fires.
type Source struct {
	cfg    Config
	log    *slog.Logger
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	filter labelFilter

	factory    informers.SharedInformerFactory
	pods       cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	nodes      cache.SharedIndexInformer
	slices     cache.SharedIndexInformer
	configMap  cache.SharedIndexInformer
	crds       cache.SharedIndexInformer
	regs       []cache.ResourceEventHandlerRegistration

	kick chan struct{}

	mu       sync.Mutex
	dirty    map[objKey]struct{}
	policies map[int]*policyWatch // by index into policyKinds; guarded by mu
	ctx      context.Context      // Run's, for the policy informers it starts
	health   *apiHealth
	// reapply: Drain re-applies every pod (ReapplyPods).
	reapply bool
	known   map[objKey]struct{} // policy objects Drain knows

	// Drain's state (one goroutine).
	appliedPods     map[objKey]appliedPod
	appliedNS       map[string]map[string]string
	node            policy.Node
	remoteNodes     []netip.Addr
	apiServers      []netip.Addr
	appliedPolicies map[objKey]string // → resourceVersion in force
	policyErrs      map[objKey]*PolicyError
	configMapData   map[string]string
	configMapRV     string
}

type appliedPod struct {
	local bool
	ep    policy.Endpoint
}

// NewForConfig builds a Source from a rest.Config.
func NewForConfig(rc *rest.Config, cfg Config, log *slog.Logger) (*Source, error) {
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = "moat-agent/" + cfg.NodeName
	}
	h := &apiHealth{}
	rc.Wrap(h.wrap)
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create dynamic client: %w", err)
	}
	return newSource(cs, dyn, cfg, log, h)
}

// New builds a Source over the given clients. Nothing talks to the API
// before Run. Staleness is seen only through the informers' watch errors;
// NewForConfig also sees every failing request.
func New(cs kubernetes.Interface, dyn dynamic.Interface, cfg Config, log *slog.Logger) (*Source, error) {
	return newSource(cs, dyn, cfg, log, &apiHealth{})
}

func newSource(cs kubernetes.Interface, dyn dynamic.Interface, cfg Config, log *slog.Logger, h *apiHealth) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Source{
		cfg: cfg, log: log, cs: cs, dyn: dyn,
		filter:          newLabelFilter(cfg.ExcludedLabels),
		kick:            make(chan struct{}, 1),
		dirty:           map[objKey]struct{}{},
		policies:        map[int]*policyWatch{},
		known:           map[objKey]struct{}{},
		health:          h,
		appliedPods:     map[objKey]appliedPod{},
		appliedNS:       map[string]map[string]string{},
		appliedPolicies: map[objKey]string{},
		policyErrs:      map[objKey]*PolicyError{},
	}
	s.factory = informers.NewSharedInformerFactory(cs, 0)
	s.pods = s.factory.Core().V1().Pods().Informer()
	s.namespaces = s.factory.Core().V1().Namespaces().Informer()
	s.nodes = s.factory.Core().V1().Nodes().Informer()
	s.slices = s.factory.InformerFor(&discoveryv1.EndpointSlice{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return discoveryinformers.NewFilteredEndpointSliceInformer(c, metav1.NamespaceDefault, resync, cache.Indexers{}, func(o *metav1.ListOptions) {
			o.LabelSelector = labels.Set{discoveryv1.LabelServiceName: "kubernetes"}.String()
		})
	})
	for _, x := range []struct {
		inf  cache.SharedIndexInformer
		tf   cache.TransformFunc
		kind objKind
	}{
		{s.pods, transformPod, kindPod},
		{s.namespaces, transformNamespace, kindNamespace},
		{s.nodes, transformNode, kindNode},
		{s.slices, transformEndpointSlice, kindSlice},
	} {
		if err := s.watch(x.inf, x.tf, x.kind, 0); err != nil {
			return nil, err
		}
	}
	if cfg.ConfigMapName != "" {
		s.configMap = s.factory.InformerFor(&corev1.ConfigMap{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
			return coreinformers.NewFilteredConfigMapInformer(c, cfg.ConfigMapNamespace, resync, cache.Indexers{}, func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.ConfigMapName).String()
			})
		})
		if err := s.watch(s.configMap, transformConfigMap, kindConfigMap, 0); err != nil {
			return nil, err
		}
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	h.onChange = func(stale bool, since time.Time, err error) {
		if stale {
			log.Warn("kubernetes API unreachable: enforcement stays as it is until it answers", "err", err)
			return
		}
		log.Info("kubernetes API answers again", "staleFor", time.Since(since).Round(time.Millisecond))
	}
	s.crds = dynamicinformer.NewFilteredDynamicInformer(dyn, crdGVR, "", 0, cache.Indexers{}, nil).Informer()
	if err := s.crds.SetTransform(transformCRD); err != nil {
		return nil, err
	}
	s.setErrorHandler(s.crds)
	reg, err := s.crds.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.crdChanged(obj) },
		UpdateFunc: func(_, obj any) { s.crdChanged(obj) },
		DeleteFunc: func(obj any) { s.crdChanged(obj) },
	})
	if err != nil {
		return nil, err
	}
	s.regs = append(s.regs, reg)
	for i, k := range policyKinds {
		if k.crd == "" { // built in: always there
			if err := s.startPolicyWatchLocked(i); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// watch sets an informer's transform and its handler, which records the
// changed object's key.
func (s *Source) watch(inf cache.SharedIndexInformer, tf cache.TransformFunc, kind objKind, pol int) error {
	if err := inf.SetTransform(tf); err != nil {
		return fmt.Errorf("set transform: %w", err)
	}
	s.setErrorHandler(inf)
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.changed(kind, pol, obj) },
		UpdateFunc: func(old, obj any) {
			if sameVersion(old, obj) {
				s.fresh() // a relist: the API answers, nothing changed
				return
			}
			s.changed(kind, pol, obj)
		},
		DeleteFunc: func(obj any) { s.changed(kind, pol, obj) },
	})
	if err != nil {
		return fmt.Errorf("add event handler: %w", err)
	}
	if pol == 0 && kind != kindPolicy {
		s.regs = append(s.regs, reg)
	}
	return nil
}

func sameVersion(old, obj any) bool {
	a, errA := metaOf(old)
	b, errB := metaOf(obj)
	return errA == nil && errB == nil && a.GetResourceVersion() != "" && a.GetResourceVersion() == b.GetResourceVersion()
}

func metaOf(obj any) (metav1.Object, error) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u, nil
	}
	if o, ok := obj.(metav1.Object); ok {
		return o, nil
	}
	return nil, fmt.Errorf("%T is not an object", obj)
}

func (s *Source) changed(kind objKind, pol int, obj any) {
	m, err := metaOf(obj)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.dirty[objKey{kind: kind, policy: pol, namespace: m.GetNamespace(), name: m.GetName()}] = struct{}{}
	s.mu.Unlock()
	s.wake()
}

// fresh is called when a relist delivers an unchanged object.
func (s *Source) fresh() {}

func (s *Source) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// ReapplyPods makes the next Drain delete and re-apply every pod in
// force, so that each takes its label set's current identity number (the
// allocator renumbered one). Safe from any goroutine.
func (s *Source) ReapplyPods() {
	s.mu.Lock()
	s.reapply = true
	s.mu.Unlock()
	s.wake()
}

// Changed fires when Drain has something to do.
func (s *Source) Changed() <-chan struct{} { return s.kick }

// Run starts the informers and blocks until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	for _, w := range s.policies {
		s.runPolicyWatchLocked(w)
	}
	s.mu.Unlock()
	s.factory.Start(ctx.Done())
	go s.crds.RunWithContext(ctx)
	<-ctx.Done()
	s.factory.Shutdown()
	s.mu.Lock()
	for i, w := range s.policies {
		close(w.stop)
		delete(s.policies, i)
	}
	s.mu.Unlock()
	return nil
}

// Synced reports whether every informer has delivered its initial list,
// including the policy kinds whose CRDs exist: until then the Source's
// view is partial and must not replace what is enforced.
func (s *Source) Synced() bool {
	for _, r := range s.regs {
		if !r.HasSynced() {
			return false
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return false
	}
	for _, w := range s.policies {
		if !w.reg.HasSynced() {
			return false
		}
	}
	return true
}

// WaitForCacheSync waits until Synced or ctx ends; it reports Synced.
func (s *Source) WaitForCacheSync(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !s.Synced() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// crdChanged starts or stops the informer of the policy kind a CRD serves.
func (s *Source) crdChanged(obj any) {
	s.fresh()
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	idx := -1
	for i, k := range policyKinds {
		if k.crd == u.GetName() {
			idx = i
		}
	}
	if idx < 0 {
		return
	}
	// Is it established and serving our version, and still there?
	want := false
	if cur, exists, _ := s.crds.GetStore().GetByKey(u.GetName()); exists {
		cu := cur.(*unstructured.Unstructured)
		est, _ := cu.Object["established"].(bool)
		served, _ := cu.Object["served"].([]any)
		want = est && slices.Contains(served, any(policyKinds[idx].gvr.Version))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.policies[idx]
	switch {
	case want && w == nil:
		if err := s.startPolicyWatchLocked(idx); err != nil {
			s.log.Error("start policy informer", "resource", policyKinds[idx].gvr.String(), "err", err)
			return
		}
		s.log.Info("watching policies", "resource", policyKinds[idx].gvr.String())
	case !want && w != nil:
		close(w.stop)
		delete(s.policies, idx)
		// Every object of the kind goes: Drain finds no informer for them.
		for k := range s.appliedKeysLocked(idx) {
			s.dirty[k] = struct{}{}
		}
		s.log.Info("stopped watching policies: their CRD is gone", "resource", policyKinds[idx].gvr.String())
		go s.wake()
	}
}

// appliedKeysLocked lists the keys Drain knows of policy kind idx: those
// in force and those with errors.
func (s *Source) appliedKeysLocked(idx int) map[objKey]struct{} {
	out := map[objKey]struct{}{}
	for k := range s.known {
		if k.policy == idx {
			out[k] = struct{}{}
		}
	}
	return out
}

func (s *Source) startPolicyWatchLocked(idx int) error {
	k := policyKinds[idx]
	inf := dynamicinformer.NewFilteredDynamicInformer(s.dyn, k.gvr, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
	if err := inf.SetTransform(transformPolicy); err != nil {
		return err
	}
	s.setErrorHandler(inf)
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.changed(kindPolicy, idx, obj) },
		UpdateFunc: func(old, obj any) {
			if sameVersion(old, obj) {
				s.fresh()
				return
			}
			s.changed(kindPolicy, idx, obj)
		},
		DeleteFunc: func(obj any) { s.changed(kindPolicy, idx, obj) },
	})
	if err != nil {
		return err
	}
	w := &policyWatch{informer: inf, reg: reg, stop: make(chan struct{})}
	s.policies[idx] = w
	if s.ctx != nil {
		s.runPolicyWatchLocked(w)
	}
	return nil
}

// runPolicyWatchLocked runs a policy informer until Run's context ends or
// its CRD goes.
func (s *Source) runPolicyWatchLocked(w *policyWatch) {
	ctx, cancel := context.WithCancel(s.ctx)
	go func() {
		select {
		case <-w.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	go w.informer.RunWithContext(ctx)
}

// setErrorHandler marks the sources stale when a list or watch fails
// (the transport marks them fresh again, see health.go).
func (s *Source) setErrorHandler(inf cache.SharedIndexInformer) {
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		var status apierrors.APIStatus
		if !errors.As(err, &status) { // an answer (403, 410...) is no outage
			s.health.record(false, err)
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
}

// StaleSince returns since when the API has been unreachable (zero when
// it answers).
func (s *Source) StaleSince() time.Time { return s.health.staleSince() }

// sortKeys orders changed objects: by kind (namespaces first), policy
// kind, namespace and name.
func sortKeys(keys []objKey) {
	slices.SortFunc(keys, func(a, b objKey) int {
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		if a.policy != b.policy {
			return a.policy - b.policy
		}
		if a.namespace != b.namespace {
			if a.namespace < b.namespace {
				return -1
			}
			return 1
		}
		if a.name < b.name {
			return -1
		} else if a.name > b.name {
			return 1
		}
		return 0
	})
}

// Report is what one Drain did.
type Report struct {
	// Changed: something was applied to the Sink.
	Changed bool
	// ConfigChanged: the ConfigMap's data changed (ConfigMap returns it).
	ConfigChanged bool
	// Errors are the Sink's errors while applying (identity allocation).
	Errors []error
}

// Drain applies every recorded change to sink: namespaces first (so that
// pods get their labels at once), then nodes, the apiserver's addresses,
// pods and policies. Objects whose content did not change are skipped.
func (s *Source) Drain(sink Sink) Report {
	s.mu.Lock()
	keys := make([]objKey, 0, len(s.dirty))
	for k := range s.dirty {
		keys = append(keys, k)
	}
	clear(s.dirty)
	reapply := s.reapply
	s.reapply = false
	pols := make(map[int]*policyWatch, len(s.policies))
	for i, w := range s.policies {
		pols[i] = w
	}
	s.mu.Unlock()
	sortKeys(keys)
	var r Report
	if reapply {
		for k, ap := range s.appliedPods {
			var err error
			if ap.local {
				_, err = sink.DeleteEndpoint(k.namespace, k.name)
			} else {
				_, err = sink.DeleteRemoteEndpoint(k.namespace, k.name)
			}
			r.merge(true, err)
			delete(s.appliedPods, k)
			keys = append(keys, k)
		}
		sortKeys(keys)
	}
	nodesDirty, slicesDirty := false, false
	for _, k := range keys {
		switch k.kind {
		case kindNamespace:
			r.merge(s.applyNamespace(sink, k))
		case kindNode:
			nodesDirty = true
		case kindSlice:
			slicesDirty = true
		case kindPod:
			if nodesDirty {
				r.Changed = s.applyNodes(sink) || r.Changed
				nodesDirty = false
			}
			r.merge(s.applyPod(sink, k))
		case kindPolicy:
			r.merge(s.applyPolicy(sink, k, pols[k.policy]))
		case kindConfigMap:
			r.ConfigChanged = s.applyConfigMap(k) || r.ConfigChanged
		}
	}
	if nodesDirty {
		r.Changed = s.applyNodes(sink) || r.Changed
	}
	if slicesDirty {
		r.Changed = s.applyAPIServers(sink) || r.Changed
	}
	return r
}

func (r *Report) merge(changed bool, err error) {
	r.Changed = r.Changed || changed
	if err != nil {
		r.Errors = append(r.Errors, err)
	}
}

func storeKey(k objKey) string {
	if k.namespace == "" {
		return k.name
	}
	return k.namespace + "/" + k.name
}

func (s *Source) applyNamespace(sink Sink, k objKey) (bool, error) {
	obj, exists, _ := s.namespaces.GetStore().GetByKey(storeKey(k))
	if !exists {
		if _, ok := s.appliedNS[k.name]; !ok {
			return false, nil
		}
		delete(s.appliedNS, k.name)
		return true, sink.DeleteNamespace(k.name)
	}
	ls := obj.(*corev1.Namespace).Labels // namespace labels are all kept
	if old, ok := s.appliedNS[k.name]; ok && reflect.DeepEqual(old, ls) {
		return false, nil
	}
	s.appliedNS[k.name] = ls
	return true, sink.UpsertNamespace(policy.Namespace{Name: k.name, Labels: ls})
}

// podEndpoint converts a pod that has an address and may hold one (not on
// the host's network, not finished) into an endpoint.
func (s *Source) podEndpoint(p *corev1.Pod) (policy.Endpoint, bool) {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return policy.Endpoint{}, false
	}
	ep := policy.Endpoint{Name: p.Name, Namespace: p.Namespace, Labels: s.filter.apply(p.Labels)}
	ips := []string{p.Status.PodIP}
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if a.Is4() && !ep.IPv4.IsValid() {
			ep.IPv4 = a
		} else if a.Is6() && !ep.IPv6.IsValid() {
			ep.IPv6 = a
		}
	}
	ep.Interface = p.Annotations[AnnotationInterface]
	if s.cfg.Attachments != nil && p.Spec.NodeName == s.cfg.NodeName {
		// The CNI's attachment, not the status, says where a local pod is.
		att, ok := s.cfg.Attachments.Attachment(p.Namespace, p.Name, string(p.UID))
		if !ok {
			return policy.Endpoint{}, false
		}
		ep.IPv4, ep.IPv6, ep.Interface = att.IPv4, att.IPv6, att.HostIfname
	}
	if !ep.IPv4.IsValid() && !ep.IPv6.IsValid() {
		return policy.Endpoint{}, false
	}
	return ep, true
}

func (s *Source) applyPod(sink Sink, k objKey) (bool, error) {
	var (
		ep           policy.Endpoint
		want         bool
		local        bool
		applied, had = s.appliedPods[k]
	)
	if obj, exists, _ := s.pods.GetStore().GetByKey(storeKey(k)); exists {
		p := obj.(*corev1.Pod)
		ep, want = s.podEndpoint(p)
		local = p.Spec.NodeName == s.cfg.NodeName
	}
	if had && want && applied.local == local && reflect.DeepEqual(applied.ep, ep) {
		return false, nil
	}
	var errs []error
	if had && (!want || applied.local != local) {
		var err error
		if applied.local {
			_, err = sink.DeleteEndpoint(k.namespace, k.name)
		} else {
			_, err = sink.DeleteRemoteEndpoint(k.namespace, k.name)
		}
		errs = append(errs, err)
		delete(s.appliedPods, k)
	}
	if want {
		var err error
		if local {
			err = sink.UpsertEndpoint(ep)
		} else {
			err = sink.UpsertRemoteEndpoint(ep)
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			s.appliedPods[k] = appliedPod{local: local, ep: ep}
		}
	}
	return true, errors.Join(errs...)
}

// nodeAddrs returns a node's InternalIP addresses.
func nodeAddrs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// applyNodes recomputes this node's and the other nodes' addresses.
func (s *Source) applyNodes(sink Sink) bool {
	self := policy.Node{Name: s.cfg.NodeName}
	var remote []netip.Addr
	for _, obj := range s.nodes.GetStore().List() {
		n := obj.(*corev1.Node)
		if n.Name == s.cfg.NodeName {
			self.Addresses = nodeAddrs(n)
			continue
		}
		remote = append(remote, nodeAddrs(n)...)
	}
	sortAddrs(self.Addresses)
	sortAddrs(remote)
	remote = slices.Compact(remote)
	changed := false
	if !slices.Equal(self.Addresses, s.node.Addresses) || s.node.Name != self.Name {
		s.node = self
		sink.SetNode(self)
		changed = true
	}
	if !slices.Equal(remote, s.remoteNodes) {
		s.remoteNodes = remote
		sink.SetRemoteNodes(remote)
		changed = true
	}
	return changed
}

// applyAPIServers recomputes the kube-apiserver's addresses from the
// EndpointSlices of default/kubernetes.
func (s *Source) applyAPIServers(sink Sink) bool {
	var addrs []netip.Addr
	for _, obj := range s.slices.GetStore().List() {
		es := obj.(*discoveryv1.EndpointSlice)
		for _, e := range es.Endpoints {
			for _, a := range e.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					addrs = append(addrs, ip.Unmap())
				}
			}
		}
	}
	sortAddrs(addrs)
	addrs = slices.Compact(addrs)
	if slices.Equal(addrs, s.apiServers) {
		return false
	}
	s.apiServers = addrs
	sink.SetAPIServers(addrs)
	return true
}

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) }) }

// objectSource names a policy object in errors: "Kind.group ns/name".
func objectSource(k objKey) string {
	pk := policyKinds[k.policy]
	kind := string(pk.kind)
	if pk.kind == policy.KindKubernetesNetworkPolicy {
		kind = "NetworkPolicy"
	}
	ref := k.name
	if k.namespace != "" {
		ref = k.namespace + "/" + k.name
	}
	return kind + "." + pk.gvr.Group + " " + ref
}

func (s *Source) applyPolicy(sink Sink, k objKey, w *policyWatch) (bool, error) {
	pk := policyKinds[k.policy]
	var obj any
	exists := false
	if w != nil {
		obj, exists, _ = w.informer.GetStore().GetByKey(storeKey(k))
	}
	rv, inForce := s.appliedPolicies[k]
	if !exists {
		delete(s.policyErrs, k)
		s.setKnown(k, false)
		if !inForce {
			return false, nil
		}
		delete(s.appliedPolicies, k)
		sink.DeletePolicy(pk.kind, k.namespace, k.name)
		return true, nil
	}
	u := obj.(*unstructured.Unstructured)
	if inForce && rv == u.GetResourceVersion() {
		return false, nil
	}
	s.setKnown(k, true)
	p, err := policy.ParseObject(objectSource(k), u.Object)
	if err != nil {
		s.policyErrs[k] = &PolicyError{Kind: pk.kind, Namespace: k.namespace, Name: k.name, Err: err, Previous: inForce}
		return false, nil
	}
	delete(s.policyErrs, k)
	s.appliedPolicies[k] = u.GetResourceVersion()
	sink.UpsertPolicy(*p)
	return true, nil
}

func (s *Source) applyConfigMap(k objKey) bool {
	if s.configMap == nil {
		return false
	}
	obj, exists, _ := s.configMap.GetStore().GetByKey(storeKey(k))
	if !exists {
		changed := s.configMapRV != ""
		s.configMapData, s.configMapRV = nil, ""
		return changed
	}
	cm := obj.(*corev1.ConfigMap)
	if cm.ResourceVersion == s.configMapRV {
		return false
	}
	s.configMapData, s.configMapRV = cm.Data, cm.ResourceVersion
	return true
}

// ConfigMap returns the agent ConfigMap's data as Drain last saw it and
// whether it exists.
func (s *Source) ConfigMap() (map[string]string, bool) {
	return s.configMapData, s.configMapRV != ""
}

// PolicyErrors returns the policy objects with errors, sorted (Drain's
// view; call from Drain's goroutine).
func (s *Source) PolicyErrors() []*PolicyError {
	out := make([]*PolicyError, 0, len(s.policyErrs))
	for _, e := range s.policyErrs {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *PolicyError) int {
		if a.Kind != b.Kind {
			if a.Kind < b.Kind {
				return -1
			}
			return 1
		}
		if a.Namespace != b.Namespace {
			if a.Namespace < b.Namespace {
				return -1
			}
			return 1
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// PolicyCount returns the number of policy objects in force.
func (s *Source) PolicyCount() int { return len(s.appliedPolicies) }

// LocalEndpoints returns the local pods in force as endpoints (Drain's
// view).
func (s *Source) LocalEndpoints() []policy.Endpoint {
	var out []policy.Endpoint
	for _, a := range s.appliedPods {
		if a.local {
			out = append(out, a.ep)
		}
	}
	return out
}

// RemoteEndpointCount returns the number of remote pods in force.
func (s *Source) RemoteEndpointCount() int {
	n := 0
	for _, a := range s.appliedPods {
		if !a.local {
			n++
		}
	}
	return n
}

// setKnown records, for crdChanged, whether Drain knows a policy object
// (in force or with errors).
func (s *Source) setKnown(k objKey, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if known {
		s.known[k] = struct{}{}
	} else {
		delete(s.known, k)
	}
}
