package crdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/api/ciliumv2"
	"github.com/moatnet/moat/api/v1alpha1"
	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/policy"
)

// root is the repository root, relative to this package.
const root = "../.."

// kind is one policy resource kind the CRDs define.
type kind struct {
	apiVersion, kind string
	namespaced       bool
}

var (
	moatNP   = kind{v1alpha1.APIVersion, v1alpha1.KindNetworkPolicy, true}
	moatCNP  = kind{v1alpha1.APIVersion, v1alpha1.KindClusterwideNetworkPolicy, false}
	cilCNP   = kind{v1alpha1.CiliumAPIVersion, v1alpha1.KindCiliumNetworkPolicy, true}
	cilCCNP  = kind{v1alpha1.CiliumAPIVersion, v1alpha1.KindCiliumClusterwideNetworkPolicy, false}
	allKinds = []kind{moatNP, moatCNP, cilCNP, cilCCNP}
)

// startCluster starts a control plane with every CRD installed and
// Established.
func startCluster(t *testing.T) *k8stest.Cluster {
	t.Helper()
	c := k8stest.Start(t)
	c.ApplyCRDs(t, filepath.Join(root, "charts/moat/crds"), filepath.Join(root, "charts/moat/extra-crds/cilium"))
	return c
}

// splitDocs splits a multi-document YAML stream; empty and comment-only
// documents are dropped.
func splitDocs(data []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		keep := false
		for _, l := range strings.Split(d, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				keep = true
			}
		}
		if keep {
			out = append(out, []byte(d))
		}
	}
	return out
}

// decode turns one YAML document into a generic object.
func decode(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		t.Fatalf("decode %s: %v", doc, err)
	}
	return m
}

// as returns a copy of obj as kind k (cluster-scoped kinds lose
// metadata.namespace).
func as(obj map[string]any, k kind) map[string]any {
	var c map[string]any
	b, _ := json.Marshal(obj)
	_ = json.Unmarshal(b, &c)
	c["apiVersion"], c["kind"] = k.apiVersion, k.kind
	if md, ok := c["metadata"].(map[string]any); ok && !k.namespaced {
		delete(md, "namespace")
	}
	return c
}

// ciliumLike reports whether obj is one of the four policy kinds the CRDs
// define (and not, e.g., a networking.k8s.io NetworkPolicy).
func ciliumLike(obj map[string]any) bool {
	for _, k := range allKinds {
		if obj["apiVersion"] == k.apiVersion && obj["kind"] == k.kind {
			return true
		}
	}
	return false
}

// moatValidate runs moat's own validation (what `moat policy validate`
// runs) on one object.
func moatValidate(obj map[string]any) error {
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	_, err = policy.ParseBytes("doc.json", b)
	return err
}

// apply runs `kubectl apply --server-side --validate=strict` on objs (one
// v1 List) and returns kubectl's output. kubectl's strict validation
// checks the published OpenAPI schema on the client first (required
// fields, unknown fields), then the apiserver checks everything.
func apply(t *testing.T, c *k8stest.Cluster, objs ...map[string]any) (string, error) {
	t.Helper()
	return applyMode(t, c, "strict", objs...)
}

// applyServer is apply without kubectl's client-side validation
// (--validate=false), so that what is checked is the apiserver alone: a
// user with an older kubectl, or a controller, gets the same answer.
func applyServer(t *testing.T, c *k8stest.Cluster, objs ...map[string]any) (string, error) {
	t.Helper()
	return applyMode(t, c, "false", objs...)
}

