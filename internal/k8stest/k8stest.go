// Package k8stest starts a real Kubernetes control plane (etcd and
// kube-apiserver, built from the Go module proxy by scripts/k8s-bins.sh) on
// loopback for tests: no fake clientset, no mocks. Each Start gets fresh
// ports, a fresh PKI and a fresh etcd, and its processes are stopped when
// the test ends.
//
// The binaries are found through MOAT_K8S_BINS (`make test` and .ci/run set
// it to the output of scripts/k8s-bins.sh). When it is unset the test is
// skipped, unless MOAT_PRIVILEGED_TESTS=1 or MOAT_K8S_TESTS=1 says the
// control plane must be there: then it fails.
//
// Identities: the admin user (system:masters) authenticates with a static
// token; ServiceAccountConfig returns a token-bound config for a service
// account, so RBAC roles can be tested with exactly the permissions they
// grant.
package k8stest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// EnvBins names the directory that holds etcd, kube-apiserver and kubectl.
const EnvBins = "MOAT_K8S_BINS"

// Issuer is the service-account token issuer and audience of the test
// apiserver, as in a real cluster.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// readyTimeout bounds how long Start waits for /readyz; a cold apiserver on
// a loaded two-core machine needs a few seconds, rarely more than 20.
const readyTimeout = 90 * time.Second

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// Dir holds the PKI, the kubeconfig, the etcd data and the logs.
	Dir string
	// URL is the apiserver's https address on 127.0.0.1.
	URL string
	// Kubeconfig is the path of an admin kubeconfig (system:masters).
	Kubeconfig string

	bins       string
	adminToken string
	caPEM      []byte
	apiPort    int
	etcdURL    string

	mu        sync.Mutex
	etcd      *process
	apiserver *process
}

// Bins returns the directory of the control-plane binaries, or skips (or
// fails, when the environment says the control plane is required) the
// test when it is not configured.
func Bins(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvBins)
	if dir == "" {
		msg := EnvBins + " is not set: run `export " + EnvBins + "=$(scripts/k8s-bins.sh)` (make test does)"
		if os.Getenv("MOAT_PRIVILEGED_TESTS") == "1" || os.Getenv("MOAT_K8S_TESTS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s=%s: %v", EnvBins, dir, err)
		}
	}
	return dir
}

// Start runs a fresh etcd and kube-apiserver and waits until the apiserver
// is ready. Both are stopped (and their state removed) when t ends; when t
// failed, the tails of their logs are printed first.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{bins: Bins(t), Dir: t.TempDir()}
	pki, err := writePKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		t.Fatalf("k8stest: PKI: %v", err)
	}
	c.caPEM = pki.caPEM
	c.adminToken = pki.adminToken
	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("k8stest: ports: %v", err)
	}
	c.apiPort = ports[2]
	c.URL = "https://127.0.0.1:" + strconv.Itoa(c.apiPort)
	c.etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	t.Cleanup(func() { c.stopAll(t) })

	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcd, err = c.spawn("etcd", filepath.Join(c.bins, "etcd"),
		"--name=k8stest", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+c.etcdURL, "--advertise-client-urls="+c.etcdURL,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=k8stest="+peer, "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		t.Fatalf("k8stest: start etcd: %v", err)
	}
	if err := c.StartAPIServer(); err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, c.kubeconfig("admin", c.adminToken), 0o600); err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	return c
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) on the
// cluster's port and waits for /readyz.
func (c *Cluster) StartAPIServer() error {
	pki := filepath.Join(c.Dir, "pki")
	p, err := c.spawn("kube-apiserver", filepath.Join(c.bins, "kube-apiserver"),
		"--etcd-servers="+c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.apiPort),
		"--endpoint-reconciler-type=none",
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--cert-dir="+filepath.Join(c.Dir, "apiserver-certs"),
		"--client-ca-file="+filepath.Join(pki, "ca.crt"),
		"--token-auth-file="+filepath.Join(pki, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-account-issuer="+Issuer,
		"--api-audiences="+Issuer,
		"--profiling=false",
		"--v=0",
	)
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	c.mu.Lock()
	c.apiserver = p
	c.mu.Unlock()
	if err := c.waitReady(p); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w\n%s", err, p.tail(40))
	}
	return nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after a few
