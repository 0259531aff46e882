package policy

import (
	"os"
	"path/filepath"
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
