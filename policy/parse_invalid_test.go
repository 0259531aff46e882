package policy

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseInvalidFiles checks that every file in testdata/invalid fails
// with the file, the document number and the exact field path.
func TestParseInvalidFiles(t *testing.T) {
	dir := filepath.Join("testdata", "invalid")
	tests := []struct {
		file   string
		doc    int
		field  string
		reason string // substring
	}{
		{"bad-regex.yaml", 2, "spec.egress[0].toPorts[0].rules.http[1].path", `invalid regex "(": missing closing )`},
		{"l7-in-deny.yaml", 1, "spec.ingressDeny[0].toPorts[0].rules", "not allowed in deny rules"},
		{"http-on-udp.yaml", 1, "spec.ingress[0].toPorts[0].ports[0].protocol", "HTTP rules need protocol TCP or ANY, not UDP"},
		{"unknown-field.yaml", 1, "specs[1].egress[0].toPortz", "unknown field"},
		{"bad-dns-pattern.yaml", 1, "spec.egress[0].toPorts[0].rules.dns[1].matchPattern", `"**." is only allowed as the leading label`},
		{"port-70000.yaml", 1, "spec.ingress[0].toPorts[0].ports[0].port", "port 70000 out of range 0-65535"},
		{"endport-below-port.yaml", 2, "spec.egress[0].toPorts[0].ports[0].endPort", "endPort 8000 is below port 9000"},
		{"wrong-apiversion.yaml", 1, "kind", `unsupported apiVersion/kind "cilium.io/v1"/"CiliumNetworkPolicy"`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			_, err := ParseFiles(path)
			if err == nil {
				t.Fatal("ParseFiles succeeded, want an error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			if len(list) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(list), err)
			}
			fe := list[0]
			if fe.File != path || fe.Doc != tt.doc || fe.Field != tt.field {
				t.Errorf("got file %q doc %d field %q, want %q doc %d field %q", fe.File, fe.Doc, fe.Field, path, tt.doc, tt.field)
			}
			if !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", fe.Reason, tt.reason)
			}
			wantPrefix := path + ": doc " + itoa(tt.doc) + ": " + tt.field + ": "
			if msg := err.Error(); !strings.HasPrefix(msg, wantPrefix) {
				t.Errorf("message %q does not start with %q", msg, wantPrefix)
			}
		})
	}
}

// TestParseDirectoryReportsEveryError parses the whole invalid directory:
// one error per file, and the valid documents are still returned.
func TestParseDirectoryReportsEveryError(t *testing.T) {
	pols, err := ParseFiles(filepath.Join("testdata", "invalid"))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got error %v, want ErrorList", err)
	}
	files := map[string]bool{}
	for _, e := range list {
		files[filepath.Base(e.File)] = true
	}
	if len(list) != 8 || len(files) != 8 {
		t.Errorf("got %d errors in %d files, want 8 in 8:\n%v", len(list), len(files), err)
	}
	var names []string
	for _, p := range pols {
		names = append(names, p.Ref())
	}
	want := "CiliumNetworkPolicy default/ok,KubernetesNetworkPolicy default/ok"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("valid policies = %s, want %s", got, want)
	}
}

// TestParseBytesErrors covers document-level errors.
func TestParseBytesErrors(t *testing.T) {
	tests := []struct {
		name, data string
		wantErr    string
	}{
		{"not an object", "- a\n- b\n", "doc 1: expected an object, got a list"},
		{"missing kind", "apiVersion: cilium.io/v2\n", "doc 1: kind: required"},
		{"yaml syntax", "a: b\n---\nkind: [\n", "doc 2: invalid YAML"},
		{"duplicate key", "apiVersion: v1\napiVersion: v2\n", "doc 1: invalid YAML"},
		{"duplicate policy", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}}\n---\n" +
			"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}}\n", "doc 2: metadata.name: duplicate CiliumNetworkPolicy default/a"},
		{"wrong type", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}, ingress: {}}\n", "doc 1: spec.ingress: expected a list, got an object"},
		{"case typo", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}, egress: [{toports: []}]}\n", `spec.egress[0].toports: unknown field (did you mean "toPorts"?)`},
		{"toFQDNs in ingress", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}, ingress: [{toFQDNs: []}]}\n", "spec.ingress[0].toFQDNs: unknown field (toFQDNs is only allowed in egress rules)"},
		{"alias bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
			"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n" +
			"g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n", "excessive aliasing"},
		{"yaml line is absolute", "a: b\n---\nx: 1\ny: [\n", "line 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBytes("f.yaml", []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
