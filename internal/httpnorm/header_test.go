package httpnorm

import "testing"

func TestHeaderName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"simple", "X-Token", true},
		{"lower", "content-length", true},
		{"token punctuation", "X!#$%&'*+-.^`|~1", true},
		{"empty", "", false},
		{"underscore", "X_Token", false},
		{"leading underscore", "_x", false},
		{"space", "X Token", false},
		{"colon", "X-Token:", false},
		{"pseudo header", ":path", false},
		{"nul", "X\x00Token", false},
		{"tab", "X\tToken", false},
		{"newline", "X\nToken", false},
		{"non ascii", "X-T\xc3\xb6ken", false},
		{"separator", "X(Token)", false},
		{"slash", "X/Token", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HeaderName(tt.in); got != tt.want {
				t.Errorf("HeaderName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
