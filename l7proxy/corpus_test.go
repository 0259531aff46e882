package l7proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy"
)

// corpusAllowed is what the corpus plan allows: GET of these paths.
var corpusAllowed = regexp.MustCompile(`^(?:/public/.*|/health)$`)

// corpusPlan: org=empire may GET /public/.* and /health on deathstar:port,
// nothing else. The L4 entry makes the plan traceable.
func corpusPlan(port uint16) *policy.Plan {
	plan := starwarsPlan(port)
	ds := &plan.Endpoints[0]
	ref := policy.RuleRef{Policy: "CiliumNetworkPolicy default/corpus", Path: "specs[0].ingress[0]"}
	ds.Ingress.HTTP[0].Rules = []policy.HTTPAllow{
		{Remotes: []policy.ID{idEmpire}, Rule: &policy.HTTPRule{Method: "GET", Path: "/public/.*"}, From: ref},
		{Remotes: []policy.ID{idEmpire}, Rule: &policy.HTTPRule{Method: "GET", Path: "/health"}, From: ref},
	}
	ds.Ingress.Entries = []policy.Entry{{
		L4Key:   policy.L4Key{Identity: idEmpire, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: port, To: port}},
		Verdict: policy.VerdictRedirect, L7: policy.L7HTTP,
	}}
	return plan
}

// corpusCase is one raw request and the status the proxy must answer.
type corpusCase struct {
	name string
	req  string // the whole request; "H" in it is replaced by "Host: deathstar\r\n"
	want int
}

func get(target string) string { return "GET " + target + " HTTP/1.1\r\nH\r\n" }

