package harness

// pki.go writes the cluster's credentials: a CA, the apiserver's serving
// certificate, the client certificate the apiserver shows kubelets (exec,
// logs), the service-account signing key, a static token per identity
// (admin, controller-manager, scheduler, kube-proxy, and one real node
// identity system:node:NAME per node, so the Node authorizer and
// NodeRestriction are exercised), and a kubeconfig per identity.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

type identity struct {
	file   string // kubeconfig base name
	user   string
	uid    string
	groups []string
}

func (c Config) identities() []identity {
	ids := []identity{
		{"admin", "moat-cluster-admin", "1", []string{"system:masters"}},
		{"controller-manager", "system:kube-controller-manager", "2", nil},
		{"scheduler", "system:kube-scheduler", "3", nil},
		{"kube-proxy", "system:kube-proxy", "4", nil},
	}
	for n := 1; n <= c.Nodes; n++ {
		ids = append(ids, identity{NodeName(n), "system:node:" + NodeName(n), fmt.Sprint(100 + n), []string{"system:nodes"}})
	}
	return ids
}

func (c Config) writePKI() error {
	dir := c.pkiDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pki dir: %w", err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "moat-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create ca: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writeCertKey(dir, "ca", caDER, caKey); err != nil {
		return err
	}
	leaf := func(name string, serial int64, subj pkix.Name, usage x509.ExtKeyUsage, dns []string, ips []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		t := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      subj,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(30 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
		}
		for _, ip := range ips {
			t.IPAddresses = append(t.IPAddresses, net.ParseIP(ip))
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("create %s certificate: %w", name, err)
		}
		return writeCertKey(dir, name, der, key)
	}
	if err := leaf("apiserver", 2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + ClusterDomain},
		[]string{"127.0.0.1", KubernetesSvc, BridgeIP}); err != nil {
		return err
	}
	if err := leaf("kubelet-client", 3, pkix.Name{CommonName: "kube-apiserver-kubelet-client",
		Organization: []string{"system:masters"}}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "EC PRIVATE KEY", saDER, 0o600); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", saPub, 0o644); err != nil {
		return err
	}

	// Static tokens and one kubeconfig per identity.
	var csv strings.Builder
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for _, id := range c.identities() {
		tok := make([]byte, 16)
		if _, err := rand.Read(tok); err != nil {
			return err
		}
		token := hex.EncodeToString(tok)
		fmt.Fprintf(&csv, "%s,%s,%s", token, id.user, id.uid)
		if len(id.groups) > 0 {
			fmt.Fprintf(&csv, ",\"%s\"", strings.Join(id.groups, ","))
		}
		csv.WriteString("\n")
		kc := kubeconfig(fmt.Sprintf("https://%s:%d", BridgeIP, APIServerPort), caPEM, id.user, token)
		if err := os.WriteFile(filepath.Join(c.etcDir(), id.file+".kubeconfig"), []byte(kc), 0o600); err != nil {
			return fmt.Errorf("write kubeconfig of %s: %w", id.user, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(csv.String()), 0o600); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	return nil
}

func writeCertKey(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kb, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func kubeconfig(server string, caPEM []byte, user, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: moat-cluster
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: moat-cluster
  context:
    cluster: moat-cluster
    user: %s
current-context: moat-cluster
`, server, b64(caPEM), user, token, user)
}
