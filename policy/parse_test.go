package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
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

// TestSplitDocuments: documents split as kubectl splits them, each with
// the line of the file it starts on; a bad separator is an error naming its
// line.
func TestSplitDocuments(t *testing.T) {
	long := "a: " + strings.Repeat("x", 10000) + "\n" // longer than the reader's line buffer
	tests := []struct {
		name    string
		in      string
		lines   []int
		wantErr string
	}{
		{"single", "a: 1\n", []int{1}, ""},
		{"leading marker", "---\na: 1\n", []int{2}, ""},
		{"three", "a: 1\n---\nb: 2\n--- \nc: 3", []int{1, 3, 5}, ""},
		{"consecutive markers", "a: 1\n---\n---\n\t\n---\nb: 2\n", []int{1, 4, 6}, ""},
		{"comment after marker", "a: 1\n---   # second\nb: 2\n", []int{1, 3}, ""},
		{"comment right after marker", "a: 1\n---# second\nb: 2\n", []int{1, 3}, ""},
		{"crlf", "a: 1\r\n---\r\nb: 2\r\n", []int{1, 3}, ""},
		{"long line", long + "---\n" + long + "b: 2\n", []int{1, 3}, ""},
		{"marker-like text", "a: '---'\nb: |\n  ---\n---\nc: 3\n", []int{1, 5}, ""},
		{"four dashes", "a: '---'\n----\n", nil, `line 2: "----" is not a document separator`},
		{"content after marker", "a: 1\n---\nb: 2\n--- {c: 3}\n", []int{1}, `line 4: "--- {c: 3}" is not a document separator`},
		{"content after marker crlf", "a: 1\r\n--- |\r\n", nil, `line 2: "--- |" is not a document separator`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := splitDocuments([]byte(tt.in))
			var lines []int
			for _, d := range docs {
				lines = append(lines, d.line)
			}
			if !slices.Equal(lines, tt.lines) {
				t.Errorf("lines = %v, want %v", lines, tt.lines)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestParseBytesSplitsLikeKubectl: "---#comment" separates two documents
// for kubectl apply (apimachinery's YAML reader). The hand-written splitter
// before it did not take the line for a separator and read both policies as
// one document: "doc 1: invalid YAML: yaml: line 6: could not find expected
// ':'". Text after "---" on its line is an error naming the line, as for
// kubectl (the old splitter moved it into the next document), and the
// policies before it are still returned.
func TestParseBytesSplitsLikeKubectl(t *testing.T) {
	pols, err := ParseBytes("f.yaml", []byte(cnpNamed("a")+"---# the second policy\n"+cnpNamed("b")))
	if err != nil {
		t.Fatalf("ParseBytes: %v", err)
	}
	var got []string
	for _, p := range pols {
		got = append(got, p.Name+"@doc"+strconv.Itoa(p.Source.Doc))
	}
	if want := []string{"a@doc1", "b@doc2"}; !slices.Equal(got, want) {
		t.Errorf("policies %v, want %v", got, want)
	}

	in := cnpNamed("a") + "---\n" + cnpNamed("b") + "--- " + cnpNamed("c")
	pols, err = ParseBytes("f.yaml", []byte(in))
	want := `f.yaml: doc 2: invalid YAML: line 10: "--- apiVersion: cilium.io/v2" is not a document separator`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want it to contain %q", err, want)
	}
	if len(pols) != 1 || pols[0].Name != "a" {
		t.Errorf("policies before the bad separator: %+v, want only a", pols)
	}
}

// TestParseBytesTextAfterDocumentEnd: YAML reads text after a "..." end
// marker as another document. Neither the old splitter nor the stream reader
// splits there, and the YAML decoder reads only the first document, so a
// policy after "..." was dropped without a word (ParseBytes returned policy
// a and no error). It is now an error naming both lines; a marker followed
// by comments only is fine.
func TestParseBytesTextAfterDocumentEnd(t *testing.T) {
	pols, err := ParseBytes("f.yaml", []byte(cnpNamed("a")+"...\n# end of a\n\n"))
	if err != nil || len(pols) != 1 {
		t.Fatalf("end marker and a comment: %d policies, error %v; want 1, nil", len(pols), err)
	}
	pols, err = ParseBytes("f.yaml", []byte(cnpNamed("a")+"...\r\n"+cnpNamed("b")))
	want := `f.yaml: doc 1: invalid YAML: line 6: text after the document end marker "..." (line 5) would start another document`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("policies %d, error = %v; want it to contain %q", len(pols), err, want)
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

// TestStrictDecodeReportsEverything: one document with a mistyped value, an
// unknown field, a case typo and an unknown field inside a list item gets
// one error per problem, each at its field path (the type walk and
// sigs.k8s.io/json's strict decoding run in the same pass).
func TestStrictDecodeReportsEverything(t *testing.T) {
	doc := cnpHeader + `metadata: {name: a}
spec:
  endpointSelector: {}
  enableDefaultDeny: {ingress: "no"}
  bogus: 1
  egress:
  - toports: []
  - toEndpoints: [{matchLabels: {app: x}, matchlabels: {}}]
`
	_, err := ParseBytes("s.yaml", []byte(doc))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`s.yaml: doc 1: spec.enableDefaultDeny.ingress: expected a boolean, got string "no"`,
		`s.yaml: doc 1: spec.bogus: unknown field`,
		`s.yaml: doc 1: spec.egress[0].toports: unknown field (did you mean "toPorts"?)`,
		`s.yaml: doc 1: spec.egress[1].toEndpoints[0].matchlabels: unknown field (did you mean "matchLabels"?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("%d errors, want 4:\n%v", n, err)
	}
}
