package harness

// controlplane.go starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on the host, each waited for before the next. The
// apiserver binds the node bridge's address only, so the nodes reach it
// from their netns and the guard keeps it off every other interface.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

func (c Config) startControlPlane(ctx context.Context) error {
	pki := c.pkiDir()
	etcdDir := c.path("etcd")
	if err := os.MkdirAll(etcdDir, 0o700); err != nil {
		return err
	}
	if err := c.start(daemon{name: "etcd", argv: []string{c.bin("etcd"),
		"--name=moat-cluster", "--data-dir=" + etcdDir,
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=moat-cluster=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
		"--unsafe-no-fsync", "--log-level=warn"}}); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "etcd", "http://127.0.0.1:2379/health", nil, time.Minute); err != nil {
		return err
	}

	p := func(f string) string { return filepath.Join(pki, f) }
	issuer := "https://kubernetes.default.svc." + ClusterDomain
	if err := c.start(daemon{name: "kube-apiserver", argv: []string{c.bin("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=" + BridgeIP, "--advertise-address=" + BridgeIP,
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--tls-cert-file=" + p("apiserver.crt"), "--tls-private-key-file=" + p("apiserver.key"),
		"--cert-dir=" + c.path("apiserver-certs"),
		"--client-ca-file=" + p("ca.crt"), "--token-auth-file=" + p("tokens.csv"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-key-file=" + p("sa.pub"), "--service-account-signing-key-file=" + p("sa.key"),
		"--service-account-issuer=" + issuer, "--api-audiences=" + issuer,
		"--kubelet-client-certificate=" + p("kubelet-client.crt"), "--kubelet-client-key=" + p("kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--profiling=false", "--v=1"}}); err != nil {
		return err
	}
	tc, err := c.adminTLS()
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "kube-apiserver", fmt.Sprintf("https://%s:%d/readyz", BridgeIP, APIServerPort), tc, 2*time.Minute); err != nil {
		return err
	}

	kc := func(f string) string { return filepath.Join(c.etcDir(), f+".kubeconfig") }
	if err := c.start(daemon{name: "kube-controller-manager", argv: []string{c.bin("kube-controller-manager"),
		"--kubeconfig=" + kc("controller-manager"),
		"--authentication-kubeconfig=" + kc("controller-manager"), "--authorization-kubeconfig=" + kc("controller-manager"),
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--service-account-private-key-file=" + p("sa.key"), "--root-ca-file=" + p("ca.crt"),
		"--cluster-signing-cert-file=" + p("ca.crt"), "--cluster-signing-key-file=" + p("ca.key"),
		"--use-service-account-credentials=true", "--service-cluster-ip-range=" + ServiceCIDR,
		"--cluster-cidr=" + ClusterCIDR, "--allocate-node-cidrs=false",
		"--cert-dir=" + c.path("kcm-certs"), "--v=1"}}); err != nil {
		return err
	}
	if err := c.start(daemon{name: "kube-scheduler", argv: []string{c.bin("kube-scheduler"),
		"--kubeconfig=" + kc("scheduler"),
		"--authentication-kubeconfig=" + kc("scheduler"), "--authorization-kubeconfig=" + kc("scheduler"),
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--cert-dir=" + c.path("scheduler-certs"), "--v=1"}}); err != nil {
		return err
	}
	insecure := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // self-signed loopback health ports
	if err := c.waitHTTP(ctx, "kube-controller-manager", "https://127.0.0.1:10257/healthz", insecure, time.Minute); err != nil {
		return err
	}
	return c.waitHTTP(ctx, "kube-scheduler", "https://127.0.0.1:10259/healthz", insecure, time.Minute)
}

// adminTLS trusts the cluster CA.
func (c Config) adminTLS() (*tls.Config, error) {
	ca, err := os.ReadFile(filepath.Join(c.pkiDir(), "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("parse %s", filepath.Join(c.pkiDir(), "ca.crt"))
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// waitHTTP waits for url to answer 200, failing early when the daemon
// exits (its log names why).
func (c Config) waitHTTP(ctx context.Context, name, url string, tc *tls.Config, timeout time.Duration) error {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	defer client.CloseIdleConnections()
	start := time.Now()
	err := poll(ctx, timeout, 200*time.Millisecond, func() (bool, error) {
		if _, ok := c.running(name); !ok {
			return true, fmt.Errorf("%s exited; see %s", name, filepath.Join(c.logDir(), name+".log"))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return true, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s: %s", url, resp.Status)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s: %w", name, err)
	}
	c.Log.Info("ready", "daemon", name, "after", time.Since(start).Round(time.Millisecond))
	return nil
}
