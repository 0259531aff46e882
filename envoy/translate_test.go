package envoy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	originalsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy"
)

func TestTranslateGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			plan := tc.plan()
			res, err := Translate(plan, Config{NodeName: "node-1"})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if err := res.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			snap, err := cachev3.NewSnapshot("1", res.ByType())
			if err != nil {
				t.Fatalf("NewSnapshot: %v", err)
			}
			if err := snap.Consistent(); err != nil {
				t.Fatalf("snapshot not consistent: %v", err)
			}
			checkGoldenJSON(t, tc.name, "plan.json", plan)
			checkGoldenResources(t, tc.name, res)
		})
	}
}

func serialise(t *testing.T, r *Resources) []byte {
	t.Helper()
	var out []byte
	opts := proto.MarshalOptions{Deterministic: true}
	for _, m := range append(append(toMessages(r.Listeners), toMessages(r.Clusters)...), toMessages(r.Routes)...) {
		b, err := opts.Marshal(m)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		out = append(out, b...)
	}
	return out
}

func toMessages[M proto.Message](ms []M) []proto.Message {
	out := make([]proto.Message, 0, len(ms))
	for _, m := range ms {
		out = append(out, m)
	}
	return out
}

func TestTranslateDeterministic(t *testing.T) {
	plans := map[string]func() *policy.Plan{"bench": func() *policy.Plan { return BenchPlan(50, 8) }}
	for _, tc := range goldenCases() {
		plans[tc.name] = tc.plan
	}
	for name, mk := range plans {
		t.Run(name, func(t *testing.T) {
			a, err := Translate(mk(), Config{})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			// The same plan with endpoints and ipcache in another order
			// must give the same bytes.
			shuffled := mk()
			rng := rand.New(rand.NewPCG(1, 2))
			rng.Shuffle(len(shuffled.Endpoints), func(i, j int) {
				shuffled.Endpoints[i], shuffled.Endpoints[j] = shuffled.Endpoints[j], shuffled.Endpoints[i]
			})
			rng.Shuffle(len(shuffled.IPCache), func(i, j int) {
				shuffled.IPCache[i], shuffled.IPCache[j] = shuffled.IPCache[j], shuffled.IPCache[i]
			})
			b, err := Translate(shuffled, Config{})
			if err != nil {
				t.Fatalf("Translate shuffled: %v", err)
			}
			if !bytes.Equal(serialise(t, a), serialise(t, b)) {
				t.Fatal("translating the same plan twice gave different bytes")
			}
		})
	}
}

func TestTranslateNames(t *testing.T) {
	res, err := Translate(goldenCases()[6].plan(), Config{})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	var got []string
	for _, l := range res.Listeners {
		got = append(got, l.GetName())
	}
	for _, c := range res.Clusters {
		got = append(got, c.GetName())
	}
	for _, r := range res.Routes {
		got = append(got, r.GetName())
	}
	want := []string{
		"moat/egress-http/15001", "moat/ingress-http/15002",
		"moat/egress/original-dst/id-400", "moat/egress/original-dst/id-402", "moat/ingress/original-dst",
		"moat/egress-http/15001/id-400", "moat/egress-http/15001/id-402", "moat/ingress-http/15002",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("names = %q, want %q", got, want)
	}
}

func TestTranslateSafeDefaults(t *testing.T) {
	res, err := Translate(goldenCases()[0].plan(), Config{AccessLogCluster: "als"})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	l := res.Listeners[0]
	if !l.GetTransparent().GetValue() {
		t.Error("listener is not transparent")
	}
	// sk_assign needs no original_dst filter; the only listener filter is
	// original_src on the ingress listener (the upstream keeps the client's
	// address), with the ingress proxy's mark.
	for _, l := range res.Listeners {
		fs := l.GetListenerFilters()
		if l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			if len(fs) != 0 {
				t.Errorf("%s: listener filters %v, want none", l.GetName(), fs)
			}
			continue
		}
		osrc := &originalsrcv3.OriginalSrc{}
		if len(fs) != 1 || fs[0].GetName() != "envoy.filters.listener.original_src" || fs[0].GetTypedConfig().UnmarshalTo(osrc) != nil {
			t.Fatalf("%s: listener filters %v, want one original_src", l.GetName(), fs)
		}
		if want, _ := policy.ProxyMark(policy.Ingress, policy.IDUnknown); osrc.GetMark() != want || osrc.GetBindPort() {
			t.Errorf("%s: original_src %v, want mark %#x and a port from the kernel", l.GetName(), osrc, want)
		}
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatalf("unpack hcm: %v", err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"normalize_path", hcm.GetNormalizePath().GetValue()},
		{"merge_slashes", hcm.GetMergeSlashes()},
		{"escaped slashes rejected (strict paths)", hcm.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_REJECT_REQUEST},
		{"underscores", hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction().String() == "REJECT_REQUEST"},
		{"codec auto", hcm.GetCodecType() == hcmv3.HttpConnectionManager_AUTO},
		{"denied body", hcm.GetLocalReplyConfig().GetMappers()[0].GetBody().GetInlineString() == "Access denied"},
		{"denied status", hcm.GetLocalReplyConfig().GetMappers()[0].GetFilter().GetStatusCodeFilter().GetComparison().GetValue().GetDefaultValue() == 403},
		{"rbac first", hcm.GetHttpFilters()[0].GetName() == "envoy.filters.http.rbac"},
		{"router last", hcm.GetHttpFilters()[len(hcm.GetHttpFilters())-1].GetName() == "envoy.filters.http.router"},
		{"access log cluster", strings.Contains(hcm.GetAccessLog()[0].GetTypedConfig().String(), "als")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not set as required", c.name)
		}
	}
}

