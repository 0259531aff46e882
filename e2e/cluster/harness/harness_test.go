package harness

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"sigs.k8s.io/yaml"
)

func TestImageBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Ref:        "localhost/moat/test:1",
		Files:      append(Binaries("/usr/bin", bin), File{Path: "/etc/app/conf", Data: []byte("x=1\n")}, File{Path: "/bin/t", Link: "/usr/bin/tool"}),
		Entrypoint: []string{"/usr/bin/tool"},
		Cmd:        []string{"serve"},
		User:       "65535:65535",
	}
	digest := func(out string) string {
		t.Helper()
		if err := img.Build(out); err != nil {
			t.Fatal(err)
		}
		im, err := tarball.ImageFromPath(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := im.Digest()
		if err != nil {
			t.Fatal(err)
		}
		cf, err := im.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(cf.Config.Entrypoint, " "); got != "/usr/bin/tool" {
			t.Errorf("entrypoint %q", got)
		}
		if cf.Config.User != "65535:65535" || cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("config %+v", cf)
		}
		if !cf.Created.Time.Equal(epoch) {
			t.Errorf("created %v, want %v", cf.Created, epoch)
		}
		return d.String()
	}
	a := digest(filepath.Join(dir, "a.tar"))
	b := digest(filepath.Join(dir, "b.tar"))
	if a != b {
		t.Fatalf("same inputs, different digests: %s vs %s", a, b)
	}
	img.Cmd = []string{"other"}
	if c := digest(filepath.Join(dir, "c.tar")); c == a {
		t.Fatal("different config, same digest")
	}
}

func TestImageRejectsBadFiles(t *testing.T) {
	for name, files := range map[string][]File{
		"duplicate": {{Path: "/a", Data: []byte("1")}, {Path: "a", Data: []byte("2")}},
		"root":      {{Path: "/", Dir: true}},
		"missing":   {{Path: "/x", Src: "/nonexistent/file"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := Image{Ref: "localhost/x:1", Files: files}.Build(filepath.Join(t.TempDir(), "x.tar"))
			if err == nil {
				t.Fatal("built an image from bad files")
			}
		})
	}
}

func TestDefaultCNIConfList(t *testing.T) {
	c := Config{StateDir: "/var/run/moat-cluster"}
	var out bytes.Buffer
	tmpl := template.Must(template.New("").Option("missingkey=error").Parse(DefaultCNIConfList))
	if err := tmpl.Execute(&out, c.nodeData(2)); err != nil {
		t.Fatal(err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type string `json:"type"`
			IPAM struct {
				Ranges  [][]struct{ Subnet string } `json:"ranges"`
				DataDir string                      `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(out.Bytes(), &conf); err != nil {
		t.Fatalf("rendered conflist is not JSON: %v\n%s", err, out.String())
	}
	if conf.Plugins[0].Type != "bridge" || conf.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.244.1.0/24" ||
		conf.Plugins[0].IPAM.DataDir != "/var/run/moat-cluster/mc-node2/ipam" {
		t.Fatalf("conflist %+v", conf)
	}
}

func TestKubeletConfigIsYAML(t *testing.T) {
	c := Config{StateDir: "/var/run/moat-cluster"}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(c.kubeletConfig(1)), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"cgroupRoot": "/mc-node1", "failCgroupV1": false, "cgroupDriver": "cgroupfs",
		"resolvConf": "/var/run/moat-cluster/etc/pod-resolv.conf"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if dns, _ := m["clusterDNS"].([]any); len(dns) != 1 || dns[0] != ClusterDNS {
		t.Errorf("clusterDNS %v", m["clusterDNS"])
	}
	var docs []map[string]any
	for _, d := range strings.Split(c.WithDefaults().coreDNSManifest(), "\n---\n") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(d), &doc); err != nil {
			t.Fatalf("coredns manifest: %v\n%s", err, d)
		}
		docs = append(docs, doc)
	}
	if len(docs) != 6 {
		t.Fatalf("coredns manifest has %d documents, want 6", len(docs))
	}
	cm := docs[3]["data"].(map[string]any)["Corefile"].(string)
	if strings.TrimSpace(cm) != strings.TrimSpace(Corefile) {
		t.Errorf("ConfigMap Corefile differs from Corefile:\n%s", cm)
	}
}

func TestValidate(t *testing.T) {
	bins := t.TempDir()
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
		"kubectl", "kubelet", "kube-proxy", "agnhost", "coredns", "pause"} {
		if err := os.WriteFile(filepath.Join(bins, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ok := Config{BinDir: bins}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"relative state":   {func(c *Config) { c.StateDir = "run" }, "absolute"},
		"shallow state":    {func(c *Config) { c.StateDir = "/var" }, "too close"},
		"zero nodes":       {func(c *Config) { c.Nodes = -1 }, "nodes -1"},
		"five nodes":       {func(c *Config) { c.Nodes = 5 }, "nodes 5"},
		"no bins":          {func(c *Config) { c.BinDir = "" }, "bin dir"},
		"missing bin":      {func(c *Config) { c.BinDir = t.TempDir() }, "etcd missing"},
		"missing conflist": {func(c *Config) { c.CNIConfList = "/nonexistent.conflist" }, "cni conflist"},
		"missing image":    {func(c *Config) { c.ExtraImages = []string{"/nonexistent.tar"} }, "extra image"},
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mut(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestGuardRulesetNamesBridge(t *testing.T) {
	r := guardRuleset()
	for _, want := range []string{"table inet " + GuardTable, `iifname "mc-nodes" oifname != "mc-nodes" drop`, "ip daddr 172.30.0.0/24"} {
		if !strings.Contains(r, want) {
			t.Errorf("guard ruleset lacks %q:\n%s", want, r)
		}
	}
}

func TestResolvePath(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	rdir, _ := filepath.EvalSymlinks(dir)
	for in, want := range map[string]string{
		filepath.Join(dir, "link", "state"):  filepath.Join(rdir, "real", "state"),
		filepath.Join(dir, "link", "a", "b"): filepath.Join(rdir, "real", "a", "b"),
		filepath.Join(dir, "real"):           filepath.Join(rdir, "real"),
		"relative/path":                      "relative/path",
	} {
		if got := resolvePath(in); got != want {
			t.Errorf("resolvePath(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestImageKey(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "localhost/k:1", Files: Binaries("/", bin), Entrypoint: []string{"/tool"}}
	key := func(i Image) string {
		t.Helper()
		k, err := i.Key()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	a := key(img)
	if b := key(img); a != b {
		t.Fatalf("same image, keys %s and %s", a, b)
	}
	other := img
	other.Cmd = []string{"x"}
	if key(other) == a {
		t.Error("different Cmd, same key")
	}
	if err := os.WriteFile(bin, []byte("v2 longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if key(img) == a {
		t.Error("changed file, same key")
	}
	if _, err := (Image{Ref: "localhost/k:1", Files: []File{{Path: "/x", Src: filepath.Join(dir, "none")}}}).Key(); err == nil {
		t.Error("key of an image whose file is missing")
	}
}