// seconds) and leaves etcd running, as an apiserver restart does.
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	p := c.apiserver
	c.apiserver = nil
	c.mu.Unlock()
	if p != nil {
		p.stop(5 * time.Second)
	}
}

func (c *Cluster) stopAll(t testing.TB) {
	c.mu.Lock()
	procs := []*process{c.apiserver, c.etcd}
	c.mu.Unlock()
	for _, p := range procs {
		if p == nil {
			continue
		}
		if t.Failed() {
			t.Logf("k8stest: last lines of %s:\n%s", p.name, p.tail(30))
		}
	}
	c.StopAPIServer()
	if c.etcd != nil {
		c.etcd.stop(5 * time.Second)
	}
}

// Config returns an admin (system:masters) client config.
func (c *Cluster) Config() *rest.Config {
	return c.tokenConfig(c.adminToken)
}

func (c *Cluster) tokenConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
}

// Client returns an admin clientset.
func (c *Cluster) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatalf("k8stest: clientset: %v", err)
	}
	return cs
}

// Kubectl runs kubectl as admin against the cluster and returns its
// combined output.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return c.KubectlAs(c.Kubeconfig, args...)
}

// KubectlAs runs kubectl with the given kubeconfig.
func (c *Cluster) KubectlAs(kubeconfig string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bins, "kubectl"), append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustKubectl runs kubectl as admin and fails the test when it fails.
func (c *Cluster) MustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ApplyCRDs applies the CustomResourceDefinitions in paths (files or
// directories) and waits until each is Established.
func (c *Cluster) ApplyCRDs(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		c.MustKubectl(t, "apply", "--server-side", "-f", p)
		// kubectl wait fails at once, instead of waiting, on a CRD whose
		// status has no conditions yet ("accessor error: <nil>"), which a
		// CRD just created can be: try again until the deadline.
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := c.Kubectl("wait", "--for=condition=established", "--timeout=60s", "-f", p)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || !strings.Contains(out, "accessor error") {
				t.Fatalf("kubectl wait --for=condition=established -f %s: %v\n%s", p, err, out)
			}
			time.Sleep(100 * time.Millisecond) // poll interval of a deadline-bounded wait
		}
	}
}

// ServiceAccountConfig creates (if needed) namespace ns and service account
// name in it and returns a client config that authenticates with a fresh
// token of that account, so the test runs with exactly the permissions its
// RBAC bindings grant.
func (c *Cluster) ServiceAccountConfig(t testing.TB, ns, name string) *rest.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := c.Client(t)
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("k8stest: create namespace %s: %v", ns, err)
	}
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("k8stest: create service account %s/%s: %v", ns, name, err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{Issuer}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("k8stest: token for %s/%s: %v", ns, name, err)
	}
	return c.tokenConfig(tr.Status.Token)
}

// WriteKubeconfig writes a kubeconfig for cfg's bearer token to a file in
// the cluster's directory and returns its path.
func (c *Cluster) WriteKubeconfig(t testing.TB, name string, cfg *rest.Config) string {
	t.Helper()
	path := filepath.Join(c.Dir, name+".kubeconfig")
	if err := os.WriteFile(path, c.kubeconfig(name, cfg.BearerToken), 0o600); err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	return path
}

func (c *Cluster) kubeconfig(user, token string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: k8stest
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: k8stest
  context: {cluster: k8stest, user: %s}
current-context: k8stest
`, c.URL, filepath.Join(c.Dir, "pki", "ca.crt"), user, token, user)
}

// waitReady polls /readyz until it answers ok, p exits, or readyTimeout.
func (c *Cluster) waitReady(p *process) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return errors.New("process exited")
		}
		req, _ := http.NewRequest(http.MethodGet, c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("after %s: %v", readyTimeout, last)
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// process is one control-plane daemon with its log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (c *Cluster) spawn(name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(c.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
