package httpnorm

import "testing"

// TestNormalizeStrict: ModeStrict rejects every target whose meaning differs
// between back ends or between orders of the normalisation steps, and
// forwards unambiguous ones exactly as ModeEnvoy does.
func TestNormalizeStrict(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		want   string // "" for Reject
		reason string
	}{
		// Unambiguous: normalised as Envoy does.
		{"plain", "/public/x", "/public/x", ""},
		{"raw dotdot", "/public/../admin", "/admin", ""},
		{"leading dot", "/./public/../admin", "/admin", ""},
		{"dot at end", "/public/.", "/public/", ""},
		{"dotdot then trailing slash", "/public/x/../", "/public/", ""},
		{"double slash without dots", "//public//x", "/public/x", ""},
		{"empty after dotdot is trailing", "/a/b/../", "/a/", ""},
		{"params on ordinary segment", "/public;v=1/x", "/public;v=1/x", ""},
		{"unreserved decoded", "/%70ublic", "/public", ""},
		{"encoded dot inside a name", "/public/a%2ejson", "/public/a.json", ""},
		{"percent literal", "/a/100%25", "/a/100%25", ""},
		{"double-encoded letter", "/a/%2541", "/a/%2541", ""},
		{"raw utf-8", "/caf\xc3\xa9", "/caf%C3%A9", ""},
		{"query kept apart", "/public?x=/../admin%2F", "/public", ""},

		// Dot segments with parameters, or encoded.
		{"dotdot semicolon", "/public/..;/admin", "", ReasonAmbiguous},
		{"dotdot param", "/public/..;x=y/admin", "", ReasonAmbiguous},
		{"encoded dotdot param", "/public/%2e%2e;/admin", "", ReasonAmbiguous},
		{"dot param", "/public/.;x/admin", "", ReasonAmbiguous},
		{"encoded dotdot", "/public/%2e%2e/admin", "", ReasonAmbiguous},
		{"encoded dotdot upper", "/public/%2E%2E/admin", "", ReasonAmbiguous},
		{"half encoded dotdot", "/public/.%2e/admin", "", ReasonAmbiguous},
		{"encoded dot", "/public/%2e/x", "", ReasonAmbiguous},
		{"encoded semicolon after dots", "/public/..%3b/admin", "", ReasonAmbiguous},
		{"encoded dotdot at end", "/public/%2e%2e", "", ReasonAmbiguous},
		{"triple dot", "/public/.../admin", "", ReasonAmbiguous},
		{"dots and space", "/public/..%20/admin", "", ReasonAmbiguous},

		// Empty segments next to dot segments.
		{"empty before dotdot", "/public//../admin", "", ReasonAmbiguous},
		{"dot empty dotdot empty", "/public/.//..//admin", "", ReasonAmbiguous},
		{"empty after dotdot", "/public/..//admin", "", ReasonAmbiguous},
		{"empty far before dotdot", "/public//x/../../admin", "", ReasonAmbiguous},
		{"leading empty before dotdot", "//../admin", "", ReasonAmbiguous},
		{"param-only segment before dotdot", "/public/;x/../admin", "", ReasonAmbiguous},
		{"empty next to dot", "/a//./b", "", ReasonAmbiguous},

		// Slashes and backslashes.
		{"escaped slash", "/public%2F..%2Fadmin", "", ReasonEscapedSlash},
		{"escaped slash lower", "/public%2fx", "", ReasonEscapedSlash},
		{"escaped backslash", "/public%5Cx", "", ReasonEscapedSlash},
		{"escaped backslash lower", "/public%5cx", "", ReasonEscapedSlash},
		{"raw backslash", "/public\\..\\admin", "", ReasonAmbiguous},

		// Deeper encodings and code points.
		{"double encoded dot", "/public/%252e%252e/admin", "", ReasonAmbiguous},
		{"double encoded dot mixed", "/public/%252E./admin", "", ReasonAmbiguous},
		{"double encoded slash", "/public%252Fadmin", "", ReasonAmbiguous},
		{"double encoded by parts", "/public/%25%32%65%25%32%65/admin", "", ReasonAmbiguous},
		{"triple encoded dot", "/public/%25252e/admin", "", ReasonAmbiguous},
		{"double encoded percent", "/a/%2525", "", ReasonAmbiguous},
		{"overlong dot", "/public/%c0%ae%c0%ae/admin", "", ReasonAmbiguous},
		{"overlong slash", "/public%c0%afadmin", "", ReasonAmbiguous},
		{"raw invalid utf-8", "/public/\xc0\xae", "", ReasonAmbiguous},
		{"fullwidth dot", "/public/%EF%BC%8E%EF%BC%8E/admin", "", ReasonAmbiguous},
		{"fullwidth solidus", "/public%EF%BC%8Fadmin", "", ReasonAmbiguous},
		{"encoded nul", "/public%00.html", "", ReasonAmbiguous},
		{"encoded newline", "/public%0a", "", ReasonAmbiguous},

		// What both modes reject.
		{"fragment", "/public#x", "", ReasonInvalid},
		{"absolute form", "http://h/public", "", ReasonInvalid},
		{"nul", "/public\x00", "", ReasonInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Normalize(tt.raw, ModeStrict)
			if tt.want == "" {
				if got.Action != Reject || got.Reason != tt.reason || got.Path != "" {
					t.Errorf("Normalize(%q) = %+v, want Reject %s", tt.raw, got, tt.reason)
				}
				return
			}
			if got.Action != Forward || got.Path != tt.want {
				t.Errorf("Normalize(%q) = %+v, want Forward %q", tt.raw, got, tt.want)
			}
			if env := Normalize(tt.raw, ModeEnvoy); env.Path != got.Path || env.Action != got.Action {
				t.Errorf("strict forwards %q as %q, envoy mode as %+v: modes must agree on unambiguous targets", tt.raw, got.Path, env)
			}
		})
	}
}

// TestNormalizeEnvoyKeepsParams documents the Envoy-exact behaviour that
// ModeStrict exists for.
func TestNormalizeEnvoyKeepsParams(t *testing.T) {
	for raw, want := range map[string]Result{
		"/public/..;/admin":  {Path: "/public/..;/admin", Action: Forward},
		"/public//../admin":  {Path: "/public/admin", Action: Forward},
		"/public%2Fx?q=1":    {Path: "/public/x", Query: "q=1", Action: Redirect, Reason: ReasonEscapedRedirect},
		"/public/%2e%2e/adm": {Path: "/adm", Action: Forward},
	} {
		if got := Normalize(raw, ModeEnvoy); got != want {
			t.Errorf("Normalize(%q, ModeEnvoy) = %+v, want %+v", raw, got, want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"": ModeStrict, "strict": ModeStrict, "envoy": ModeEnvoy} {
		m, err := ParseMode(s)
		if err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", s, m, err, want)
		}
		if s != "" && m.String() != s {
			t.Errorf("%v.String() = %q, want %q", m, m.String(), s)
		}
	}
	if _, err := ParseMode("Envoy"); err == nil || err.Error() != `parse path mode "Envoy": want "strict" or "envoy"` {
		t.Errorf("ParseMode(Envoy) error = %v", err)
	}
}