func applyMode(t *testing.T, c *k8stest.Cluster, validate string, objs ...map[string]any) (string, error) {
	t.Helper()
	items := make([]any, len(objs))
	for i, o := range objs {
		items[i] = o
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "objs-*.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return c.Kubectl("apply", "--server-side", "--field-manager=crdtest", "--validate="+validate, "-f", f.Name())
}

// applyBatch applies objs in one kubectl run (continuing past errors) and
// splits kubectl's output by object: accepted holds the names kubectl
// reports as applied, out the output lines that name each object.
func applyBatch(t *testing.T, c *k8stest.Cluster, validate string, objs []map[string]any) (accepted map[string]bool, out map[string]string) {
	t.Helper()
	all, _ := applyMode(t, c, validate, objs...)
	accepted, out = map[string]bool{}, map[string]string{}
	for _, o := range objs {
		name := o["metadata"].(map[string]any)["name"].(string)
		for _, l := range strings.Split(all, "\n") {
			if strings.HasSuffix(l, "/"+name+" serverside-applied") || strings.HasSuffix(l, "/"+name+" serverside-applied (server dry run)") {
				accepted[name] = true
			}
			if strings.Contains(l, `"`+name+`"`) || strings.Contains(l, "/"+name+" ") || strings.Contains(l, "/"+name+";") || strings.Contains(l, "("+name+";") {
				out[name] += l + "\n"
			}
		}
		if len(objs) == 1 && out[name] == "" {
			// e.g. "no matches for kind": kubectl names the file, not
			// the object
			out[name] = all
		}
		if !accepted[name] && out[name] == "" {
			t.Errorf("kubectl output does not mention %s (%d bytes of output)", name, len(all))
		}
	}
	return accepted, out
}

// ensureNamespaces creates the namespaces objs live in.
func ensureNamespaces(t *testing.T, c *k8stest.Cluster, objs []map[string]any) {
	t.Helper()
	seen := map[string]bool{"default": true}
	for _, o := range objs {
		md, _ := o["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		if ns == "" || seen[ns] {
			continue
		}
		seen[ns] = true
		c.MustKubectl(t, "create", "namespace", ns)
	}
}

// corpus returns every valid policy document of the repository that is of
// a kind the CRDs define: examples/*/policies, the valid documents of
// policy/testdata/invalid (files mix valid and invalid documents) and this
// package's testdata/valid.yaml. Each is checked to pass moat's validation
// (the positive control: a document moat rejects is not in the corpus).
func corpus(t *testing.T) (valid []map[string]any, invalid []map[string]any) {
	t.Helper()
	var files []string
	for _, g := range []string{"examples/*/policies/*.yaml", "policy/testdata/*/*.yaml", "charts/crdtest/testdata/*.yaml"} {
		m, err := filepath.Glob(filepath.Join(root, g))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fileInvalid := strings.Contains(f, "testdata/invalid")
		for i, doc := range splitDocs(data) {
			obj := decode(t, doc)
			if obj == nil {
				continue
			}
			err := moatValidate(obj)
			switch {
			case err == nil && ciliumLike(obj):
				valid = append(valid, obj)
			case err == nil:
				// a networking.k8s.io NetworkPolicy: not ours to install
			case fileInvalid:
				invalid = append(invalid, obj)
			default:
				t.Fatalf("%s doc %d: moat rejects a document of the valid corpus: %v", f, i+1, err)
			}
		}
	}
	if len(valid) < 10 || len(invalid) < 5 {
		t.Fatalf("corpus too small: %d valid, %d invalid documents", len(valid), len(invalid))
	}
	return valid, invalid
}

// named returns a policy of kind k named name, with body (YAML: spec or
// specs) below its metadata.
func named(t *testing.T, k kind, name, body string) map[string]any {
	t.Helper()
	ns := ""
	if k.namespaced {
		ns = "\n  namespace: default"
	}
	return decode(t, []byte(fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata:\n  name: %s%s\n%s", k.apiVersion, k.kind, name, ns, body)))
}

// TestCRDs runs every check against one control plane.
func TestCRDs(t *testing.T) {
	c := startCluster(t)

	t.Run("Established", func(t *testing.T) {
		out := c.MustKubectl(t, "get", "crd", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Established\")].status} {end}")
		for _, n := range []string{"networkpolicies.moat.io", "clusterwidenetworkpolicies.moat.io", "identities.moat.io", "ciliumnetworkpolicies.cilium.io", "ciliumclusterwidenetworkpolicies.cilium.io"} {
			if !strings.Contains(out, n+"=True") {
				t.Errorf("CRD %s not Established: %s", n, out)
			}
		}
	})
	t.Run("ValidCorpus", func(t *testing.T) { testValidCorpus(t, c) })
	t.Run("RejectedAtApply", func(t *testing.T) { testRejectedAtApply(t, c) })
	t.Run("LeftToStatus", func(t *testing.T) { testLeftToStatus(t, c) })
	t.Run("InvalidTestdata", func(t *testing.T) { testInvalidTestdata(t, c) })
	t.Run("Limits", func(t *testing.T) { testLimits(t, c) })
	t.Run("Identity", func(t *testing.T) { testIdentity(t, c) })
	t.Run("StatusAndPrinting", func(t *testing.T) { testStatusAndPrinting(t, c) })
	t.Run("TypedClient", func(t *testing.T) { testTypedClient(t, c) })
}

// testValidCorpus applies every valid document as each of the four kinds,
// then reads them back and checks that moat still accepts what the
// apiserver stored.
func testValidCorpus(t *testing.T, c *k8stest.Cluster) {
	valid, _ := corpus(t)
	ensureNamespaces(t, c, valid)
	for _, k := range allKinds {
		objs := make([]map[string]any, len(valid))
		for i, o := range valid {
			objs[i] = as(o, k)
		}
		if out, err := apply(t, c, objs...); err != nil {
			t.Errorf("%s: kubectl apply of %d valid policies failed: %v\n%s", k.kind, len(objs), err, out)
			continue
		}
		out := c.MustKubectl(t, "get", strings.ToLower(k.kind)+"."+strings.SplitN(k.apiVersion, "/", 2)[0], "-A", "-o", "json")
		var list struct {
			Items []map[string]any `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("%s: decode list: %v", k.kind, err)
		}
		if len(list.Items) != len(valid) {
			t.Errorf("%s: %d objects stored, want %d", k.kind, len(list.Items), len(valid))
		}
		for _, o := range list.Items {
			if err := moatValidate(o); err != nil {
				t.Errorf("%s: moat rejects the stored object: %v", k.kind, err)
			}
		}
	}
	t.Logf("%d valid documents accepted as each of %d kinds", len(valid), len(allKinds))
}

// invalidCase is a policy the schema rejects: moat rejects it too, and the
// apiserver's error names the field (want holds substrings of kubectl's
// output).
type invalidCase struct {
	name string
	body string
	want []string
}

var rejectedAtApply = []invalidCase{
	{"port-above-range", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"70000\"}]}]}]",
		[]string{`spec.ingress[0].toPorts[0].ports[0].port: Invalid value: "70000"`, "should match"}},
	{"port-int-above-range", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 65536}]}]}]",
		[]string{"spec.ingress[0].toPorts[0].ports[0].port", "port must be in range 0-65535"}},
	{"port-negative", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"-1\"}]}]}]",
		[]string{`spec.ingress[0].toPorts[0].ports[0].port: Invalid value: "-1"`}},
	{"port-named", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: http}]}]}]",
		[]string{`spec.egress[0].toPorts[0].ports[0].port: Invalid value: "http"`}},
	{"endport-below-port", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"9000\", endPort: 8000, protocol: TCP}]}]}]",
		[]string{"spec.egress[0].toPorts[0].ports[0].endPort", "toPorts[].ports[].endPort must not be below port"}},
	{"endport-below-int-port", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: 9000, endPort: 8999}]}]}]",
		[]string{"spec.egress[0].toPorts[0].ports[0].endPort", "toPorts[].ports[].endPort must not be below port"}},
	{"endport-without-port", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{endPort: 8000}]}]}]",
		[]string{"spec.egress[0].toPorts[0].ports[0].endPort", "endPort requires a non-zero port"}},
	{"endport-above-range", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"1\", endPort: 65536}]}]}]",
		[]string{"spec.egress[0].toPorts[0].ports[0].endPort", "65535"}},
	{"protocol-icmp", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"1\", protocol: ICMP}]}]}]",
		[]string{`spec.egress[0].toPorts[0].ports[0].protocol: Unsupported value: "ICMP"`}},
	{"protocol-lowercase", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"1\", protocol: tcp}]}]}]",
		[]string{`spec.egress[0].toPorts[0].ports[0].protocol: Unsupported value: "tcp"`}},
	{"cidr-garbage", "spec:\n  endpointSelector: {}\n  ingress: [{fromCIDR: [\"10.0.0.0/8\", \"not-a-cidr\"]}]",
		[]string{`spec.ingress[0].fromCIDR[1]: Invalid value: "not-a-cidr"`}},
	{"cidr-octet", "spec:\n  endpointSelector: {}\n  egressDeny: [{toCIDR: [\"10.0.0.256/32\"]}]",
		[]string{`spec.egressDeny[0].toCIDR[0]: Invalid value: "10.0.0.256/32"`}},
	{"cidr-prefix-length", "spec:\n  endpointSelector: {}\n  egress: [{toCIDR: [\"10.0.0.0/33\"]}]",
		[]string{`spec.egress[0].toCIDR[0]: Invalid value: "10.0.0.0/33"`}},
	{"cidrset-cidr", "spec:\n  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: \"10.0.0.0/8/8\"}]}]",
		[]string{`spec.egress[0].toCIDRSet[0].cidr: Invalid value: "10.0.0.0/8/8"`}},
	{"cidrset-except", "spec:\n  endpointSelector: {}\n  ingress: [{fromCIDRSet: [{cidr: 10.0.0.0/8, except: [\"10.1.0.0/\"]}]}]",
		[]string{`spec.ingress[0].fromCIDRSet[0].except[0]: Invalid value: "10.1.0.0/"`}},
	{"cidrset-missing-cidr", "spec:\n  endpointSelector: {}\n  ingress: [{fromCIDRSet: [{except: [\"10.1.0.0/16\"]}]}]",
		[]string{"spec.ingress[0].fromCIDRSet[0].cidr: Required value"}},
	{"http-in-ingress-deny", "spec:\n  endpointSelector: {}\n  ingressDeny: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]}]",
		[]string{"spec.ingressDeny", "ingressDeny[].toPorts[].rules: L7 rules are not allowed in deny rules"}},
	{"dns-in-egress-deny", "spec:\n  endpointSelector: {}\n  egressDeny: [{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.com}]}}]}]",
		[]string{"spec.egressDeny", "egressDeny[].toPorts[].rules: L7 rules are not allowed in deny rules"}},
	{"fqdns-in-egress-deny", "spec:\n  endpointSelector: {}\n  egressDeny: [{toFQDNs: [{matchName: a.com}]}]",
		[]string{"spec.egressDeny", "egressDeny[].toFQDNs: toFQDNs is not allowed in egressDeny"}},
	{"http-on-udp", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}, {port: \"8080\", protocol: UDP}], rules: {http: [{path: /}]}}]}]",
		[]string{"spec.ingress[0].toPorts[0].ports", "ports[].protocol: HTTP rules need protocol TCP or ANY"}},
	{"http-on-sctp", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\", protocol: SCTP}], rules: {http: [{}]}}]}]",
		[]string{"spec.ingress[0].toPorts[0].ports", "ports[].protocol: HTTP rules need protocol TCP or ANY"}},
	{"dns-on-sctp", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"53\", protocol: SCTP}], rules: {dns: [{matchPattern: \"*\"}]}}]}]",
		[]string{"spec.egress[0].toPorts[0].ports", "ports[].protocol: DNS rules need protocol UDP, TCP or ANY"}},
	{"http-and-dns", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"*\"}], http: [{}]}}]}]",
		[]string{"spec.egress[0].toPorts[0].rules", "rules: http and dns rules cannot be combined in one toPorts element"}},
	{"l7-without-ports", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{rules: {http: [{method: GET}]}}]}]",
		[]string{"spec.egress[0].toPorts[0].ports: Required value", "ports: L7 rules need at least one port"}},
	{"l7-on-port-zero", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"80\"}, {port: \"0\"}], rules: {http: [{method: GET}]}}]}]",
		[]string{"spec.egress[0].toPorts[0].ports", "ports[].port: L7 rules need a specific port"}},
	{"l7-on-omitted-port", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{protocol: UDP}], rules: {dns: [{matchName: a.com}]}}]}]",
		[]string{"spec.egress[0].toPorts[0].ports", "ports[].port: L7 rules need a specific port"}},
	{"icmps-with-toports", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}]}], icmps: [{fields: [{type: 8}]}]}]",
		[]string{"spec.ingress[0].icmps", "icmps cannot be combined with toPorts in one rule; write two rules"}},
	{"icmp-fields-empty", "spec:\n  endpointSelector: {}\n  ingress: [{icmps: [{fields: []}]}]",
		[]string{"spec.ingress[0].icmps[0].fields"}},
	{"icmp-fields-missing", "spec:\n  endpointSelector: {}\n  ingress: [{icmps: [{}]}]",
		[]string{"spec.ingress[0].icmps[0].fields: Required value"}},
	{"icmp-family", "spec:\n  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: 8, family: IPv5}]}]}]",
		[]string{`spec.ingress[0].icmps[0].fields[0].family: Unsupported value: "IPv5"`}},
	{"icmp-type-range", "spec:\n  endpointSelector: {}\n  egress: [{icmps: [{fields: [{type: 256}]}]}]",
		[]string{"spec.egress[0].icmps[0].fields[0].type", "type: ICMP type out of range 0-255"}},
	{"entity-unknown", "spec:\n  endpointSelector: {}\n  egress: [{toEntities: [world, unmanaged]}]",
		[]string{`spec.egress[0].toEntities[1]: Unsupported value: "unmanaged"`}},
	{"entity-case", "spec:\n  endpointSelector: {}\n  ingress: [{fromEntities: [World]}]",
		[]string{`spec.ingress[0].fromEntities[0]: Unsupported value: "World"`}},
	{"spec-and-specs", "spec:\n  endpointSelector: {}\nspecs:\n- endpointSelector: {}",
		[]string{"specs: Forbidden: spec and specs are mutually exclusive"}},
	{"no-spec", "",
		[]string{"spec: Required value: one of spec or specs is required"}},
	{"empty-specs", "specs: []",
		[]string{"spec: Required value: one of spec or specs is required"}},
	{"no-endpoint-selector", "spec:\n  ingress: [{}]",
		[]string{"spec.endpointSelector: Required value"}},
	{"no-endpoint-selector-in-specs", "specs:\n- endpointSelector: {}\n- egress: [{}]",
		[]string{"specs[1].endpointSelector: Required value"}},
	{"fqdn-both", "spec:\n  endpointSelector: {}\n  egress: [{toFQDNs: [{matchName: a.com, matchPattern: \"*.a.com\"}]}]",
		[]string{"spec.egress[0].toFQDNs[0]", "set exactly one of matchName and matchPattern"}},
	{"fqdn-neither", "spec:\n  endpointSelector: {}\n  egress: [{toFQDNs: [{matchName: \"\"}]}]",
		[]string{"spec.egress[0].toFQDNs[0]", "set exactly one of matchName and matchPattern"}},
	{"dns-rule-neither", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{}]}}]}]",
		[]string{"spec.egress[0].toPorts[0].rules.dns[0]", "set exactly one of matchName and matchPattern"}},
	{"header-match-name", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}], rules: {http: [{headerMatches: [{name: \"X Bad\"}]}]}}]}]",
		[]string{`spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].name: Invalid value: "X Bad"`}},
	{"header-match-no-name", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}], rules: {http: [{headerMatches: [{value: v}]}]}}]}]",
		[]string{"spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].name: Required value"}},
	{"selector-operator-missing", "spec:\n  endpointSelector: {matchExpressions: [{key: app}]}",
		[]string{"spec.endpointSelector.matchExpressions[0].operator: Required value"}},
	{"unknown-field", "spec:\n  endpointSelector: {}\n  ingress: [{toPortz: []}]",
		[]string{".spec.ingress[0].toPortz: field not declared in schema"}},
	{"unsupported-cilium-field", "spec:\n  endpointSelector: {}\n  egress: [{toServices: [{k8sService: {serviceName: a}}]}]",
		[]string{".spec.egress[0].toServices: field not declared in schema"}},
	{"wrong-type", "spec:\n  endpointSelector: {}\n  ingress: {fromEntities: [world]}",
		[]string{".spec.ingress: expected list"}},
}

// testRejectedAtApply checks, for every case, that moat rejects the policy
// and that the apiserver refuses it with an error naming the field, for a
// moat.io and a cilium.io kind. kubectl's client-side validation is off
// (--validate=false) so that the apiserver alone is tested; with it on,
// kubectl refuses the required-field and unknown-field cases itself, with
// its own message naming the field.
func testRejectedAtApply(t *testing.T, c *k8stest.Cluster) {
	for _, k := range []kind{moatNP, cilCNP} {
		var objs []map[string]any
		for _, tc := range rejectedAtApply {
			obj := named(t, k, "rej-"+tc.name, tc.body)
			if err := moatValidate(obj); err == nil {
				t.Errorf("%s: moat accepts the policy: the schema must not reject it", tc.name)
			}
			objs = append(objs, obj)
		}
		accepted, out := applyBatch(t, c, "false", objs)
		for _, tc := range rejectedAtApply {
			name := "rej-" + tc.name
			if accepted[name] {
				t.Errorf("%s %s: the apiserver accepted it", k.kind, tc.name)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(out[name], w) {
					t.Errorf("%s %s: apiserver error lacks %q:\n%s", k.kind, tc.name, w, out[name])
				}
			}
		}
	}
}

// statusCase is a policy the schema cannot judge: the apiserver accepts
// it, moat's validation rejects it with want (field path and message), and
// the operator reports that in the Valid condition.
type statusCase struct {
	name string
	body string
	want string
}

var leftToStatus = []statusCase{
	{"regex-syntax", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{path: \"(\"}]}}]}]",
		`spec.egress[0].toPorts[0].rules.http[0].path: invalid regex "(": missing closing )`},
	{"dns-pattern", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"api.**.example.com\"}]}}]}]",
		`spec.egress[0].toPorts[0].rules.dns[0].matchPattern: invalid matchPattern "api.**.example.com"`},
	{"fqdn-star-in-name", "spec:\n  endpointSelector: {}\n  egress: [{toFQDNs: [{matchName: \"*.example.com\"}]}]",
		`spec.egress[0].toFQDNs[0].matchName: invalid matchName "*.example.com": '*' is only allowed in matchPattern`},
	{"cidr-except-outside", "spec:\n  endpointSelector: {}\n  ingress: [{fromCIDRSet: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]}]",
		`spec.ingress[0].fromCIDRSet[0].except[0]: except 192.168.0.0/16 is not inside cidr 10.0.0.0/8`},
	{"ipv6-syntax", "spec:\n  endpointSelector: {}\n  egress: [{toCIDR: [\"1:2:3/64\"]}]",
		`spec.egress[0].toCIDR[0]: invalid CIDR "1:2:3/64"`},
	{"label-value", "spec:\n  endpointSelector: {matchLabels: {app: \"-web\"}}",
		`spec.endpointSelector.matchLabels.app: invalid label value "-web"`},
	{"label-key-empty", "spec:\n  endpointSelector: {matchLabels: {\"k8s:\": web}}",
		`spec.endpointSelector.matchLabels["k8s:"]: empty label key`},
	{"selector-operator", "spec:\n  endpointSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}",
		`spec.endpointSelector.matchExpressions[0].operator: unknown operator "Equals"`},
	{"selector-values-exists", "spec:\n  endpointSelector: {}\n  ingress: [{fromEndpoints: [{matchExpressions: [{key: app, operator: Exists, values: [a]}]}]}]",
		`spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: must be empty for operator Exists`},
	{"selector-contradiction", "spec:\n  endpointSelector: {matchLabels: {app: a}, matchExpressions: [{key: app, operator: NotIn, values: [a]}]}",
		`spec.endpointSelector: selector can never match`},
	{"header-string", "spec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}], rules: {http: [{headers: [\"b@d: x\"]}]}}]}]",
		`spec.ingress[0].toPorts[0].rules.http[0].headers[0]: invalid header "b@d: x"`},
	{"icmp-name-family", "spec:\n  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: PacketTooBig}]}]}]",
		`spec.ingress[0].icmps[0].fields[0].type: unknown IPv4 ICMP type "PacketTooBig"`},
	{"icmp-name-unknown", "spec:\n  endpointSelector: {}\n  ingress: [{icmps: [{fields: [{type: Ping, family: IPv6}]}]}]",
		`spec.ingress[0].icmps[0].fields[0].type: unknown IPv6 ICMP type "Ping"`},
	{"l7-on-port-double-zero", "spec:\n  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"00\"}], rules: {http: [{}]}}]}]",
		`spec.egress[0].toPorts[0].ports[0].port: L7 rules need a specific port`},
}

// testLeftToStatus checks, for every case, that the apiserver accepts the
// policy and moat rejects it with the expected field path and message:
// the boundary between the schema and the Valid status condition.
func testLeftToStatus(t *testing.T, c *k8stest.Cluster) {
	var objs []map[string]any
	for _, tc := range leftToStatus {
		obj := named(t, moatNP, "st-"+tc.name, tc.body)
		err := moatValidate(obj)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: moat validation: got %v, want an error containing %q", tc.name, err, tc.want)
		}
		objs = append(objs, obj)
	}
	accepted, out := applyBatch(t, c, "strict", objs)
	for _, tc := range leftToStatus {
		if name := "st-" + tc.name; !accepted[name] {
			t.Errorf("%s: kubectl apply rejected it (the schema check moved: move the case to rejectedAtApply):\n%s", tc.name, out[name])
		}
	}
}

// testInvalidTestdata checks that every invalid document of
// policy/testdata is caught by the schema or by moat's validation, and
// logs which, as each of the four kinds.
func testInvalidTestdata(t *testing.T, c *k8stest.Cluster) {
	_, invalid := corpus(t)
	ensureNamespaces(t, c, invalid)
	byKind := map[kind][]map[string]any{}
	var order []kind
	for i, obj := range invalid {
		kinds := allKinds
		if !ciliumLike(obj) {
			kinds = []kind{{fmt.Sprint(obj["apiVersion"]), fmt.Sprint(obj["kind"]), true}}
		}
		for _, k := range kinds {
			o := as(obj, k)
			md := o["metadata"].(map[string]any)
			md["name"] = fmt.Sprintf("td%d-%s", i, md["name"])
			if _, ok := byKind[k]; !ok {
				order = append(order, k)
			}
			byKind[k] = append(byKind[k], o)
		}
	}
	schema, status := 0, 0
	for _, k := range order {
		accepted, out := applyBatch(t, c, "false", byKind[k])
		for _, o := range byKind[k] {
			name := o["metadata"].(map[string]any)["name"].(string)
			moatErr := moatValidate(o)
			switch {
			case accepted[name] && moatErr == nil:
				t.Errorf("%s %s slips through both the schema and moat's validation", k.kind, name)
			case !accepted[name]:
				schema++
				t.Logf("%s %s: rejected at apply: %s", k.kind, name, strings.TrimSpace(out[name]))
			default:
				status++
				t.Logf("%s %s: accepted at apply, left to the status condition: %v", k.kind, name, moatErr)
			}
		}
	}
	t.Logf("invalid testdata: %d rejected at apply, %d left to the status condition", schema, status)
}

// testLimits pins the list limits the CEL cost budget imposes (moat itself
// has none): a policy at every limit is accepted, one item more is
// rejected naming the list.
func testLimits(t *testing.T, c *k8stest.Cluster) {
	rep := func(s string, n int) string { return strings.TrimSuffix(strings.Repeat(s+", ", n), ", ") }
	ports := func(n int) string {
		var p []string
		for i := range n {
			p = append(p, fmt.Sprintf("{port: \"%d\", protocol: TCP}", 1000+i))
		}
		return strings.Join(p, ", ")
	}
	// Each list at its limit once, nested so that the costliest rules run
	// over full lists.
	toPorts := "{ports: [" + ports(40) + "], rules: {http: [" + rep("{method: GET, headerMatches: ["+rep("{name: X}", 32)+"]}", 64) + "]}}"
	dns := "{toPorts: [{ports: [{port: \"53\"}], rules: {dns: [" + rep("{matchPattern: \"*\"}", 64) + "]}}]}"
	cidrs := "{toCIDR: [" + rep("10.0.0.1", 64) + "], toCIDRSet: [" + rep("{cidr: 10.0.0.0/8, except: ["+rep("10.1.0.0/16", 32)+"]}", 64) + "], toFQDNs: [" + rep("{matchName: a.com}", 64) + "]}"
	icmps := "{icmps: [" + rep("{fields: ["+rep("{type: 8}", 40)+"]}", 8) + "]}"
	body := "specs: [{endpointSelector: {}, ingress: [{toPorts: [" + rep(toPorts, 16) + "]}], egress: [" + rep(dns, 14) + ", " + cidrs + ", " + icmps + "]}, " +
		rep("{endpointSelector: {}, ingress: ["+rep("{}", 16)+"]}", 15) + "]"
	atLimit := named(t, moatNP, "at-limits", body)
	if err := moatValidate(atLimit); err != nil {
		t.Fatalf("moat rejects the policy at the limits: %v", err)
	}
	if out, err := apply(t, c, atLimit); err != nil {
		t.Errorf("policy at every limit rejected: %v\n%s", err, out)
	}
	over := []struct{ name, body, want string }{
		{"specs", "specs: [" + rep("{endpointSelector: {}}", 17) + "]", "specs: Too many: 17: must have at most 16 items"},
		{"ingress", "spec: {endpointSelector: {}, ingress: [" + rep("{}", 17) + "]}", "spec.ingress: Too many: 17: must have at most 16 items"},
		{"ports", "spec: {endpointSelector: {}, egress: [{toPorts: [{ports: [" + ports(41) + "]}]}]}", "spec.egress[0].toPorts[0].ports: Too many: 41: must have at most 40 items"},
	}
	for _, o := range over {
		obj := named(t, moatNP, "over-"+o.name, o.body)
		if err := moatValidate(obj); err != nil {
			t.Fatalf("%s: moat rejects it: %v", o.name, err)
		}
		out, err := applyServer(t, c, obj)
		if err == nil || !strings.Contains(out, o.want) {
			t.Errorf("%s over the limit: err=%v, want output containing %q:\n%s", o.name, err, o.want, out)
		}
	}
}

// testIdentity checks the Identity CRD: range of spec.id, required fields,
// immutability, the ID printer column and the short name.
func testIdentity(t *testing.T, c *k8stest.Cluster) {
	ident := func(name string, id any, labels map[string]string) map[string]any {
		spec := map[string]any{"id": id}
		if labels != nil {
			spec["labels"] = labels
		}
		return map[string]any{"apiVersion": v1alpha1.APIVersion, "kind": v1alpha1.KindIdentity,
			"metadata": map[string]any{"name": name}, "spec": spec}
	}
	labels := map[string]string{"k8s:app": "web", "k8s:io.kubernetes.pod.namespace": "prod"}
	for _, id := range []int64{v1alpha1.MinIdentity, v1alpha1.MaxIdentity} {
		if out, err := apply(t, c, ident(fmt.Sprintf("ls-%d", id), id, labels)); err != nil {
			t.Fatalf("identity %d rejected: %v\n%s", id, err, out)
		}
	}
	for _, tc := range []struct {
		name string
		obj  map[string]any
		want string
	}{
		{"below", ident("ls-low", 255, labels), "spec.id: Invalid value: 255: spec.id in body should be greater than or equal to 256"},
		{"node-local", ident("ls-high", 1<<24, labels), "spec.id: Invalid value: 16777216: spec.id in body should be less than or equal to 16777215"},
		{"no-labels", ident("ls-nolabels", 1000, nil), "spec.labels: Required value"},
		{"no-spec", map[string]any{"apiVersion": v1alpha1.APIVersion, "kind": v1alpha1.KindIdentity, "metadata": map[string]any{"name": "ls-nospec"}}, "spec: Required value"},
	} {
		out, err := applyServer(t, c, tc.obj)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: err=%v, want output containing %q:\n%s", tc.name, err, tc.want, out)
		}
	}
	// Immutability, through a plain update (patch) and through apply.
	for _, tc := range []struct{ patch, want string }{
		{`{"spec":{"id":257}}`, "id is immutable"},
		{`{"spec":{"labels":{"k8s:app":"db"}}}`, "labels are immutable"},
	} {
		out, err := c.Kubectl("patch", "identity.moat.io", "ls-256", "--type=merge", "-p", tc.patch)
		if err == nil || !strings.Contains(out, tc.want) || !strings.Contains(out, "spec is immutable") {
			t.Errorf("patch %s: err=%v, want %q and \"spec is immutable\":\n%s", tc.patch, err, tc.want, out)
		}
	}
	out := c.MustKubectl(t, "get", "mid", "ls-256")
	if !regexp.MustCompile(`(?m)^NAME\s+ID\s+AGE\s*\nls-256\s+256\s+`).MatchString(out) {
		t.Errorf("kubectl get mid: want NAME ID AGE columns with id 256:\n%s", out)
	}
}

// testStatusAndPrinting writes the Valid condition through the status
// subresource (as moat-operator does), checks that a spec update leaves it
// alone and that the short names and the Valid column work.
func testStatusAndPrinting(t *testing.T, c *k8stest.Cluster) {
	obj := named(t, moatNP, "with-status", "spec:\n  endpointSelector: {}\n  ingress: [{fromEntities: [world]}]")
	if out, err := apply(t, c, obj); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	status := `{"status":{"observedGeneration":1,"conditions":[{"type":"Valid","status":"False","reason":"Invalid","message":"spec.ingress[0]: example","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":1}]}}`
	// Status written through the main resource is ignored.
	c.MustKubectl(t, "patch", "mnp", "with-status", "--type=merge", "-p", status)
	if out := c.MustKubectl(t, "get", "mnp", "with-status", "-o", "jsonpath={.status.conditions}"); out != "" {
		t.Errorf("status written without the subresource: %s", out)
	}
	c.MustKubectl(t, "patch", "mnp", "with-status", "--subresource=status", "--type=merge", "-p", status)
	c.MustKubectl(t, "patch", "mnp", "with-status", "--type=merge", "-p", `{"spec":{"description":"changed"}}`)
	out := c.MustKubectl(t, "get", "networkpolicies.moat.io", "with-status", "-o", "json")
	var np v1alpha1.NetworkPolicy
	if err := json.Unmarshal([]byte(out), &np); err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal([]byte(out), &generic); err != nil {
		t.Fatal(err)
	}
	if err := moatValidate(generic); err != nil {
		t.Errorf("moat rejects a stored policy with a status (kubectl get -o json): %v", err)
	}
	if np.Generation != 2 || np.Status.ObservedGeneration != 1 || len(np.Status.Conditions) != 1 ||
		np.Status.Conditions[0].Type != v1alpha1.ConditionValid || np.Status.Conditions[0].Reason != v1alpha1.ReasonInvalid {
		t.Errorf("after a spec update: generation %d, status %+v", np.Generation, np.Status)
	}
	// A condition without its required fields is refused.
	bad := `{"status":{"conditions":[{"type":"Valid","status":"Maybe"}]}}`
	if out, err := c.Kubectl("patch", "mnp", "with-status", "--subresource=status", "--type=merge", "-p", bad); err == nil || !strings.Contains(out, "status.conditions[0].status: Unsupported value: \"Maybe\"") {
		t.Errorf("bad condition: err=%v\n%s", err, out)
	}
	out = c.MustKubectl(t, "get", "mnp", "with-status")
	if !regexp.MustCompile(`(?m)^NAME\s+VALID\s+AGE\s*\nwith-status\s+False\s+`).MatchString(out) {
		t.Errorf("kubectl get mnp: want NAME VALID AGE with False:\n%s", out)
	}
	for _, sn := range []string{"mnp", "mcnp", "mid", "cnp", "ccnp"} {
		if out, err := c.Kubectl("get", sn, "-A"); err != nil {
			t.Errorf("short name %s: %v\n%s", sn, err, out)
		}
	}
	if out := c.MustKubectl(t, "api-resources", "--categories=moat", "-o", "name"); !strings.Contains(out, "identities.moat.io") || !strings.Contains(out, "networkpolicies.moat.io") {
		t.Errorf("category moat: %s", out)
	}
}

// testTypedClient creates and reads policies and identities through
// client-go REST clients built from the packages' schemes, which proves
// AddToScheme and the deepcopy functions fit client-go.
func testTypedClient(t *testing.T, c *k8stest.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := ciliumv2.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	client := func(gv schema.GroupVersion) *rest.RESTClient {
		cfg := rest.CopyConfig(c.Config())
		cfg.GroupVersion = &gv
		cfg.APIPath = "/apis"
		cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
		rc, err := rest.RESTClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	moat := client(v1alpha1.GroupVersion)
	np := &v1alpha1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "typed", Namespace: "default"},
		Spec: &v1alpha1.Rule{
			EndpointSelector: &v1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []v1alpha1.IngressRule{{
				FromEntities: []string{"world"},
				ToPorts:      []v1alpha1.PortRule{{Ports: []v1alpha1.PortProtocol{{Port: "443", Protocol: "TCP"}}}},
			}},
		},
	}
	got := &v1alpha1.NetworkPolicy{}
	if err := moat.Post().Namespace("default").Resource("networkpolicies").Body(np).Do(ctx).Into(got); err != nil {
		t.Fatalf("create NetworkPolicy: %v", err)
	}
	cp := got.DeepCopy()
	if cp.Spec == got.Spec || cp.Spec.Ingress[0].ToPorts[0].Ports[0].Port != "443" || cp.UID == "" {
		t.Errorf("DeepCopy of the created object: %+v", cp)
	}
	id := &v1alpha1.Identity{ObjectMeta: metav1.ObjectMeta{Name: "ls-typed"}, Spec: v1alpha1.IdentitySpec{ID: 4242, Labels: map[string]string{"k8s:app": "typed"}}}
	if err := moat.Post().Resource("identities").Body(id).Do(ctx).Error(); err != nil {
		t.Fatalf("create Identity: %v", err)
	}
	ids := &v1alpha1.IdentityList{}
	if err := moat.Get().Resource("identities").Do(ctx).Into(ids); err != nil {
		t.Fatalf("list identities: %v", err)
	}
	found := false
	for _, it := range ids.Items {
		found = found || (it.Name == "ls-typed" && it.Spec.ID == 4242)
	}
	if !found {
		t.Errorf("identity ls-typed/4242 not listed: %d items", len(ids.Items))
	}
	cil := client(ciliumv2.GroupVersion)
	cnp := &ciliumv2.CiliumNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "typed", Namespace: "default"}, Spec: np.Spec}
	gotCNP := &ciliumv2.CiliumNetworkPolicy{}
	if err := cil.Post().Namespace("default").Resource("ciliumnetworkpolicies").Body(cnp).Do(ctx).Into(gotCNP); err != nil {
		t.Fatalf("create CiliumNetworkPolicy: %v", err)
	}
	if gotCNP.Spec == nil || !bytes.Contains(mustJSON(t, gotCNP.Spec), []byte(`"port":"443"`)) {
		t.Errorf("CiliumNetworkPolicy round trip: %s", mustJSON(t, gotCNP))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
