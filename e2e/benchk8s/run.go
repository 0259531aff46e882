package main

// run.go owns one benchmark run: the cluster objects, the agent process,
// the timed applies, RSS and the idle window.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/internal/k8stest"
)

const (
	localNode  = "bench-node"
	agentNS    = "moat-system"
	appsPerNS  = 100
	probePort0 = 30000
)

var moatNP = schema.GroupVersionResource{Group: "moat.io", Version: "v1alpha1", Resource: "networkpolicies"}

func nsName(i, n int) string { return "bench-" + strconv.Itoa(i%n) }

// run is the whole benchmark; b only carries the cluster's cleanups.
func run(ctx context.Context, b *testing.B, cfg Config, logw io.Writer) (*Report, error) {
	logf := func(format string, args ...any) {
		if cfg.Verbose {
			fmt.Fprintf(logw, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		}
	}
	rep := &Report{Config: cfg}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	logf("starting etcd + kube-apiserver")
	cl := k8stest.Start(b)
	cl.ApplyCRDs(b, filepath.Join(root, "charts", "moat", "crds"))
	admin := rest.CopyConfig(cl.Config())
	admin.QPS, admin.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		return nil, err
	}

	// The agent's identity: the chart's role, bound to a ServiceAccount.
	rbac, err := os.ReadFile(filepath.Join(root, "charts", "moat", "templates", "rbac-agent.yaml"))
	if err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentNS}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	rbacFile := filepath.Join(b.TempDir(), "rbac-agent.yaml")
	if err := os.WriteFile(rbacFile, []byte(strings.ReplaceAll(string(rbac), "{{ .Release.Namespace }}", agentNS)), 0o600); err != nil {
		return nil, err
	}
	if out, err := cl.Kubectl("apply", "-f", rbacFile); err != nil {
		return nil, fmt.Errorf("apply agent RBAC: %v: %s", err, out)
	}
	sa := cl.ServiceAccountConfig(b, agentNS, "moat-agent")
	// The agent's ConfigMap, watched by name as the chart configures it.
	if _, err := cs.CoreV1().ConfigMaps(agentNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "moat-config"},
		Data: map[string]string{"identityExcludedLabels": "[pod-template-hash]"}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}

	// The cluster.
	start := time.Now()
	if err := populate(ctx, cs, dyn, cfg); err != nil {
		return nil, err
	}
	rep.PopulateSeconds = time.Since(start).Seconds()
	logf("cluster populated in %.1fs", rep.PopulateSeconds)

	// The agent, through the counting proxy.
	px, err := newCountingProxy(sa)
	if err != nil {
		return nil, err
	}
	defer px.Close()
	dir := b.TempDir()
	kubeconfig := filepath.Join(dir, "agent.kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: bench, cluster: {server: "http://%s"}}]
users: [{name: agent, user: {}}]
contexts: [{name: bench, context: {cluster: bench, user: agent}}]
current-context: bench
`, px.Addr())), 0o600); err != nil {
		return nil, err
	}
	ag, err := startAgent(cfg.AgentBinary, dir, kubeconfig)
	if err != nil {
		return nil, err
	}
	defer ag.stop(logf)

	start = time.Now()
	var st agent.Status
	err = waitFor(ctx, 20*time.Minute, 100*time.Millisecond, func() (bool, error) {
		if ag.exited() {
			return false, fmt.Errorf("moat-agent exited: %s", ag.logTail())
		}
		var err error
		st, err = ag.status(ctx)
		if err != nil {
			return false, nil
		}
		return st.SourcesSynced && st.Revision > 0 && st.Policies == cfg.Policies && len(st.Endpoints) == cfg.LocalPods, nil
	})
	if err != nil {
		return rep, fmt.Errorf("initial sync: %w (last status: policies %d, endpoints %d, synced %v, errors %v)", err, st.Policies, len(st.Endpoints), st.SourcesSynced, st.PolicyErrors)
	}
	rep.InitialSyncSeconds = time.Since(start).Seconds()
	rep.Identities = st.Identities
	rep.RemoteEndpoints = st.RemoteEndpoints
	logf("agent synced in %.1fs: %d policies, %d endpoints, %d identities, %d remote endpoints", rep.InitialSyncSeconds, st.Policies, len(st.Endpoints), st.Identities, st.RemoteEndpoints)

	// Timed applies.
	for a := range cfg.Applies {
		d, err := timedApply(ctx, dyn, ag, cfg, a)
		if err != nil {
			return rep, fmt.Errorf("apply %d: %w", a, err)
		}
		rep.ApplyMillis = append(rep.ApplyMillis, float64(d.Microseconds())/1000)
		logf("apply %d: %s", a, d)
	}
	sorted := slices.Clone(rep.ApplyMillis)
	slices.Sort(sorted)
	rep.ApplyP50Millis = quantile(sorted, 0.50)
	rep.ApplyP99Millis = quantile(sorted, 0.99)
	rep.ApplyMaxMillis = sorted[len(sorted)-1]

	rep.RSSMiB, rep.PeakRSSMiB, err = rss(ag.cmd.Process.Pid)
	if err != nil {
		return rep, err
	}
	logf("agent RSS %.1f MiB (peak %.1f MiB)", rep.RSSMiB, rep.PeakRSSMiB)

	// Idle window.
	logf("idle window of %s", cfg.Idle)
	before, err := apiserverRequests(ctx, cs)
	if err != nil {
		return rep, err
	}
	px.Reset()
	select {
	case <-ctx.Done():
		return rep, ctx.Err()
	case <-time.After(cfg.Idle):
	}
	idle := px.Snapshot()
	after, err := apiserverRequests(ctx, cs)
	if err != nil {
		return rep, err
	}
	perMin := 60 / cfg.Idle.Seconds()
	rep.Idle = IdleReport{Seconds: cfg.Idle.Seconds(), OpenWatches: idle.open, ByVerb: map[string]float64{"WATCH": 0, "GET/LIST": 0}, APIServerByVerb: map[string]float64{}}
	for v, n := range idle.byVerb {
		rep.Idle.ByVerb[v] = float64(n) * perMin
		if v != "WATCH" {
			rep.Idle.NonWatchPerMinute += float64(n) * perMin
		}
	}
	for k, n := range after {
		if d := n - before[k]; d > 0 {
			rep.Idle.APIServerByVerb[k] = d * perMin
		}
	}
	if ag.exited() {
		return rep, fmt.Errorf("moat-agent exited during the run: %s", ag.logTail())
	}
	return rep, nil
}

// populate creates the namespaces, nodes, pods and policies.
func populate(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, cfg Config) error {
	for i := range cfg.Namespaces {
		ns := nsName(i, cfg.Namespaces)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": "t" + strconv.Itoa(i%3)}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		// No controller-manager: the default service account pods need.
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	nodes := []string{localNode}
	for i := range cfg.Nodes {
		nodes = append(nodes, "node-"+strconv.Itoa(i))
	}
	for i, n := range nodes {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.%d.%d", i/250, i%250+1)}}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	var jobs []func() error
	for i := range cfg.LocalPods {
		jobs = append(jobs, func() error {
			return createPod(ctx, cs, nsName(i, cfg.Namespaces), "local-"+strconv.Itoa(i), localNode,
				fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), localApp(i))
		})
	}
	for j := range cfg.ClusterPods {
		jobs = append(jobs, func() error {
			return createPod(ctx, cs, nsName(j, cfg.Namespaces), "pod-"+strconv.Itoa(j), nodes[1+j%cfg.Nodes],
				fmt.Sprintf("10.%d.%d.%d", 1+j/62500, (j/250)%250, j%250+1), "app-"+strconv.Itoa((j/cfg.Namespaces)%appsPerNS))
		})
	}
	for k := range cfg.Policies {
		jobs = append(jobs, func() error {
			ns := nsName(k, cfg.Namespaces)
			target := localAppIn(k, cfg)
			peer := "app-" + strconv.Itoa((k/cfg.Namespaces+7)%appsPerNS)
			return createPolicy(ctx, dyn, ns, "pol-"+strconv.Itoa(k), target, peer, 1000+k%20000)
		})
	}
	return parallel(ctx, 32, jobs)
}

// localApp is local pod i's app label; localAppIn the app of a local pod in
// policy k's namespace, so that every policy selects a local pod.
func localApp(i int) string { return "app-" + strconv.Itoa(i%appsPerNS) }

func localAppIn(k int, cfg Config) string {
	n := k % cfg.Namespaces
	// Local pods in namespace n are i = n, n+N, n+2N, ... (i < LocalPods).
	count := (cfg.LocalPods - n + cfg.Namespaces - 1) / cfg.Namespaces
	if count <= 0 {
		return localApp(0)
	}
	i := n + cfg.Namespaces*((k/cfg.Namespaces)%count)
	return localApp(i)
}

func createPod(ctx context.Context, cs kubernetes.Interface, ns, name, node, ip, app string) error {
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app, "pod-template-hash": "h" + strconv.Itoa(len(name))}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set status of pod %s/%s: %w", ns, name, err)
	}
	return nil
}

// createPolicy creates a moat.io NetworkPolicy: pods with app=target accept
// TCP port from pods with app=peer (peer "" : from anywhere).
func createPolicy(ctx context.Context, dyn dynamic.Interface, ns, name, target, peer string, port int) error {
	rule := map[string]any{
		"toPorts": []any{map[string]any{"ports": []any{map[string]any{"port": strconv.Itoa(port), "protocol": "TCP"}}}},
	}
	if peer != "" {
		rule["fromEndpoints"] = []any{map[string]any{"matchLabels": map[string]any{"app": peer}}}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "moat.io/v1alpha1",
		"kind":       "NetworkPolicy",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"endpointSelector": map[string]any{"matchLabels": map[string]any{"app": target}},
			"ingress":          []any{rule},
		},
	}}
	if _, err := dyn.Resource(moatNP).Namespace(ns).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy %s/%s: %w", ns, name, err)
	}
	return nil
}

// parallel runs jobs on n workers and returns the first error.
func parallel(ctx context.Context, n int, jobs []func() error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan func() error)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if err := j(); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(ch)
	wg.Wait()
	return context.Cause(ctx)
}

// timedApply creates one policy that gives a local pod a new ingress entry
// and times it until the agent's published Plan has that entry.
func timedApply(ctx context.Context, dyn dynamic.Interface, ag *agentProc, cfg Config, a int) (time.Duration, error) {
	i := (a * 7) % cfg.LocalPods
	ns, name := nsName(i, cfg.Namespaces), "local-"+strconv.Itoa(i)
	st, err := ag.status(ctx)
	if err != nil {
		return 0, err
	}
	before, ok := ingressEntries(st, ns, name)
	if !ok {
		return 0, fmt.Errorf("local pod %s/%s is not in the agent's Plan", ns, name)
	}
	policies := st.Policies
	start := time.Now()
	if err := createPolicy(ctx, dyn, ns, "probe-"+strconv.Itoa(a), localApp(i), "", probePort0+a); err != nil {
		return 0, err
	}
	err = waitFor(ctx, 60*time.Second, 2*time.Millisecond, func() (bool, error) {
		st, err := ag.status(ctx)
		if err != nil {
			return false, err
		}
		n, _ := ingressEntries(st, ns, name)
		return n != before && st.Policies == policies+1, nil
	})
	d := time.Since(start)
	// Let the agent settle before the next sample.
	time.Sleep(100 * time.Millisecond)
	return d, err
}

func ingressEntries(st agent.Status, ns, name string) (int, bool) {
	for _, e := range st.Endpoints {
		if e.Namespace == ns && e.Name == name {
			return e.IngressEntries, true
		}
	}
	return 0, false
}

func waitFor(ctx context.Context, timeout, every time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	idx := int(q*float64(len(sorted)) + 0.5)
	idx = min(max(idx-1, 0), len(sorted)-1)
	return sorted[idx]
}

// rss reads VmRSS and VmHWM of a process, in MiB.
func rss(pid int) (cur, peak float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			cur = kb / 1024
		} else {
			peak = kb / 1024
		}
	}
	return cur, peak, sc.Err()
}

// agentResources are the resources the agent reads; the apiserver's own
// loopback controllers work on others (leases, endpoints, services, ...).
var agentResources = map[string]bool{
	"pods": true, "namespaces": true, "nodes": true, "endpointslices": true, "networkpolicies": true,
	"clusterwidenetworkpolicies": true, "ciliumnetworkpolicies": true, "ciliumclusterwidenetworkpolicies": true,
	"customresourcedefinitions": true, "identities": true, "configmaps": true,
}

// apiserverRequests sums apiserver_request_total by verb and resource over
// the agent's resources ("GET pods").
func apiserverRequests(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("read apiserver /metrics: %w", err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		labels := parseLabels(line[len("apiserver_request_total{"):end])
		if !agentResources[labels["resource"]] {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			continue
		}
		out[labels["verb"]+" "+labels["resource"]] += v
	}
	return out, nil
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		v, rest2, _ := strings.Cut(rest, `"`)
		out[strings.TrimPrefix(k, ",")] = v
		s = strings.TrimPrefix(rest2, ",")
	}
	return out
}

