package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestConfigValidateCNI(t *testing.T) {
	kube := Config{Kubeconfig: "/k", CNI: true, NodeRoutes: true, CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d"}.WithDefaults()
	if err := kube.Validate(); err != nil {
		t.Fatalf("kubernetes mode with moat-cni: %v", err)
	}
	if kube.CNIConfName != DefaultCNIConfName || time.Duration(kube.CNIPodWait) != DefaultCNIPodWait {
		t.Fatalf("defaults: %q %s", kube.CNIConfName, time.Duration(kube.CNIPodWait))
	}
	standalone := Config{Policies: "/p", Endpoints: "/e"}.WithDefaults()
	for _, tc := range []struct {
		name string
		base Config
		mod  func(*Config)
		want string
	}{
		{"cni in standalone mode", standalone, func(c *Config) { c.CNI = true }, "cni: only in Kubernetes mode"},
		{"node routes in standalone mode", standalone, func(c *Config) { c.NodeRoutes = true }, "nodeRoutes: only in Kubernetes mode"},
		{"bad pod cidr", kube, func(c *Config) { c.CNIPodCIDR = "10.0.0.0/33" }, `cniPodCIDR: "10.0.0.0/33"`},
		{"ipv6 pod cidr", kube, func(c *Config) { c.CNIPodCIDR = "fd00::/64" }, "want an IPv4 prefix"},
		{"tiny pod cidr", kube, func(c *Config) { c.CNIPodCIDR = "10.0.0.0/31" }, "want /30 or larger"},
		{"short wait", kube, func(c *Config) { c.CNIPodWait = Duration(time.Millisecond) }, "cniPodWait:"},
		{"bin dir without conf dir", kube, func(c *Config) { c.CNIConfDir = "" }, "cniConfDir: cniBinDir and cniConfDir go together"},
		{"relative conf dir", kube, func(c *Config) { c.CNIConfDir = "net.d" }, `cniConfDir: "net.d" is not an absolute path`},
		{"install without cni", kube, func(c *Config) { c.CNI = false }, "cniBinDir: installing moat-cni needs cni: true"},
		{"bad conf name", kube, func(c *Config) { c.CNIConfName = "moat.conf" }, `cniConfName: "moat.conf"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.base
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestCNIAPIWithoutCNI: an agent that is not the node's CNI answers
// moat-cni with a CNI error that says so (code 50), not a bare 404.
func TestCNIAPIWithoutCNI(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "n"}.WithDefaults()}
	mux := http.NewServeMux()
	a.registerCNIAPI(mux)
	for _, path := range []string{"/v1/cni/status", "/v1/cni/add"} {
		rec := httptest.NewRecorder()
		method := http.MethodGet
		if path != "/v1/cni/status" {
			method = http.MethodPost
		}
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader("{}")))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"code":50`) || !strings.Contains(rec.Body.String(), "--cni") {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body.String())
		}
	}
}