// pathCorpus is the strict mode's corpus: requests that try to reach
// something other than GET /public/.* or /health.
var pathCorpus = []corpusCase{
	// Controls.
	{"allowed public", get("/public/x"), 200},
	{"allowed health", get("/health"), 200},
	{"allowed public with query", get("/public/x?a=/../admin&b=%2F"), 200},
	{"denied admin", get("/admin"), 403},
	{"denied method", "POST /public/x HTTP/1.1\r\nH\r\nContent-Length: 0\r\n\r\n", 403},
	{"denied lower-case method", "get /public/x HTTP/1.1\r\nH\r\n", 403},
	{"denied health prefix", get("/health/x"), 403},
	{"denied health with params", get("/health;x=1"), 403},
	{"denied upper-case path", get("/PUBLIC/x"), 403},
	{"denied public without slash", get("/public"), 403},

	// Dot segments with path parameters.
	{"dotdot semicolon", get("/public/..;/admin"), 400},
	{"dotdot params", get("/public/..;x=y/admin"), 400},
	{"encoded dotdot semicolon", get("/public/%2e%2e;/admin"), 400},
	{"encoded dotdot upper semicolon", get("/public/%2E%2E;/admin"), 400},
	{"dot semicolon", get("/public/.;/../admin"), 400},
	{"dotdot encoded semicolon", get("/public/..%3b/admin"), 400},
	{"dotdot semicolon at end", get("/public/..;"), 400},
	{"two dotdot params", get("/public/x/..;a/..;b/admin"), 400},

	// Encoded dot segments.
	{"encoded dotdot", get("/public/%2e%2e/admin"), 400},
	{"encoded dotdot mixed case", get("/public/%2E%2e/admin"), 400},
	{"half encoded dotdot", get("/public/.%2e/admin"), 400},
	{"half encoded dotdot other half", get("/public/%2e./admin"), 400},
	{"encoded dot", get("/public/%2e/x"), 400},
	{"double encoded dotdot", get("/public/%252e%252e/admin"), 400},
	{"double encoded dotdot upper", get("/public/%252E%252E/admin"), 400},
	{"double encoded by parts", get("/public/%25%32%65%25%32%65/admin"), 400},
	{"triple encoded dotdot", get("/public/%2525252e%2525252e/admin"), 400},
	{"overlong utf-8 dots", get("/public/%c0%ae%c0%ae/admin"), 400},
	{"overlong utf-8 dots 3 bytes", get("/public/%e0%80%ae%e0%80%ae/admin"), 400},
	{"raw overlong utf-8 dots", get("/public/\xc0\xae\xc0\xae/admin"), 400},
	{"fullwidth dots", get("/public/%ef%bc%8e%ef%bc%8e/admin"), 400},
	{"iis unicode escape", get("/public/%u002e%u002e/admin"), 400},
	{"triple dot", get("/public/.../admin"), 400},
	{"dotdot space", get("/public/..%20/admin"), 400},
	{"dotdot encoded nul", get("/public/..%00/admin"), 400},
	{"double encoded nul", get("/public/..%2500/admin"), 400},

	// Empty segments next to dot segments.
	{"empty before dotdot", get("/public//../admin"), 400},
	{"dot empty dotdot empty", get("/public/.//..//admin"), 400},
	{"empty after dotdot", get("/public/..//admin"), 400},
	{"empty far before dotdot", get("/public//x/../../admin"), 400},
	{"leading empty before dotdot", get("//../admin"), 400},
	{"param-only segment before dotdot", get("/public/;/../admin"), 400},

	// Plain dot segments resolve before the policy sees the path.
	{"dotdot out of public", get("/public/../admin"), 403},
	{"leading dot", get("/./public/../admin"), 403},
	{"dotdot above root", get("/../../admin"), 403},
	{"dotdot to public", get("/admin/../public/x"), 200},
	{"dot at end", get("/public/."), 200},
	{"dotdot at end", get("/public/.."), 403},
	{"params before dotdot", get("/public;x/../admin"), 403},
	{"encoded question mark before dotdot", get("/public/x%3F/../../admin"), 403},
	{"encoded hash before dotdot", get("/public/x%23/../../admin"), 403},
	{"unreserved escapes", get("/%70ublic/%78"), 200},
	{"double slash merged", get("//public//x"), 200},

	// Slashes and backslashes.
	{"escaped slash", get("/public%2F..%2Fadmin"), 400},
	{"escaped slash lower", get("/public/x%2f..%2f..%2fadmin"), 400},
	{"escaped backslash", get("/public%5C..%5Cadmin"), 400},
	{"escaped backslash lower", get("/public/x%5c..%5c..%5cadmin"), 400},
	{"raw backslash", get("/public\\..\\admin"), 400},
	{"raw backslash dotdot", get("/public/x\\..\\..\\admin"), 400},
	{"double encoded slash", get("/public%252F..%252Fadmin"), 400},
	{"fullwidth solidus", get("/public%EF%BC%8F..%EF%BC%8Fadmin"), 400},

	// Bytes that have no business in a target.
	{"fragment", get("/public/x#/../../admin"), 400},
	{"fragment only", get("/admin#/public/x"), 400},
	{"nul byte", get("/public/x\x00/../../admin"), 400},
	{"encoded nul", get("/public/x%00"), 400},
	{"encoded newline", get("/public/x%0d%0aX-Injected:%201"), 400},
	{"bad escape", get("/public/%zz"), 400},
	{"truncated escape", get("/public/%2"), 400},

	// Request-target forms and Host games.
	{"absolute form", "GET http://deathstar/public/x HTTP/1.1\r\nH\r\n", 400},
	{"absolute form to admin", "GET http://deathstar/admin HTTP/1.1\r\nH\r\n", 400},
	{"absolute form other host", "GET http://evil/public/x HTTP/1.1\r\nH\r\n", 400},
	{"authority form", "GET deathstar:80 HTTP/1.1\r\nH\r\n", 400},
	{"asterisk form", "OPTIONS * HTTP/1.1\r\nH\r\n", 400},
	{"relative target", get("public/x"), 400},
	{"duplicate host", "GET /public/x HTTP/1.1\r\nH\r\nHost: evil\r\n\r\n", 400},
	{"missing host", "GET /public/x HTTP/1.1\r\n\r\n", 400},
	{"http/1.0 without host", "GET /public/x HTTP/1.0\r\n\r\n", 200},
	{"host with user info", "GET /public/x HTTP/1.1\r\nHost: evil@deathstar\r\n\r\n", 400},
	{"host with path", "GET /public/x HTTP/1.1\r\nHost: deathstar/admin\r\n\r\n", 400},
	{"host with escape", "GET /public/x HTTP/1.1\r\nHost: deathst%61r\r\n\r\n", 400},
	{"host with space", "GET /public/x HTTP/1.1\r\nHost: death star\r\n\r\n", 400},
	{"host with nul", "GET /public/x HTTP/1.1\r\nHost: deathstar\x00\r\n\r\n", 400},
	{"host case", "GET /public/x HTTP/1.1\r\nHost: DEATHSTAR\r\n\r\n", 200},
	{"host with port", "GET /public/x HTTP/1.1\r\nHost: deathstar:80\r\n\r\n", 200},
	{"host bad port", "GET /public/x HTTP/1.1\r\nHost: deathstar:x\r\n\r\n", 400},
	{"underscore header", "GET /public/x HTTP/1.1\r\nH\r\nX_Admin: 1\r\n\r\n", 400},
	{"header with nul", "GET /public/x HTTP/1.1\r\nH\r\nX-A: a\x00b\r\n\r\n", 400},
	{"obs-fold header", "GET /public/x HTTP/1.1\r\nH\r\nX-A: a\r\n b\r\n\r\n", 400},
	{"space before colon", "GET /public/x HTTP/1.1\r\nH\r\nX-A : a\r\n\r\n", 400},
	{"tab in request line", "GET\t/admin HTTP/1.1\r\nH\r\n", 400},
	{"bare LF request", "GET /public/x HTTP/1.1\nHost: deathstar\n\n", 200},
	{"bare LF to admin", "GET /admin HTTP/1.1\nHost: deathstar\n\n", 403},
	{"http/0.9 style", "GET /admin\r\n\r\n", 400},
	{"unknown version", "GET /public/x HTTP/2.0\r\nH\r\n", 505},

	// Framing.
	{"te and cl", "GET /public/x HTTP/1.1\r\nH\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"duplicate cl", "GET /public/x HTTP/1.1\r\nH\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
	{"cl list", "GET /public/x HTTP/1.1\r\nH\r\nContent-Length: 1, 1\r\n\r\nx", 400},
	{"cl sign", "GET /public/x HTTP/1.1\r\nH\r\nContent-Length: +1\r\n\r\nx", 400},
	{"te not chunked", "GET /public/x HTTP/1.1\r\nH\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
	{"te chunked twice", "GET /public/x HTTP/1.1\r\nH\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501},
	{"te with space", "GET /public/x HTTP/1.1\r\nH\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
	{"connect", "CONNECT deathstar:80 HTTP/1.1\r\nH\r\n", 403},
	{"upgrade", "GET /public/x HTTP/1.1\r\nH\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 403},
}

// TestPathCorpus runs the corpus against a real l7proxy listener with a
// real upstream that records what it receives. Each request gets the
// expected status, the upstream never receives a request the policy does
// not allow (under any common reading of the target: decoded once or
// twice, path parameters stripped, backslashes as slashes, dot segments
// resolved), and `moat policy trace` answers what the proxy answered.
func TestPathCorpus(t *testing.T) {
	e := newEnv(t)
	plan := corpusPlan(e.upstream.Port())
	e.setPlan(plan)
	e.waitACK()
	for _, tc := range pathCorpus {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(tc.req, "H\r\n", "Host: deathstar\r\n", 1)
			if !strings.HasSuffix(raw, "\r\n\r\n") && !strings.Contains(raw, "\r\n\r\n") && !strings.Contains(raw, "\n\n") {
				raw += "\r\n"
			}
			before := e.seen.count()
			status, body := e.rawStatus(tiefighterIP, raw)
			if status != tc.want {
				t.Errorf("status %d (%q), want %d", status, body, tc.want)
			}
			for _, r := range e.seen.since(before) {
				if !corpusAllows(r.method, r.target) {
					t.Errorf("upstream received %s %q, which the policy does not allow under every reading", r.method, r.target)
				}
			}
			if tc.want == 200 && len(e.seen.since(before)) == 0 {
				t.Errorf("an allowed request did not reach the upstream")
			}
			checkTrace(t, plan, raw, status)
		})
	}
}

// checkTrace compares the proxy's status with trace's answer, for requests
// that net/http reads (others never reach the connection manager).
func checkTrace(t *testing.T, plan *policy.Plan, raw string, status int) {
	t.Helper()
	lower := strings.ToLower(raw)
	if strings.Count(lower, "content-length") > 1 || strings.Contains(lower, "content-length") && strings.Contains(lower, "transfer-encoding") ||
		strings.Contains(raw, "\r\n ") {
		return // the frame guard answered
	}
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil || status == http.StatusNotImplemented || status == http.StatusHTTPVersionNotSupported ||
		len(req.Header["Host"]) > 1 || req.ProtoAtLeast(1, 1) && req.Host == "" {
		return // net/http answered; trace models the connection manager
	}
	h := &policy.TraceHTTP{Method: req.Method, Path: req.RequestURI, Host: req.Host, Headers: map[string]string{}}
	for k, vs := range req.Header {
		h.Headers[k] = strings.Join(vs, ",")
	}
	res := policy.Trace(plan, policy.TraceRequest{
		From: policy.TracePeer{Namespace: "default", Name: "tiefighter"}, To: policy.TracePeer{Namespace: "default", Name: "deathstar"},
		Proto: policy.ProtoTCP, Port: plan.Endpoints[0].Ingress.HTTP[0].Ports.From, HTTP: h,
	})
	want := 200
	if !res.Allowed() {
		want = 0
		if n := len(res.Steps); n > 0 && res.Steps[n-1].HTTP != nil {
			want = res.Steps[n-1].HTTP.Status
		}
	}
	if want != status {
		t.Errorf("trace answers %d, the proxy %d:\n%s", want, status, res)
	}
}

// corpusAllows reports whether every common reading of a received request
// is allowed by the corpus policy.
func corpusAllows(method, target string) bool {
	if method != "GET" {
		return false
	}
	p, _, _ := strings.Cut(target, "?")
	readings := []string{p}
	if d, err := url.PathUnescape(p); err == nil {
		readings = append(readings, d)
		if d2, err := url.PathUnescape(d); err == nil {
			readings = append(readings, d2)
		}
	}
	for _, r := range append([]string(nil), readings...) {
		readings = append(readings, strings.ReplaceAll(r, "\\", "/"), stripParams(r))
	}
	for _, r := range readings {
		if !corpusAllowed.MatchString(r) || !corpusAllowed.MatchString(resolveDots(r)) {
			return false
		}
	}
	return true
}

// stripParams removes ";..." from each segment, as Tomcat and Jetty do.
func stripParams(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return strings.Join(segs, "/")
}

// resolveDots removes dot segments (RFC 3986 5.2.4) without merging
// slashes, keeping a trailing slash.
func resolveDots(p string) string {
	segs := strings.Split(p, "/")
	var out []string
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return strings.Join(out, "/")
}

// rawStatus sends a raw request from src and returns the status and body;
// a connection the proxy closes without an answer is status 0.
func (e *env) rawStatus(src netip.Addr, req string) (int, string) {
	e.t.Helper()
	c := e.dial(src)
	if _, err := io.WriteString(c, req); err != nil {
		return 0, err.Error()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestPathCorpusEnvoyMode: in Envoy's exact mode the escaped slash is
// redirected (and trace says so), and a dot-dot with parameters passes as
// Envoy passes it: the reason strict mode is the default.
func TestPathCorpusEnvoyMode(t *testing.T) {
	e := newEnv(t)
	e.ecfg.PathMode = httpnorm.ModeEnvoy
	plan := corpusPlan(e.upstream.Port())
	e.setPlan(plan)
	e.waitACK()
	for _, tc := range []corpusCase{
		{"escaped slash redirected", get("/public%2Fx"), 307},
		{"dotdot semicolon passes as Envoy passes it", get("/public/..;/admin"), 200},
		{"encoded dotdot resolved", get("/public/%2e%2e/admin"), 403},
		{"empty before dotdot: dots first", get("/public//../x"), 200},
		{"backslash as slash", get("/public\\..\\admin"), 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(tc.req, "H\r\n", "Host: deathstar\r\n\r\n", 1)
			status, body := e.rawStatus(tiefighterIP, raw)
			if status != tc.want {
				t.Errorf("status %d (%q), want %d", status, body, tc.want)
			}
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatal(err)
			}
			res := policy.Trace(plan, policy.TraceRequest{
				From: policy.TracePeer{Namespace: "default", Name: "tiefighter"}, To: policy.TracePeer{Namespace: "default", Name: "deathstar"},
				Proto: policy.ProtoTCP, Port: e.upstream.Port(),
				HTTP: &policy.TraceHTTP{Method: req.Method, Path: req.RequestURI, Host: req.Host, PathMode: "envoy"},
			})
			got := 200
			if !res.Allowed() {
				got = res.Steps[len(res.Steps)-1].HTTP.Status
			}
			if got != status {
				t.Errorf("trace answers %d, the proxy %d:\n%s", got, status, res)
			}
		})
	}
}

// TestPathCorpusPipelined: requests pipelined on one connection are each
// judged on their own; an ambiguous one is refused and closes the
// connection, so nothing after it reaches the upstream.
func TestPathCorpusPipelined(t *testing.T) {
	e := newEnv(t)
	e.setPlan(corpusPlan(e.upstream.Port()))
	e.waitACK()
	c := e.dial(tiefighterIP)
	before := e.seen.count()
	reqs := "GET /public/one HTTP/1.1\r\nHost: deathstar\r\n\r\n" +
		"GET /admin/two HTTP/1.1\r\nHost: deathstar\r\n\r\n" +
		"GET /public/..;/admin/three HTTP/1.1\r\nHost: deathstar\r\n\r\n" +
		"GET /public/four HTTP/1.1\r\nHost: deathstar\r\n\r\n"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	expectStatuses(t, br, 200, 403, 400)
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("a response after the 400: the connection should have closed")
	}
	seen := e.seen.since(before)
	if len(seen) != 1 || seen[0].target != "/public/one" {
		t.Errorf("upstream received %+v, want only /public/one", seen)
	}
}
