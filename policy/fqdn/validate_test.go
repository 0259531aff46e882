package fqdn

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"simple", "cilium.io", ""},
		{"trailing dot", "cilium.io.", ""},
		{"single label", "localhost", ""},
		{"upper case", "Cilium.IO", ""},
		{"underscore", "_http._tcp.example.com", ""},
		{"label of 63", long63 + ".io", ""},
		{"name of 253", strings.Repeat(long63+".", 3) + strings.Repeat("a", 61), ""},
		{"empty", "", "empty name"},
		{"root", ".", `name is only the root "."`},
		{"leading dot", ".cilium.io", "label 1 is empty"},
		{"double dot", "cilium..io", "label 2 is empty"},
		{"two trailing dots", "cilium.io..", "label 3 is empty"},
		{"label of 64", strings.Repeat("a", 64) + ".io", "more than 63"},
		{"name of 254", strings.Repeat(long63+".", 3) + strings.Repeat("a", 62), "254 characters, more than 253"},
		{"star", "*.cilium.io", "'*' is not allowed in matchName"},
		{"space", "a b.io", "character ' ' is not allowed"},
		{"slash", "a/b.io", "character '/' is not allowed (only letters, digits, '-', '_')"},
		{"escape", "a\\.b.io", `character '\\' is not allowed`},
		{"non ascii", "caf\xc3\xa9.io", "is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateName(tt.in), tt.wantErr)
		})
	}
}

func TestValidatePattern(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"literal", "cilium.io", ""},
		{"star label", "*.cilium.io", ""},
		{"star inside", "api-*.example.com", ""},
		{"stars inside", "a*b*c.example.com", ""},
		{"star middle", "www.*.io", ""},
		{"only star", "*", ""},
		{"only star dot", "*.", ""},
		{"double star", "**.cilium.io", ""},
		{"double star trailing dot", "**.cilium.io.", ""},
		{"double star then star", "**.*.io", ""},
		{"empty", "", "empty name"},
		{"double star alone", "**", `use "*" to match every name`},
		{"double star alone dot", "**.", `use "*" to match every name`},
		{"double star not first", "a.**.io", `label 2: "**" is allowed only as the first label`},
		{"double star glued", "**a.io", "consecutive '*'"},
		{"triple star", "***.io", "consecutive '*'"},
		{"empty label", "*..io", "label 2 is empty"},
		{"bad char", "*.ci?ium.io", "character '?' is not allowed (only letters, digits, '-', '_', '*')"},
		{"regex", "*.cilium\\.io", `character '\\' is not allowed`},
		{"long label", strings.Repeat("*", 1) + strings.Repeat("a", 63) + ".io", "more than 63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidatePattern(tt.in), tt.wantErr)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
