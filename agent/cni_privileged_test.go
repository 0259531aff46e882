package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/internal/netns"
	"github.com/moatnet/moat/internal/testutil"
)

// cniHarness is one node: a real agent (in-process, real kernel, Kubernetes
// mode against a real apiserver) and the built moat-cni, exec'd as a
// container runtime does against netns the test makes.
type cniHarness struct {
	t      *testing.T
	cl     *k8stest.Cluster
	cs     kubernetes.Interface
	plugin string
	cfg    Config
	dir    string
	sfx    string
	a      *Agent
	stop   func()
	pods   map[string]string // pod name → uid
	// routesNetns receives the agent's node routes.
	routesNetns string
	// sandboxNetns overrides the pod's netns for a container ID.
	sandboxNetns map[string]string
}

const cniNode = "cni-node-1"

func buildCNIPlugin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "moat-cni")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/moatnet/moat/cmd/moat-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("build moat-cni: %v: %s", err, b)
	}
	return out
}

func freeTCPPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func newCNIHarness(t *testing.T, podCIDR string) *cniHarness {
	t.Helper()
	testutil.Privileged(t)
	_, err := exec.LookPath("ip")
	testutil.Require(t, "iproute2 (ip), to make the runtime's netns", err)
	cl := k8stest.Start(t)
	cl.ApplyCRDs(t, "../charts/moat/crds")
	cs := cl.Client(t)
	h := &cniHarness{t: t, cl: cl, cs: cs, plugin: buildCNIPlugin(t), dir: t.TempDir(), sfx: randHex(t), pods: map[string]string{}, sandboxNetns: map[string]string{}}
	// The node's uplink, in a netns of its own: the node routes go there.
	h.routesNetns = nodeNetns(t, "mcr"+h.sfx)
	testutil.RunCmd(t, "ip", "-n", "mcr"+h.sfx, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	testutil.RunCmd(t, "ip", "-n", "mcr"+h.sfx, "link", "set", "up1", "up")
	testutil.RunCmd(t, "ip", "-n", "mcr"+h.sfx, "addr", "add", "192.168.233.1/24", "dev", "up0")
	testutil.RunCmd(t, "ip", "-n", "mcr"+h.sfx, "link", "set", "up0", "up")
	ctx := t.Context()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: cniNode},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	off := false
	h.cfg = Config{
		Kubeconfig: cl.Kubeconfig, NodeName: cniNode,
		StateDir: filepath.Join(h.dir, "state"), RunDir: filepath.Join(h.dir, "run"),
		PollInterval: Duration(50 * time.Millisecond), Proxy: ProxyExternal,
		BPFRoot: "/sys/fs/bpf/moat-cnitest-" + h.sfx, NetnsPrefix: "mc" + h.sfx + "-",
		TCPHealth: &off, CNI: true, CNIPodWait: Duration(20 * time.Second),
		CNIBinDir: filepath.Join(h.dir, "bin"), CNIConfDir: filepath.Join(h.dir, "net.d"), CNIPluginBinary: h.plugin,
		NodeRoutes:     true,
		EgressHTTPPort: freeTCPPort(t), IngressHTTPPort: freeTCPPort(t), DNSProxyPort: freeTCPPort(t),
	}
	t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
		}
		if err := datapath.CleanupWith(datapath.Config{PinRoot: h.cfg.BPFRoot}, datapath.CleanupOptions{KeepTCFilters: true}); err != nil {
			t.Errorf("clean up pins: %v", err)
		}
	})
	return h
}

