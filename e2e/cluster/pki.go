package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// pkiLifetime bounds every certificate of a test cluster: long enough for any test run,
// short enough that a leaked key is worthless soon.
const pkiLifetime = 48 * time.Hour

// authority is the cluster CA: it signs the API server's serving certificate and every
// client certificate, and the API server, kubelet and controller-manager trust it.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newAuthority(now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "podtls-e2e-ca"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(pkiLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// leaf describes one certificate to issue.
type leaf struct {
	commonName string
	orgs       []string
	dnsNames   []string
	ips        []net.IP
	server     bool
	client     bool
}

// issue returns PEM certificate and PEM (PKCS#8) key for l.
func (a *authority) issue(l leaf, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", l.commonName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.commonName, Organization: l.orgs},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(pkiLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     l.dnsNames,
		IPAddresses:  l.ips,
	}
	if l.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", l.commonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key for %s: %w", l.commonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux (it would have crashed the process already).
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return n
}

// pkiFiles are the paths of everything writePKI creates.
type pkiFiles struct {
	dir                      string
	caCert                   string
	apiserverCert, apiserver string // serving cert and key
	kubeletClientCert        string // the API server's client cert towards kubelets
	kubeletClientKey         string
	saKey, saPub             string
}

// identities with a kubeconfig: name -> (user, groups).
type identity struct {
	file   string
	user   string
	groups []string
}

func clusterIdentities(nodeNames []string) []identity {
	ids := []identity{
		{"admin", "podtls-e2e-admin", []string{"system:masters"}},
		{"controller-manager", "system:kube-controller-manager", nil},
		{"scheduler", "system:kube-scheduler", nil},
		{"kube-proxy", "system:kube-proxy", nil},
		{"coredns", "podtls-e2e:coredns", nil},
	}
	// One identity per kubelet: the Node authorizer and NodeRestriction confine each to
	// its own node.
	for _, name := range nodeNames {
		ids = append(ids, identity{kubeletIdentity(name), "system:node:" + name, []string{"system:nodes"}})
	}
	return ids
}

// kubeletIdentity names the kubeconfig of the kubelet of node name.
func kubeletIdentity(name string) string { return "kubelet-" + name }

// writePKI creates the CA, the API server's certificates, the service-account key pair and
// one kubeconfig per identity in dir; kubeconfigs point at server. The first node's name is
// also one of the API server's names.
func writePKI(dir, server string, nodeNames []string, apiserverIPs []net.IP, now time.Time) (pkiFiles, error) {
	if len(nodeNames) == 0 {
		return pkiFiles{}, fmt.Errorf("cluster PKI: no nodes")
	}
	f := pkiFiles{
		dir:               dir,
		caCert:            filepath.Join(dir, "ca.crt"),
		apiserverCert:     filepath.Join(dir, "apiserver.crt"),
		apiserver:         filepath.Join(dir, "apiserver.key"),
		kubeletClientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		kubeletClientKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
		saKey:             filepath.Join(dir, "sa.key"),
		saPub:             filepath.Join(dir, "sa.pub"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, fmt.Errorf("create pki dir: %w", err)
	}
	ca, err := newAuthority(now)
	if err != nil {
		return f, err
	}
	if err := writeFile(f.caCert, ca.pem, 0o644); err != nil {
		return f, err
	}

	certPEM, keyPEM, err := ca.issue(leaf{
		commonName: "kube-apiserver",
		dnsNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local", "localhost", nodeNames[0]},
		ips:    apiserverIPs,
		server: true,
	}, now)
	if err != nil {
		return f, err
	}
	if err := writePair(f.apiserverCert, certPEM, f.apiserver, keyPEM); err != nil {
		return f, err
	}

	certPEM, keyPEM, err = ca.issue(leaf{commonName: "kube-apiserver-kubelet-client",
		orgs: []string{"system:masters"}, client: true}, now)
	if err != nil {
		return f, err
	}
	if err := writePair(f.kubeletClientCert, certPEM, f.kubeletClientKey, keyPEM); err != nil {
		return f, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, fmt.Errorf("generate service-account key: %w", err)
	}
	saKeyPEM, err := encodeKey(saKey)
	if err != nil {
		return f, fmt.Errorf("encode service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return f, fmt.Errorf("encode service-account public key: %w", err)
	}
	if err := writePair(f.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), f.saKey, saKeyPEM); err != nil {
		return f, err
	}

	for _, id := range clusterIdentities(nodeNames) {
		certPEM, keyPEM, err := ca.issue(leaf{commonName: id.user, orgs: id.groups, client: true}, now)
		if err != nil {
			return f, err
		}
		if err := writeKubeconfig(kubeconfigPath(dir, id.file), server, ca.pem, id.user, certPEM, keyPEM); err != nil {
			return f, err
		}
	}
	return f, nil
}

func kubeconfigPath(pkiDir, name string) string {
	return filepath.Join(pkiDir, name+".kubeconfig")
}

func writeKubeconfig(path, server string, caPEM []byte, user string, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["podtls-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["podtls-e2e"] = &clientcmdapi.Context{Cluster: "podtls-e2e", AuthInfo: user}
	cfg.CurrentContext = "podtls-e2e"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	return writeFile(path, data, 0o600)
}

func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return err
	}
	return writeFile(keyPath, keyPEM, 0o600)
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
