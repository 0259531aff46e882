package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func cnpNamed(name string) string {
	return cnpHeader + "metadata: {name: " + name + "}\nspec: {endpointSelector: {}}\n"
}

// TestParseFilesDirectory checks the walk: recursive, sorted, only policy
// extensions, hidden directories and files skipped, JSON accepted.
func TestParseFilesDirectory(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"b.yaml":                 cnpNamed("b"),
		"a.yml":                  cnpNamed("a1") + "---\n" + cnpNamed("a2"),
		"sub/c.json":             "{\n\t\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\",\n\t\"metadata\": {\"name\": \"c\"}, \"spec\": {\"endpointSelector\": {}}}\n",
		"notes.txt":              "not a policy",
		"..2026_01_01/b.yaml":    cnpNamed("b"), // ConfigMap volume history
		".hidden.yaml":           "garbage: [",
		"sub/empty.yaml":         "# nothing here\n---\n",
		"sub/deeper/d.yaml":      "--- # comment on the marker\n" + cnpNamed("d"),
		"sub/deeper/z-list.yaml": "apiVersion: v1\nkind: List\nitems: []\n",
	})
	pols, err := ParseFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pols {
		rel, _ := filepath.Rel(dir, p.Source.File)
		got = append(got, p.Name+"@"+rel+"#"+itoa(p.Source.Doc))
	}
	want := "a1@a.yml#1 a2@a.yml#2 b@b.yaml#1 c@sub/c.json#1 d@sub/deeper/d.yaml#1"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestParseFilesErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"good.yaml": cnpNamed("good"),
		"bad.yaml":  cnpNamed("x") + "---\n" + cnpHeader + "metadata: {name: second}\nspec: {endpointSelector: {}, ingress: [{fromEntities: [moon]}]}\n",
	})
	pols, err := ParseFiles(filepath.Join(dir, "missing"), dir)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		filepath.Join(dir, "missing") + ": stat: no such file or directory",
		filepath.Join(dir, "bad.yaml") + ": doc 2: spec.ingress[0].fromEntities[0]: unknown entity \"moon\"",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if len(pols) != 2 || pols[0].Name != "x" || pols[1].Name != "good" {
		t.Errorf("valid policies = %+v", pols)
	}
}

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines []int
	}{
		{"single", "a: 1\n", []int{1}},
		{"leading marker", "---\na: 1\n", []int{1, 2}},
		{"three", "a: 1\n---\nb: 2\n--- \nc: 3", []int{1, 3, 5}},
		{"marker-like text", "a: '---'\n----\n", []int{1}},
		{"crlf", "a: 1\r\n---\r\nb: 2\r\n", []int{1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs := splitDocuments([]byte(tt.in))
			var lines []int
			for _, d := range docs {
				lines = append(lines, d.line)
			}
			if len(lines) != len(tt.lines) {
				t.Fatalf("lines = %v, want %v", lines, tt.lines)
			}
			for i := range lines {
				if lines[i] != tt.lines[i] {
					t.Fatalf("lines = %v, want %v", lines, tt.lines)
				}
			}
		})
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		err  FieldError
		want string
	}{
		{FieldError{File: "web.yaml", Doc: 2, Field: "spec.egress[0]", Reason: "bad"}, "web.yaml: doc 2: spec.egress[0]: bad"},
		{FieldError{File: "web.yaml", Reason: "bad"}, "web.yaml: bad"},
		{FieldError{Reason: "bad"}, "bad"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q", got)
			}
		})
	}
	if ErrorList(nil).Err() != nil {
		t.Error("empty ErrorList.Err() != nil")
	}
}