// start runs the agent until stop (or the test's end).
func (h *cniHarness) start() {
	t := h.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	a, err := New(h.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	a.lockDir = filepath.Join(h.dir, "lock")
	a.nodeRoutesNetns = h.routesNetns
	h.a = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("agent did not stop")
			}
		})
	}
	// Ready: STATUS passes.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, terr := h.exec("STATUS", "", "", "", nil); terr == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v", terr)
		}
		select {
		case err := <-done:
			t.Fatalf("agent exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pod creates a Pod object bound to the node and a netns for its sandbox.
func (h *cniHarness) pod(name string, labels map[string]string) string {
	t := h.t
	t.Helper()
	p, err := h.cs.CoreV1().Pods("shop").Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels},
		Spec:       corev1.PodSpec{NodeName: cniNode, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.pods[name] = string(p.UID)
	return nodeNetns(t, h.netnsName(name))
}

func (h *cniHarness) netnsName(pod string) string { return "mc" + h.sfx + "-" + pod }
func (h *cniHarness) netns(pod string) string     { return "/var/run/netns/" + h.netnsName(pod) }
func (h *cniHarness) sock() string                { return filepath.Join(h.cfg.RunDir, APISocket) }

func (h *cniHarness) conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"moat","type":"moat-cni","socket":"` + h.sock() + `"` + extra + `}`)
}

// exec runs moat-cni with a runtime's environment for pod (sandbox
// containerID) and returns stdout, or the CNI error it printed.
func (h *cniHarness) exec(cmd, containerID, pod, uid string, stdin []byte) ([]byte, *types.Error) {
	h.t.Helper()
	if stdin == nil {
		stdin = h.conf("")
	}
	c := exec.CommandContext(h.t.Context(), h.plugin)
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_PATH=" + filepath.Dir(h.plugin)}
	if containerID != "" {
		nsPath := h.netns(pod)
		if p, ok := h.sandboxNetns[containerID]; ok {
			nsPath = p
		}
		c.Env = append(c.Env, "CNI_CONTAINERID="+containerID, "CNI_IFNAME=eth0", "CNI_NETNS="+nsPath,
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME="+pod+";K8S_POD_UID="+uid)
	}
	c.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		var te types.Error
		if jerr := json.Unmarshal(out.Bytes(), &te); jerr != nil {
			h.t.Fatalf("moat-cni %s: %v without a CNI error: stdout %q stderr %q", cmd, err, out.String(), errb.String())
		}
		return out.Bytes(), &te
	}
	return out.Bytes(), nil
}

// add runs ADD for pod and returns the validated result.
func (h *cniHarness) add(pod string) (*types100.Result, string) {
	h.t.Helper()
	cid := "sandbox-" + pod + "-" + h.sfx
	start := time.Now()
	out, terr := h.exec("ADD", cid, pod, h.pods[pod], nil)
	if terr != nil {
		h.t.Fatalf("ADD %s: %d %s: %s", pod, terr.Code, terr.Msg, terr.Details)
	}
	h.t.Logf("ADD %s: %s (exec of moat-cni to an enforced pod)", pod, time.Since(start).Round(time.Millisecond))
	return h.parseResult(pod, out), cid
}

// parseResult validates an ADD result with the CNI library's types.
func (h *cniHarness) parseResult(pod string, out []byte) *types100.Result {
	t := h.t
	t.Helper()
	generic, err := version.NewResult("1.1.0", out)
	if err != nil {
		t.Fatalf("ADD %s result does not parse as a 1.1.0 result: %v: %s", pod, err, out)
	}
	res, err := types100.GetResult(generic)
	if err != nil {
		t.Fatal(err)
	}
	if res.CNIVersion != "1.1.0" || len(res.Interfaces) != 2 || len(res.IPs) != 1 || len(res.Routes) != 1 {
		t.Fatalf("ADD %s result: %s", pod, out)
	}
	ipc := res.IPs[0]
	if ipc.Interface == nil || *ipc.Interface != 1 || res.Interfaces[1].Sandbox != h.netns(pod) || res.Interfaces[1].Name != "eth0" ||
		res.Interfaces[0].Sandbox != "" || !strings.HasPrefix(res.Interfaces[0].Name, "lxc") ||
		ipc.Gateway.String() != "169.254.42.1" || ones(ipc.Address.Mask) != 32 || res.Interfaces[1].Mac == "" || res.Interfaces[0].Mac == "" {
		t.Fatalf("ADD %s result is not a routed /32 veth in the pod's netns: %s", pod, out)
	}
	return res
}

func ones(m net.IPMask) int { n, _ := m.Size(); return n }

func podAddr(res *types100.Result) netip.Addr {
	a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
	return a.Unmap()
}

// dial connects from pod's netns to dst within timeout.
func (h *cniHarness) dial(pod string, dst netip.AddrPort, timeout time.Duration) error {
	var conn net.Conn
	err := netns.Do(h.netns(pod), func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", dst.String(), timeout)
		return err
	})
	if conn != nil {
		conn.Close()
	}
	return err
}

// listen serves TCP on port in pod's netns until the test ends.
func (h *cniHarness) listen(pod string, port uint16) {
	var ln net.Listener
	if err := netns.Do(h.netns(pod), func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// planHas reports whether the agent's plan has pod with addr, and its
// ipcache addr/32.
func (h *cniHarness) planHas(pod string, addr netip.Addr) (ep, ipcache bool) {
	h.a.mu.RLock()
	defer h.a.mu.RUnlock()
	p := h.a.state.plan
	if p == nil {
		return false, false
	}
	if e := planEP(p, "shop", pod); e != nil {
		for _, a := range e.Addresses {
			ep = ep || a == addr
		}
	}
	_, ipcache = planIPCache(p)[netip.PrefixFrom(addr, 32).String()]
	return ep, ipcache
}

func (h *cniHarness) planHasPod(pod string) bool {
	h.a.mu.RLock()
	defer h.a.mu.RUnlock()
	return h.a.state.plan != nil && planEP(h.a.state.plan, "shop", pod) != nil
}

func (h *cniHarness) stateFiles() string {
	var b strings.Builder
	for _, f := range []string{ipamFile, cniAttachmentsFile} {
		data, _ := os.ReadFile(filepath.Join(h.cfg.StateDir, f))
		b.Write(data)
	}
	return b.String()
}

const cniWebPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 8080, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: quarantine, namespace: shop}
spec:
  podSelector: {matchLabels: {app: quarantined}}
  policyTypes: [Egress]
`

// firstSYN is shorter than TCP's initial retransmission timeout (1 s): a
// connection that succeeds within it got its first SYN through.
const firstSYN = 700 * time.Millisecond

// TestPrivilegedCNI drives moat-cni, exec'd as a container runtime does,
// against a real agent (real BPF, real netlink, a real apiserver with a
// Node that has a podCIDR and Pods with labels) and netns the test makes.
func TestPrivilegedCNI(t *testing.T) {
	h := newCNIHarness(t, "10.231.0.0/29") // 6 addresses: .1 to .6
	kubectlApply(t, h.cl, cniWebPolicy)
	for name, labels := range map[string]map[string]string{
		"web": {"app": "web"}, "client": {"app": "client"}, "quarantined": {"app": "quarantined"},
	} {
		h.pod(name, labels)
	}
	h.start()
	port := uint16(8080)

	webRes, webCID := h.add("web")
	web := netip.AddrPortFrom(podAddr(webRes), port)
	h.listen("web", port)

	// client's first SYN to web, right after its ADD returned, is allowed:
	// its identity is in the ipcache and web's ingress allows it.
	clientRes, clientCID := h.add("client")
	if err := h.dial("client", web, firstSYN); err != nil {
		t.Fatalf("client → web (allowed) right after ADD: %v", err)
	}
	// quarantined may send nothing (egress default deny): its first SYN,
	// to client, which allows every ingress, is dropped on its own veth.
	h.listen("client", port)
	qRes, qCID := h.add("quarantined")
	if err := h.dial("quarantined", netip.AddrPortFrom(podAddr(clientRes), port), firstSYN); err == nil {
		t.Fatal("quarantined → client connected: its egress deny was not enforced from the first packet")
	}
	if err := h.dial("web", netip.AddrPortFrom(podAddr(clientRes), port), firstSYN); err != nil {
		t.Fatalf("web → client (allowed: client has no policy): %v", err)
	}
	addrs := map[netip.Addr]string{}
	for name, r := range map[string]*types100.Result{"web": webRes, "client": clientRes, "quarantined": qRes} {
		a := podAddr(r)
		if !netip.MustParsePrefix("10.231.0.0/29").Contains(a) {
			t.Errorf("%s got %s, outside the Node's podCIDR", name, a)
		}
		if other, dup := addrs[a]; dup {
			t.Fatalf("%s and %s both got %s", name, other, a)
		}
		addrs[a] = name
	}

	t.Run("ADD twice returns the same attachment", func(t *testing.T) {
		out, terr := h.exec("ADD", webCID, "web", h.pods["web"], nil)
		if terr != nil {
			t.Fatalf("second ADD: %v", terr)
		}
		if again := h.parseResult("web", out); podAddr(again) != web.Addr() {
			t.Fatalf("second ADD gave %s, first %s", podAddr(again), web.Addr())
		}
	})

	t.Run("CHECK and STATUS", func(t *testing.T) {
		prev, _ := json.Marshal(webRes)
		if _, terr := h.exec("CHECK", webCID, "web", h.pods["web"], h.conf(`,"prevResult":`+string(prev))); terr != nil {
			t.Fatalf("CHECK web: %d %s: %s", terr.Code, terr.Msg, terr.Details)
		}
		if _, terr := h.exec("STATUS", "", "", "", nil); terr != nil {
			t.Fatalf("STATUS: %v", terr)
		}
		// Break quarantined's pod side: CHECK says what is wrong.
		testutil.RunCmd(t, "ip", "-n", h.netnsName("quarantined"), "addr", "flush", "dev", "eth0")
		prev, _ = json.Marshal(qRes)
		_, terr := h.exec("CHECK", qCID, "quarantined", h.pods["quarantined"], h.conf(`,"prevResult":`+string(prev)))
		if terr == nil || !strings.Contains(terr.Details, "missing") {
			t.Fatalf("CHECK with the pod's address gone: %v, want an error naming the missing address", terr)
		}
		_, terr = h.exec("CHECK", "no-such-sandbox", "web", h.pods["web"], h.conf(`,"prevResult":`+string(prev)))
		if terr == nil || terr.Code != 3 {
			t.Fatalf("CHECK of an unknown sandbox: %v, want code 3", terr)
		}
	})

	t.Run("a new sandbox replaces the old one; the old one's DEL leaves the new enforced", func(t *testing.T) {
		h.pod("re", map[string]string{"app": "client"})
		_, cid1 := h.add("re")
		cid2 := cid1 + "-2"
		h.sandboxNetns[cid2] = nodeNetns(t, h.netnsName("re2"))
		out, terr := h.exec("ADD", cid2, "re", h.pods["re"], nil)
		if terr != nil {
			t.Fatalf("ADD of the second sandbox: %v", terr)
		}
		var res2 types100.Result
		if err := json.Unmarshal(out, &res2); err != nil {
			t.Fatal(err)
		}
		oldIf := datapath.RuntimeHostIfname(cid1, "eth0")
		oldIdx := ifindexOf(oldIf)
		if _, terr := h.exec("DEL", cid1, "re", h.pods["re"], nil); terr != nil {
			t.Fatalf("DEL of the old sandbox: %v", terr)
		}
		newAddr := podAddr(&res2)
		if ep, ipc := h.planHas("re", newAddr); !ep || !ipc {
			t.Fatalf("after the old sandbox's DEL the new one's %s is in the plan %v, ipcache %v", newAddr, ep, ipc)
		}
		if err := netns.Do(h.sandboxNetns[cid2], func() error {
			c, err := net.DialTimeout("tcp4", web.String(), firstSYN)
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("new sandbox → web: %v", err)
		}
		if _, err := net.InterfaceByName(oldIf); err == nil {
			t.Errorf("old sandbox's veth %s still exists", oldIf)
		}
		if pins, _ := filepath.Glob(filepath.Join(h.cfg.BPFRoot, "links", fmt.Sprintf("%d-*", oldIdx))); len(pins) > 0 {
			t.Errorf("old sandbox's program links still pinned: %v", pins)
		}
		if _, terr := h.exec("DEL", cid2, "re", h.pods["re"], nil); terr != nil {
			t.Fatalf("DEL of the new sandbox: %v", terr)
		}
		if h.planHasPod("re") {
			t.Error("re still in the plan after both DELs")
		}
	})

	t.Run("ADD of a pod the API does not have times out, naming the socket", func(t *testing.T) {
		nodeNetns(t, h.netnsName("ghost"))
		_, terr := h.exec("ADD", "sandbox-ghost-"+h.sfx, "ghost", "", h.conf(`,"timeout":"1s"`))
		if terr == nil || terr.Code != types.ErrTryAgainLater || !strings.Contains(terr.Msg, h.sock()) || !strings.Contains(terr.Msg, "did not answer within 1s") {
			t.Fatalf("ADD of an unknown pod: %v, want code 11: did not answer, naming %s", terr, h.sock())
		}
		if s := h.stateFiles(); strings.Contains(s, "sandbox-ghost") {
			t.Errorf("an ADD that never found its pod left state: %s", s)
		}
		if _, terr := h.exec("DEL", "sandbox-ghost-"+h.sfx, "ghost", "", nil); terr != nil {
			t.Errorf("DEL of the unknown sandbox: %v", terr)
		}
	})

	t.Run("installed conflist, driven by libcni as a runtime does", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(h.cfg.CNIConfDir, DefaultCNIConfName))
		if err != nil {
			t.Fatalf("the agent installed no conflist: %v", err)
		}
		list, err := libcni.ConfListFromBytes(data)
		if err != nil {
			t.Fatalf("installed conflist does not parse: %v\n%s", err, data)
		}
		if _, err := os.Stat(filepath.Join(h.cfg.CNIBinDir, CNIPluginName)); err != nil {
			t.Fatalf("the agent installed no plugin: %v", err)
		}
		rt := libcni.NewCNIConfigWithCacheDir([]string{h.cfg.CNIBinDir}, filepath.Join(h.dir, "cni-cache"), nil)
		h.pod("rt", map[string]string{"app": "client"})
		rc := &libcni.RuntimeConf{ContainerID: "sandbox-rt-" + h.sfx, NetNS: h.netns("rt"), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "rt"}, {"K8S_POD_UID", h.pods["rt"]}}}
		ctx := t.Context()
		if err := rt.GetStatusNetworkList(ctx, list); err != nil {
			t.Fatalf("STATUS: %v", err)
		}
		res, err := rt.AddNetworkList(ctx, list, rc)
		if err != nil {
			t.Fatalf("ADD through libcni: %v", err)
		}
		r100, err := types100.GetResult(res)
		if err != nil || len(r100.IPs) != 1 {
			t.Fatalf("ADD result: %v %v", r100, err)
		}
		if err := h.dial("rt", web, firstSYN); err != nil {
			t.Fatalf("rt (app=client) → web right after ADD: %v", err)
		}
		if err := rt.CheckNetworkList(ctx, list, rc); err != nil {
			t.Fatalf("CHECK through libcni: %v", err)
		}
		if err := rt.DelNetworkList(ctx, list, rc); err != nil {
			t.Fatalf("DEL through libcni: %v", err)
		}
		if h.planHasPod("rt") {
			t.Error("rt still in the plan after DEL")
		}
	})

	t.Run("node routes follow the Node objects", func(t *testing.T) {
		routes := func() string {
			return strings.TrimSpace(testutil.RunCmd(t, "ip", "-n", "mcr"+h.sfx, "route", "show", "proto", "77"))
		}
		waitRoutes := func(what string, ok func(string) bool) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for !ok(routes()) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: node routes are %q", what, routes())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		n2, err := h.cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cni-node-2"},
			Spec: corev1.NodeSpec{PodCIDR: "10.233.0.0/24", PodCIDRs: []string{"10.233.0.0/24"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n2.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.233.2"}}
		if n2, err = h.cs.CoreV1().Nodes().UpdateStatus(t.Context(), n2, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRoutes("node-2 added", func(r string) bool { return strings.HasPrefix(r, "10.233.0.0/24 via 192.168.233.2 dev up0") })
		n2.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.233.3"}}
		if _, err = h.cs.CoreV1().Nodes().UpdateStatus(t.Context(), n2, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRoutes("node-2's address changed", func(r string) bool { return strings.HasPrefix(r, "10.233.0.0/24 via 192.168.233.3 dev up0") })
		if err := h.cs.CoreV1().Nodes().Delete(t.Context(), "cni-node-2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRoutes("node-2 deleted", func(r string) bool { return r == "" })
	})

	t.Run("chained after a routed-veth plugin", func(t *testing.T) {
		// A previous plugin (ptp-like) made a routed veth for the pod.
		ns := h.pod("chained", map[string]string{"app": "client"})
		hostIf := "vch" + h.sfx
		testutil.RunCmd(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", h.netnsName("chained"))
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
		for _, c := range [][]string{
			{"-n", h.netnsName("chained"), "addr", "add", "10.232.0.5/32", "dev", "eth0"},
			{"-n", h.netnsName("chained"), "link", "set", "eth0", "up"},
			{"link", "set", hostIf, "up"},
			{"-n", h.netnsName("chained"), "route", "add", "default", "via", "169.254.42.1", "dev", "eth0", "onlink"},
			{"route", "add", "10.232.0.5/32", "dev", hostIf},
		} {
			testutil.RunCmd(t, "ip", c...)
		}
		hostMAC := strings.Fields(testutil.RunCmd(t, "cat", "/sys/class/net/"+hostIf+"/address"))[0]
		prev := fmt.Sprintf(`{"cniVersion":"1.1.0","interfaces":[{"name":%q,"mac":%q},{"name":"eth0","sandbox":%q}],"ips":[{"interface":1,"address":"10.232.0.5/32"}]}`, hostIf, hostMAC, ns)
		cid := "sandbox-chained-" + h.sfx
		out, terr := h.exec("ADD", cid, "chained", h.pods["chained"], h.conf(`,"prevResult":`+prev))
		if terr != nil {
			t.Fatalf("chained ADD: %d %s: %s", terr.Code, terr.Msg, terr.Details)
		}
		generic, err := version.NewResult("1.1.0", out)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := types100.GetResult(generic)
		if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.232.0.5/32" || res.Interfaces[0].Name != hostIf {
			t.Fatalf("chained ADD must pass prevResult through: %s", out)
		}
		if ep, ipc := h.planHas("chained", netip.MustParseAddr("10.232.0.5")); !ep || !ipc {
			t.Fatalf("chained pod in the plan %v, ipcache %v", ep, ipc)
		}
		if err := h.dial("chained", web, firstSYN); err != nil {
			t.Fatalf("chained (app=client) → web right after ADD: %v", err)
		}
		if _, terr := h.exec("DEL", cid, "chained", h.pods["chained"], h.conf(`,"prevResult":`+prev)); terr != nil {
			t.Fatalf("chained DEL: %v", terr)
		}
		if h.planHasPod("chained") {
			t.Error("chained pod still in the plan after DEL")
		}
		// The previous plugin's veth stays (its DEL removes it); moat's
		// mark on it is gone.
		link := testutil.RunCmd(t, "ip", "-d", "link", "show", hostIf)
		if strings.Contains(link, "moat:") {
			t.Errorf("chained DEL left moat's alias: %s", link)
		}
	})

	t.Run("DEL leaves nothing and is idempotent", func(t *testing.T) {
		ca := podAddr(clientRes)
		host := clientRes.Interfaces[0].Name
		if ep, ipc := h.planHas("client", ca); !ep || !ipc {
			t.Fatalf("before DEL the plan has client %v, ipcache %v", ep, ipc)
		}
		for i := range 2 {
			if _, terr := h.exec("DEL", clientCID, "client", h.pods["client"], nil); terr != nil {
				t.Fatalf("DEL #%d: %d %s: %s", i+1, terr.Code, terr.Msg, terr.Details)
			}
		}
		if _, err := net.InterfaceByName(host); err == nil {
			t.Errorf("host veth %s still exists", host)
		}
		if ep, ipc := h.planHas("client", ca); ep || ipc {
			t.Errorf("after DEL the plan has client %v, ipcache %v", ep, ipc)
		}
		if routes := testutil.RunCmd(t, "ip", "route", "show", ca.String()); strings.TrimSpace(routes) != "" {
			t.Errorf("host route to %s left: %s", ca, routes)
		}
		if s := h.stateFiles(); strings.Contains(s, clientCID) || strings.Contains(s, `"`+ca.String()+`"`) {
			t.Errorf("state still names %s or %s:\n%s", clientCID, ca, s)
		}
		if out := testutil.RunCmd(t, "ip", "-n", h.netnsName("client"), "link", "show"); strings.Contains(out, "eth0") {
			t.Errorf("eth0 left in the pod's netns: %s", out)
		}
		if err := h.dial("web", netip.AddrPortFrom(ca, port), firstSYN); err == nil {
			t.Error("deleted client still answers")
		}
		delete(addrs, ca) // free again: the next pod may get it

	})

	t.Run("concurrent ADDs, exhaustion, GC", func(t *testing.T) {
		// 3 used (web, quarantined, and client's freed address is free):
		// 4 more fit in the /29.
		names := []string{"b1", "b2", "b3", "b4"}
		for _, n := range names {
			h.pod(n, map[string]string{"app": "batch"})
		}
		var wg sync.WaitGroup
		start := time.Now()
		defer func() { t.Logf("%d concurrent ADDs: %s", len(names), time.Since(start).Round(time.Millisecond)) }()
		results := make([][]byte, len(names))
		terrs := make([]*types.Error, len(names))
		for i, n := range names {
			wg.Go(func() {
				results[i], terrs[i] = h.exec("ADD", "sandbox-"+n+"-"+h.sfx, n, h.pods[n], nil)
			})
		}
		wg.Wait()
		for i, n := range names {
			if terrs[i] != nil {
				t.Fatalf("concurrent ADD %s: %d %s: %s", n, terrs[i].Code, terrs[i].Msg, terrs[i].Details)
			}
			a := podAddr(h.parseResult(n, results[i]))
			if other, dup := addrs[a]; dup {
				t.Fatalf("%s got %s, already %s's", n, a, other)
			}
			addrs[a] = n
		}
		h.pod("b5", map[string]string{"app": "batch"})
		_, terr := h.exec("ADD", "sandbox-b5-"+h.sfx, "b5", h.pods["b5"], nil)
		if terr == nil || !strings.Contains(terr.Details, "exhausted") || !strings.Contains(terr.Details, "10.231.0.0/29") {
			t.Fatalf("ADD past the pool: %v, want an exhaustion error naming the pool", terr)
		}
		if s := h.stateFiles(); strings.Contains(s, "sandbox-b5") {
			t.Errorf("failed ADD left state: %s", s)
		}
		// The runtime's valid list keeps web, quarantined and b1: b2..b4 go.
		gc := fmt.Sprintf(`,"cni.dev/valid-attachments":[{"containerID":%q,"ifname":"eth0"},{"containerID":%q,"ifname":"eth0"},{"containerID":"sandbox-b1-%s","ifname":"eth0"}]`, webCID, qCID, h.sfx)
		if _, terr := h.exec("GC", "", "", "", h.conf(gc)); terr != nil {
			t.Fatalf("GC: %d %s: %s", terr.Code, terr.Msg, terr.Details)
		}
		s := h.stateFiles()
		for _, n := range []string{"b2", "b3", "b4"} {
			if strings.Contains(s, "sandbox-"+n) {
				t.Errorf("GC left %s in the state", n)
			}
			if h.planHasPod(n) {
				t.Errorf("GC left %s in the plan", n)
			}
		}
		for _, keep := range []string{webCID, qCID, "sandbox-b1-"} {
			if !strings.Contains(s, keep) {
				t.Errorf("GC removed valid attachment %s", keep)
			}
		}
		if _, terr := h.exec("GC", "", "", "", h.conf(gc)); terr != nil {
			t.Fatalf("GC twice: %v", terr)
		}
		// b5 fits now.
		if _, terr := h.exec("ADD", "sandbox-b5-"+h.sfx, "b5", h.pods["b5"], nil); terr != nil {
			t.Fatalf("ADD after GC freed addresses: %v", terr)
		}
	})

	t.Run("agent restart keeps attachments and addresses", func(t *testing.T) {
		h.stop()
		if _, err := os.Stat(filepath.Join(h.cfg.CNIConfDir, DefaultCNIConfName)); err != nil {
			t.Errorf("conflist gone after a clean stop (it must stay: fail closed): %v", err)
		}
		h.pod("late", map[string]string{"app": "batch"})
		_, terr := h.exec("ADD", "sandbox-late-"+h.sfx, "late", h.pods["late"], nil)
		if terr == nil || terr.Code != types.ErrTryAgainLater || !strings.Contains(terr.Msg, h.sock()) {
			t.Fatalf("ADD with the agent down: %v, want code 11 naming %s", terr, h.sock())
		}
		h.start()
		prev, _ := json.Marshal(webRes)
		if _, terr := h.exec("CHECK", webCID, "web", h.pods["web"], h.conf(`,"prevResult":`+string(prev))); terr != nil {
			t.Fatalf("CHECK web after restart: %d %s: %s", terr.Code, terr.Msg, terr.Details)
		}
		out, terr := h.exec("ADD", "sandbox-late-"+h.sfx, "late", h.pods["late"], nil)
		if terr != nil {
			t.Fatalf("ADD after restart: %v", terr)
		}
		late := podAddr(h.parseResult("late", out))
		h.a.cni.mu.RLock()
		seen := map[netip.Addr]string{}
		for _, a := range h.a.cni.atts {
			if other, dup := seen[a.IPv4]; dup {
				t.Errorf("%s given to %s and %s after the restart", a.IPv4, a.Name, other)
			}
			seen[a.IPv4] = a.Name
		}
		h.a.cni.mu.RUnlock()
		if seen[late] != "late" {
			t.Errorf("late's %s is recorded for %q", late, seen[late])
		}
		// Policy holds after the restart: web admits no batch pod, and
		// web may reach late.
		h.listen("late", port)
		if err := h.dial("web", netip.AddrPortFrom(late, port), firstSYN); err != nil {
			t.Fatalf("web → late after the restart: %v", err)
		}
		if err := h.dial("late", web, firstSYN); err == nil {
			t.Fatal("batch pod reached web after the restart")
		}
	})

	// Leave nothing: DEL every remaining attachment.
	h.a.cni.mu.RLock()
	var left []*cniAttachment
	for _, a := range h.a.cni.atts {
		left = append(left, a)
	}
	h.a.cni.mu.RUnlock()
	for _, a := range left {
		if _, terr := h.exec("DEL", a.ContainerID, a.Name, a.UID, nil); terr != nil {
			t.Errorf("DEL %s: %v", a.Name, terr)
		}
	}
	if s := h.stateFiles(); strings.Contains(s, "sandbox-") || strings.Contains(s, "10.231.") {
		t.Errorf("state after deleting everything:\n%s", s)
	}
	links := testutil.RunCmd(t, "ip", "-d", "link", "show")
	if strings.Contains(links, "moat:"+h.cfg.NetnsPrefix) {
		t.Errorf("links with the test's alias left:\n%s", links)
	}
}