// agentProc is the moat-agent process.
type agentProc struct {
	cmd     *exec.Cmd
	logPath string
	bpfRoot string
	binary  string
	http    *http.Client
	done    chan struct{}
}

func startAgent(binary, dir, kubeconfig string) (*agentProc, error) {
	bpfRoot := "/sys/fs/bpf/moat-benchk8s-" + strconv.Itoa(os.Getpid())
	runDir := filepath.Join(dir, "run")
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary,
		"--kubeconfig", kubeconfig, "--node-name", localNode, "--config-map", agentNS+"/moat-config",
		"--state-dir", filepath.Join(dir, "state"), "--run-dir", runDir, "--bpf-root", bpfRoot,
		"--proxy", "external", "--no-metrics", "--no-tcp-health", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	sock := filepath.Join(runDir, agent.APISocket)
	a := &agentProc{cmd: cmd, logPath: logPath, bpfRoot: bpfRoot, binary: binary, done: make(chan struct{}),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
	go func() { _ = cmd.Wait(); logf.Close(); close(a.done) }()
	return a, nil
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func (a *agentProc) status(ctx context.Context) (agent.Status, error) {
	var st agent.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agent status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (a *agentProc) logTail() string {
	data, _ := os.ReadFile(a.logPath)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}

// stop ends the agent and removes its pinned state.
func (a *agentProc) stop(logf func(string, ...any)) {
	if !a.exited() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	}
	// A netns prefix that matches nothing: cleanup then also removes the
	// proxy routing rule the agent installed, unless another agent holds it.
	out, err := exec.Command(a.binary, "cleanup", "--bpf-root", a.bpfRoot, "--netns-prefix", "mbk8s-none-").CombinedOutput()
	if err != nil {
		logf("moat-agent cleanup: %v: %s", err, out)
	}
	if err := os.RemoveAll(a.bpfRoot); err != nil && !errors.Is(err, os.ErrNotExist) {
		logf("remove %s: %v", a.bpfRoot, err)
	}
}

// repoRoot finds the module root (the directory of go.mod) from the
// working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "charts", "moat", "templates", "rbac-agent.yaml")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run from the moat repository: no charts/moat/templates/rbac-agent.yaml above the working directory")
		}
		dir = parent
	}
}
