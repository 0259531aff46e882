package cni_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/moatnet/moat/cni"
)

func TestParseConf(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		code       uint
		msg        string
	}{
		{"bad json", `{"cniVersion":`, types.ErrDecodingFailure, "parse moat-cni network config"},
		{"bad timeout", `{"cniVersion":"1.1.0","name":"moat","type":"moat-cni","timeout":"soon"}`, types.ErrInvalidNetworkConfig, "timeout"},
		{"negative timeout", `{"cniVersion":"1.1.0","name":"moat","type":"moat-cni","timeout":"-1s"}`, types.ErrInvalidNetworkConfig, "timeout"},
		{"bad prevResult", `{"cniVersion":"1.1.0","name":"moat","type":"moat-cni","prevResult":{"ips":"x"}}`, types.ErrDecodingFailure, "prevResult"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cni.ParseConf([]byte(tc.conf))
			te, ok := err.(*types.Error)
			if !ok {
				t.Fatalf("err %v (%T), want *types.Error", err, err)
			}
			if te.Code != tc.code || !strings.Contains(te.Msg, tc.msg) {
				t.Fatalf("error %d %q, want code %d naming %q", te.Code, te.Msg, tc.code, tc.msg)
			}
		})
	}
	c, err := cni.ParseConf([]byte(`{"cniVersion":"1.1.0","name":"moat","type":"moat-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != cni.DefaultSocket {
		t.Fatalf("socket %q, want the default %q", c.Socket, cni.DefaultSocket)
	}
}

func TestParseArgs(t *testing.T) {
	ns, name, uid, err := cni.ParseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1")
	if err != nil || ns != "shop" || name != "web-0" || uid != "u-1" {
		t.Fatalf("got %q %q %q %v", ns, name, uid, err)
	}
	if _, _, _, err := cni.ParseArgs("K8S_POD_NAME"); err == nil || !strings.Contains(err.Error(), "KEY=VALUE") {
		t.Fatalf("malformed CNI_ARGS: %v", err)
	}
}

// TestAddRequiresPodArgs: ADD without the pod's namespace and name fails
// before it talks to the agent, naming CNI_ARGS.
func TestAddRequiresPodArgs(t *testing.T) {
	err := cni.Add(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/x",
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"moat","type":"moat-cni","socket":"/nonexistent/agent.sock"}`)})
	te, ok := err.(*types.Error)
	if !ok || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Details, "K8S_POD_NAMESPACE") {
		t.Fatalf("err %#v, want code 4 naming K8S_POD_NAMESPACE", err)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// plugin builds moat-cni once.
func plugin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moat-cni-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "moat-cni")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/moatnet/moat/cmd/moat-cni").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build moat-cni: %v", buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// run execs the plugin as a runtime does; it returns stdout and the exit
// status.
func run(t *testing.T, env map[string]string, stdin string) (*types.Error, []byte) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), plugin(t))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	if err == nil {
		return nil, out.Bytes()
	}
	var te types.Error
	if jerr := json.Unmarshal(out.Bytes(), &te); jerr != nil {
		t.Fatalf("plugin failed (%v) without a CNI error on stdout: %q", err, out.String())
	}
	return &te, out.Bytes()
}

// TestPluginBinaryErrors: the built plugin, exec'd as a runtime does,
// answers bad input and an absent agent with CNI errors that say what is
// wrong.
func TestPluginBinaryErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock") // nothing listens
	conf := `{"cniVersion":"1.1.0","name":"moat","type":"moat-cni","socket":"` + sock + `","timeout":"2s"}`
	env := func(cmd string) map[string]string {
		return map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/none",
			"CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web"}
	}
	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
		says  string
	}{
		{"add, agent down", env("ADD"), conf, types.ErrTryAgainLater, sock},
		{"del, agent down", env("DEL"), conf, types.ErrTryAgainLater, sock},
		{"status, agent down", env("STATUS"), conf, types.ErrPluginNotAvailable, sock},
		{"gc, agent down", env("GC"), conf, types.ErrTryAgainLater, sock},
		{"unknown cniVersion", env("ADD"), strings.Replace(conf, "1.1.0", "9.9.9", 1), types.ErrIncompatibleCNIVersion, "incompatible CNI versions"},
		{"old cniVersion", env("ADD"), strings.Replace(conf, "1.1.0", "0.4.0", 1), types.ErrIncompatibleCNIVersion, "incompatible CNI versions"},
		{"bad json", env("ADD"), `{"cniVersion": "1.1.0", `, types.ErrDecodingFailure, ""},
		{"missing CNI_CONTAINERID", func() map[string]string { e := env("ADD"); delete(e, "CNI_CONTAINERID"); return e }(), conf, types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID"},
		{"missing pod args", func() map[string]string { e := env("ADD"); e["CNI_ARGS"] = "IgnoreUnknown=1"; return e }(), conf, types.ErrInvalidEnvironmentVariables, "K8S_POD_NAME"},
		{"unknown command", env("FROB"), conf, types.ErrInvalidEnvironmentVariables, "FROB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te, out := run(t, tc.env, tc.stdin)
			if te == nil {
				t.Fatalf("plugin succeeded: %s", out)
			}
			all := te.Msg + " " + te.Details
			if te.Code != tc.code || !strings.Contains(all, tc.says) {
				t.Fatalf("error code %d %q, want code %d saying %q", te.Code, all, tc.code, tc.says)
			}
		})
	}
	// VERSION works without an agent and lists 1.0.0 and 1.1.0.
	te, out := run(t, map[string]string{"CNI_COMMAND": "VERSION"}, `{"cniVersion":"1.1.0"}`)
	if te != nil || !bytes.Contains(out, []byte(`"1.1.0"`)) || !bytes.Contains(out, []byte(`"1.0.0"`)) {
		t.Fatalf("VERSION: %v %s", te, out)
	}
}
