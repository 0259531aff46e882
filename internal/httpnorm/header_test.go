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

func TestHost(t *testing.T) {
	for h, want := range map[string]bool{
		"": true, "deathstar": true, "deathstar:8080": true, "DeathStar.example.com": true, "a_b": true,
		"10.0.0.1": true, "10.0.0.1:80": true, "[::1]": true, "[::1]:80": true,
		"deathstar:": false, "deathstar:http": false, "deathstar:123456": false, "evil@deathstar": false,
		"deathstar/admin": false, "dea thstar": false, "deathstar%2e": false, "[::1": false, "[zz]:80": false,
		"[::1]x": false, "deathstar\x00": false, "deathstar,other": false,
	} {
		if got := Host(h); got != want {
			t.Errorf("Host(%q) = %v, want %v", h, got, want)
		}
	}
}