// TestTranslatePathMode: the Envoy-exact path mode asks for Envoy's
// unescape-and-redirect; the default (strict) asks for rejection.
func TestTranslatePathMode(t *testing.T) {
	for mode, want := range map[httpnorm.Mode]hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction{
		httpnorm.ModeStrict: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		httpnorm.ModeEnvoy:  hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
	} {
		res, err := Translate(goldenCases()[0].plan(), Config{PathMode: mode})
		if err != nil {
			t.Fatalf("Translate: %v", err)
		}
		hcm := &hcmv3.HttpConnectionManager{}
		if err := res.Listeners[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
			t.Fatalf("unpack hcm: %v", err)
		}
		if got := hcm.GetPathWithEscapedSlashesAction(); got != want {
			t.Errorf("mode %v: path_with_escaped_slashes_action %v, want %v", mode, got, want)
		}
	}
	if _, err := Translate(goldenCases()[0].plan(), Config{PathMode: 9}); err == nil || !strings.Contains(err.Error(), "unknown path mode") {
		t.Errorf("Translate with path mode 9: error %v, want unknown path mode", err)
	}
}

func TestTranslateErrors(t *testing.T) {
	base := func(mod func(*policy.Plan)) func() *policy.Plan {
		return func() *policy.Plan {
			p := goldenCases()[0].plan()
			mod(p)
			return p
		}
	}
	rule := func(p *policy.Plan) *policy.HTTPRule { return p.Endpoints[0].Ingress.HTTP[0].Rules[0].Rule }
	tests := []struct {
		name string
		plan func() *policy.Plan
		cfg  Config
		want string
	}{
		{"bad path regex", base(func(p *policy.Plan) { rule(p).Path = "(" }), Config{}, `path: invalid regex "("`},
		{"bad method regex", base(func(p *policy.Plan) { rule(p).Method = "[" }), Config{}, "method: invalid regex"},
		{"bad host regex", base(func(p *policy.Plan) { rule(p).Host = "a)" }), Config{}, "host: invalid regex"},
		{"regex too large", base(func(p *policy.Plan) { rule(p).Path = "[a-z]{800}" }), Config{}, "over the limit"},
		{"host regex too large once case-insensitive", base(func(p *policy.Plan) { rule(p).Host = "[a-z]{498}" }), Config{MaxRegexProgramSize: 500}, "over the limit of 500"},
		{"bad header name", base(func(p *policy.Plan) {
			rule(p).Headers = []policy.HeaderMatch{{Name: "X Bad"}}
		}), Config{}, `headers[0]: invalid header name "X Bad"`},
		{"pseudo header", base(func(p *policy.Plan) {
			rule(p).Headers = []policy.HeaderMatch{{Name: ":path"}}
		}), Config{}, "invalid header name"},
		{"udp http", base(func(p *policy.Plan) { p.Endpoints[0].Ingress.HTTP[0].Proto = policy.ProtoUDP }), Config{}, "HTTP rules on UDP"},
		{"inverted range", base(func(p *policy.Plan) { p.Endpoints[0].Ingress.HTTP[0].Ports = policy.PortRange{From: 90, To: 80} }), Config{}, "empty port range 90-80"},
		{"shared address", base(func(p *policy.Plan) {
			e := p.Endpoints[0]
			e.Name = "twin"
			p.Endpoints = append(p.Endpoints, e)
		}), Config{}, "also belongs to default/"},
		{"endpoint twice", base(func(p *policy.Plan) { p.Endpoints = append(p.Endpoints, p.Endpoints[1]) }), Config{}, "listed twice"},
		{"ipcache conflict", base(func(p *policy.Plan) {
			p.IPCache = append(p.IPCache, policy.IPCacheEntry{Prefix: pfx("10.0.0.10/32"), Identity: 999})
		}), Config{}, "has identities"},
		{"identity too large for mark", base(func(p *policy.Plan) {
			p.Endpoints[0].Egress = p.Endpoints[0].Ingress
			p.Endpoints[0].Identity = 1 << 29
			p.IPCache = nil
		}), Config{}, "28-bit limit"},
		{"same ports", base(func(*policy.Plan) {}), Config{EgressHTTPPort: 7000, IngressHTTPPort: 7000}, "both 7000"},
		{"bad listen address", base(func(*policy.Plan) {}), Config{ListenAddresses: []netip.Addr{{}}}, "invalid listen address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Translate(tc.plan(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Translate error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestTranslateNoHTTP(t *testing.T) {
	tests := []struct {
		name string
		plan *policy.Plan
	}{
		{"nil plan", nil},
		{"no endpoints", &policy.Plan{}},
		{"L4 only", &policy.Plan{Endpoints: []policy.EndpointPlan{ep("a", idApp1, "10.0.1.1")}}},
		{"no addresses", &policy.Plan{Endpoints: []policy.EndpointPlan{{Name: "a", Identity: idApp1, Ingress: policy.DirectionPlan{HTTP: []policy.HTTPRuleSet{{Ports: port(80)}}}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Translate(tc.plan, Config{})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if n := len(res.Listeners) + len(res.Clusters) + len(res.Routes); n != 0 {
				t.Fatalf("got %d resources, want none", n)
			}
			if err := res.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateCatchesDanglingReferences(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Resources)
		want string
	}{
		{"missing route", func(r *Resources) { r.Routes = r.Routes[1:] }, "missing route configuration"},
		{"missing cluster", func(r *Resources) { r.Clusters = r.Clusters[1:] }, "missing cluster"},
		{"duplicate cluster", func(r *Resources) { r.Clusters = append(r.Clusters, r.Clusters[0]) }, "defined twice"},
		{"invalid resource", func(r *Resources) { r.Clusters[0].ConnectTimeout.Seconds = -1 }, "ConnectTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Translate(goldenCases()[6].plan(), Config{})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			tc.mod(res)
			if err := res.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestBenchPlanTranslates(t *testing.T) {
	plan := BenchPlan(40, 12)
	if len(plan.Endpoints) != 40 || len(plan.Endpoints[0].Ingress.HTTP[0].Rules) != 12 {
		t.Fatalf("BenchPlan shape: %d endpoints, %d rules", len(plan.Endpoints), len(plan.Endpoints[0].Ingress.HTTP[0].Rules))
	}
	res, err := Translate(plan, Config{})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := res.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	byType := res.ByType()
	if n := len(byType[resource.ListenerType]); n != 2 {
		t.Errorf("%d listeners, want 2", n)
	}
	if n := len(byType[resource.ClusterType]); n != 4+1 {
		t.Errorf("%d clusters, want one per egress identity (4) and one ingress", n)
	}
	if n := len(byType[resource.RouteType]); n != 4+1 {
		t.Errorf("%d route configurations, want 5", n)
	}
}

// TestTranslateGoldenEgressKeepSource: with EgressKeepSource the egress
// listener carries original_src without a mark of its own (the clusters'
// SO_MARK keeps the client's identity), like the ingress listener's but for
// the mark; the ingress listener is unchanged, and the default config puts
// no listener filter on the egress listener.
func TestTranslateGoldenEgressKeepSource(t *testing.T) {
	plan := goldenCases()[egressCaseIndex(t)].plan()
	res, err := Translate(plan, Config{NodeName: "node-1", EgressKeepSource: true})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := res.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	checkGoldenResources(t, "ingress-and-egress-keep-source", res)

	filters := func(r *Resources, d policy.Direction) []string {
		for _, l := range r.Listeners {
			if l.GetName() == ListenerName(d, Config{}.WithDefaults().port(d)) {
				var out []string
				for _, f := range l.GetListenerFilters() {
					osrc := &originalsrcv3.OriginalSrc{}
					if err := f.GetTypedConfig().UnmarshalTo(osrc); err != nil {
						t.Fatalf("unpack %s: %v", f.GetName(), err)
					}
					out = append(out, fmt.Sprintf("%s mark=%#x", f.GetName(), osrc.GetMark()))
				}
				return out
			}
		}
		t.Fatalf("no %v listener", d)
		return nil
	}
	if got, want := filters(res, policy.Egress), []string{originalSrcFilterName + " mark=0x0"}; !slices.Equal(got, want) {
		t.Errorf("egress listener filters %v, want %v", got, want)
	}
	if got, want := filters(res, policy.Ingress), []string{originalSrcFilterName + " mark=0xa00"}; !slices.Equal(got, want) {
		t.Errorf("ingress listener filters %v, want %v", got, want)
	}
	def, err := Translate(plan, Config{NodeName: "node-1"})
	if err != nil {
		t.Fatalf("Translate (default): %v", err)
	}
	if got := filters(def, policy.Egress); len(got) != 0 {
		t.Errorf("default egress listener filters %v, want none", got)
	}
}

func egressCaseIndex(t *testing.T) int {
	for i, c := range goldenCases() {
		if c.name == "ingress-and-egress" {
			return i
		}
	}
	t.Fatal("no ingress-and-egress golden case")
	return 0
}
