package policy

import (
	"github.com/moatnet/moat/api/v1alpha1"
	"net/netip"
	"sort"
)

// EndpointsFile is the endpoints file of standalone mode: the node, the
// namespaces (with labels, for namespaceSelector) and the local endpoints
// the agent creates or adopts. Format (YAML or JSON, one document):
//
//	node:                      # optional
//	  name: node-1
//	  addresses: [192.0.2.1]   # optional, the node's own addresses
//	namespaces:                # optional
//	- name: prod
//	  labels: {team: a}
//	endpoints:
//	- name: deathstar          # required, unique per namespace
//	  namespace: default       # optional, "default" when unset
//	  labels: {org: empire, class: deathstar}
//	  ipv4: 10.200.0.10        # required
//	  ipv6: "fd00:200::10"     # optional
//	  interface: ""            # optional: existing host-side veth to adopt
//
// Unknown fields are errors. Every namespace gets the label
// kubernetes.io/metadata.name=<name>, as Kubernetes does, and a namespace
// that endpoints use but the file does not list is added with just that
// label.
type EndpointsFile struct {
	Node       Node        `json:"node"`
	Namespaces []Namespace `json:"namespaces,omitempty"`
	Endpoints  []Endpoint  `json:"endpoints"`
}

// LabelNamespaceName is the label Kubernetes puts on every namespace.
const LabelNamespaceName = "kubernetes.io/metadata.name"

// endpointsFileDoc is the on-disk shape (pointers tell unset from empty).
type endpointsFileDoc struct {
	APIVersion string      `json:"apiVersion,omitempty"`
	Kind       string      `json:"kind,omitempty"`
	Node       *Node       `json:"node,omitempty"`
	Namespaces []Namespace `json:"namespaces,omitempty"`
	Endpoints  []Endpoint  `json:"endpoints"`
}

// KindEndpoints is the optional kind of an endpoints file (apiVersion
// moat.io/v1alpha1). With it, the file can sit in a policy directory: the
// policy parser recognises and skips it.
const KindEndpoints = "Endpoints"

// ParseEndpoints parses and validates an endpoints file's content; file
// names it in errors. The error, when not nil, is an ErrorList.
func ParseEndpoints(file string, data []byte) (*EndpointsFile, error) {
	errs := &docErrors{file: file}
	docs, err := splitDocuments(data)
	if err != nil {
		errs.add("", "invalid YAML: %v", err)
		return nil, errs.list
	}
	var raw *rawDoc
	for i := range docs {
		d := &docs[i]
		v, err := toGeneric(*d)
		if err == nil && v == nil {
			continue
		}
		if raw != nil {
			errs.add("", "an endpoints file holds one document")
			return nil, errs.list
		}
		raw = d
	}
	var doc endpointsFileDoc
	if raw != nil {
		v, err := toGeneric(*raw)
		if err != nil {
			errs.add("", "invalid YAML: %v", err)
			return nil, errs.list
		}
		if !decodeStrict(errs, "", v, &doc) {
			return nil, errs.list
		}
	}
	if doc.APIVersion != "" || doc.Kind != "" {
		if doc.APIVersion != v1alpha1.APIVersion {
			errs.add("apiVersion", "%q: an endpoints file is %s", doc.APIVersion, v1alpha1.APIVersion)
		}
		if doc.Kind != KindEndpoints {
			errs.add("kind", "%q: an endpoints file is kind %s", doc.Kind, KindEndpoints)
		}
	}
	out := &EndpointsFile{Namespaces: doc.Namespaces, Endpoints: doc.Endpoints}
	if doc.Node != nil {
		out.Node = *doc.Node
	}
	validateEndpointsFile(errs, out)
	return out, errs.list.Err()
}

// validateEndpointsFile checks and completes (defaults) f.
func validateEndpointsFile(errs *docErrors, f *EndpointsFile) {
	nsIndex := map[string]int{}
	for i := range f.Namespaces {
		ns := &f.Namespaces[i]
		p := indexPath("namespaces", i)
		if ns.Name == "" {
			errs.add(joinPath(p, "name"), "required")
			continue
		}
		if _, dup := nsIndex[ns.Name]; dup {
			errs.add(joinPath(p, "name"), "duplicate namespace %q", ns.Name)
			continue
		}
		nsIndex[ns.Name] = i
		checkLabelMap(errs, joinPath(p, "labels"), ns.Labels)
	}
	type epKey struct{ ns, name string }
	names := map[epKey]int{}
	addrs := map[netip.Addr]string{}
	for i := range f.Endpoints {
		ep := &f.Endpoints[i]
		p := indexPath("endpoints", i)
		if ep.Namespace == "" {
			ep.Namespace = "default"
		}
		if ep.Name == "" {
			errs.add(joinPath(p, "name"), "required")
		} else if first, dup := names[epKey{ep.Namespace, ep.Name}]; dup {
			errs.add(joinPath(p, "name"), "duplicate endpoint %s/%s (also endpoints[%d])", ep.Namespace, ep.Name, first)
		} else {
			names[epKey{ep.Namespace, ep.Name}] = i
		}
		checkLabelMap(errs, joinPath(p, "labels"), ep.Labels)
		switch {
		case !ep.IPv4.IsValid():
			errs.add(joinPath(p, "ipv4"), "required")
		case !ep.IPv4.Is4():
			errs.add(joinPath(p, "ipv4"), "%s is not an IPv4 address", ep.IPv4)
		}
		if ep.IPv6.IsValid() && (!ep.IPv6.Is6() || ep.IPv6.Is4In6()) {
			errs.add(joinPath(p, "ipv6"), "%s is not an IPv6 address", ep.IPv6)
		}
		for _, a := range []struct {
			field string
			addr  netip.Addr
		}{{"ipv4", ep.IPv4}, {"ipv6", ep.IPv6}} {
			if !a.addr.IsValid() {
				continue
			}
			if other, dup := addrs[a.addr]; dup {
				errs.add(joinPath(p, a.field), "address %s already used by %s", a.addr, other)
				continue
			}
			addrs[a.addr] = p
		}
		if _, ok := nsIndex[ep.Namespace]; !ok {
			nsIndex[ep.Namespace] = len(f.Namespaces)
			f.Namespaces = append(f.Namespaces, Namespace{Name: ep.Namespace})
		}
	}
	for i := range f.Namespaces {
		ns := &f.Namespaces[i]
		if _, ok := ns.Labels[LabelNamespaceName]; !ok && ns.Name != "" {
			labels := make(map[string]string, len(ns.Labels)+1)
			for k, v := range ns.Labels {
				labels[k] = v
			}
			labels[LabelNamespaceName] = ns.Name
			ns.Labels = labels
		}
	}
	sort.SliceStable(f.Namespaces, func(i, j int) bool { return f.Namespaces[i].Name < f.Namespaces[j].Name })
}

// checkLabelMap checks label keys and values of an endpoint or namespace.
func checkLabelMap(errs *docErrors, path string, labels map[string]string) {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := mapKeyPath(path, k)
		if _, _, ok := checkLabelKey(errs, p, k); !ok {
			continue
		}
		if !validLabelValue(labels[k]) {
			errs.add(p, "invalid label value %q", labels[k])
		}
	}
}

// NamespaceOf returns the namespace called name, or nil.
func (f *EndpointsFile) NamespaceOf(name string) *Namespace {
	for i := range f.Namespaces {
		if f.Namespaces[i].Name == name {
			return &f.Namespaces[i]
		}
	}
	return nil
}
