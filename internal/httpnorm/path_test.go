package httpnorm

import "testing"

func TestPath(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		want   string
		action Action
	}{
		{"root", "/", "/", Forward},
		{"plain", "/public", "/public", Forward},
		{"query dropped", "/public?a=b&c=/../x", "/public", Forward},
		{"empty query", "/public?", "/public", Forward},
		{"trailing slash kept", "/public/", "/public/", Forward},

		// Dot segments.
		{"dotdot", "/x/../public", "/public", Forward},
		{"dotdot above root", "/../../public", "/public", Forward},
		{"dotdot at end", "/a/b/..", "/a/", Forward},
		{"dot", "/./public", "/public", Forward},
		{"dot at end", "/public/.", "/public/", Forward},
		{"dot in middle", "/a/./b", "/a/b", Forward},
		{"encoded dotdot", "/x/%2e%2E/public", "/public", Forward},
		{"half encoded dotdot", "/x/.%2e/public", "/public", Forward},
		{"encoded dot", "/%2E/public", "/public", Forward},
		{"triple dot kept", "/.../public", "/.../public", Forward},
		{"dotdot param kept", "/x/..;param/public", "/x/..;param/public", Forward},
		{"dotdot semicolon kept", "/x/..;/public", "/x/..;/public", Forward},
		{"dot suffix kept", "/a../b", "/a../b", Forward},

		// Slashes.
		{"double slash", "//public", "/public", Forward},
		{"many slashes", "/a///b////", "/a/b/", Forward},
		{"slashes then dotdot", "/a/b//../c", "/a/b/c", Forward},
		{"backslash", "/a\\..\\public", "/public", Forward},

		// Escaped slashes.
		{"escaped slash upper", "/private%2Fkey", "/private/key", Redirect},
		{"escaped slash lower", "/private%2fkey", "/private/key", Redirect},
		{"escaped backslash upper", "/private%5Ckey", "/private/key", Redirect},
		{"escaped backslash lower", "/private%5ckey", "/private/key", Redirect},
		{"escaped slash dotdot", "/x%2F..%2Fpublic", "/public", Redirect},
		{"escaped slash merge", "/a%2F%2Fb", "/a/b", Redirect},
		{"escaped slash in query only", "/a?b=%2F", "/a", Forward},

		// Percent-encodings.
		{"unreserved decoded", "/%70ublic", "/public", Forward},
		{"unreserved mixed case", "/%7e%7E%2d%5f%41%61%30", "/~~-_Aa0", Forward},
		{"reserved kept upper", "/a%3fb", "/a%3Fb", Forward},
		{"percent kept", "/a%25b", "/a%25b", Forward},
		{"double encoded slash kept", "/a%252Fb", "/a%252Fb", Forward},
		{"space encoding kept", "/a%20b", "/a%20b", Forward},
		{"lower hex upper-cased", "/a%3a%c3%a9", "/a%3A%C3%A9", Forward},
		{"non ascii escaped", "/caf\xc3\xa9", "/caf%C3%A9", Forward},
		{"unsafe ascii escaped", "/a|b{c}", "/a%7Cb%7Bc%7D", Forward},
		{"sub delims kept", "/a;b=c,d!$&'()*+:@", "/a;b=c,d!$&'()*+:@", Forward},

		// Rejections.
		{"empty", "", "", Reject},
		{"asterisk form", "*", "", Reject},
		{"absolute form", "http://example.com/public", "", Reject},
		{"authority form", "example.com:443", "", Reject},
		{"relative", "public", "", Reject},
		{"fragment", "/public#frag", "", Reject},
		{"fragment in query", "/public?a#b", "", Reject},
		{"nul", "/public\x00.html", "", Reject},
		{"encoded nul kept", "/public%00.html", "/public%00.html", Forward},
		{"tab", "/pub\tlic", "", Reject},
		{"newline", "/public\r\nX-Injected: 1", "", Reject},
		{"del", "/pub\x7flic", "", Reject},
		{"space", "/pub lic", "", Reject},
		{"bad percent", "/a%zz", "", Reject},
		{"truncated percent", "/a%2", "", Reject},
		{"lone percent", "/a%", "", Reject},
		{"bad percent in query", "/a?b=%g0", "", Reject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, action := Path(tt.raw)
			if got != tt.want || action != tt.action {
				t.Errorf("Path(%q) = %q, %v; want %q, %v", tt.raw, got, action, tt.want, tt.action)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	tests := []struct {
		a    Action
		want string
	}{
		{Forward, "Forward"},
		{Redirect, "Redirect"},
		{Reject, "Reject"},
		{Action(7), "Action(7)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.a.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
