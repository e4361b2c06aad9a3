package main

import (
	"bytes"
	"context"
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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplane/xdplane/internal/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// controlPlane is a real etcd and kube-apiserver, built from the Go module
// proxy by hack/kube/build.sh and started inside a test namespace, on its
// loopback: nothing listens outside the namespaces the test made.
type controlPlane struct {
	ns         *testutil.NS
	dir        string
	token      string
	caPEM      []byte
	kubeconfig string // for processes inside ns
}

const (
	apiserverAddr = "127.0.0.1:6443"
	serviceCIDRs  = "10.96.0.0/16,fd00:96::/112" // dual stack
)

// binaries builds (or finds cached) etcd and kube-apiserver.
func binaries(t testing.TB) string {
	t.Helper()
	script, err := filepath.Abs("../../hack/kube/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/kube/build.sh: %v\n%s", err, stderr.String())
	}
	if s := stderr.String(); s != "" {
		t.Log(strings.TrimSpace(s))
	}
	return strings.TrimSpace(string(out))
}

// startControlPlane runs etcd and kube-apiserver in ns until the test
// ends, and returns once the API server is ready.
func startControlPlane(t testing.TB, ns *testutil.NS) *controlPlane {
	t.Helper()
	bin := binaries(t)
	cp := &controlPlane{ns: ns, dir: t.TempDir(), token: "xdplane-test-" + randomHex(t, 8)}
	cp.writeCredentials(t)

	etcd := ns.Command(filepath.Join(bin, "etcd"),
		"--name", "test", "--data-dir", filepath.Join(cp.dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "test=http://127.0.0.1:2380", "--log-level", "error",
		"--unsafe-no-fsync")
	startLogged(t, etcd, filepath.Join(cp.dir, "etcd.log"))

	api := ns.Command(filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "127.0.0.1", "--secure-port", "6443", "--advertise-address", "127.0.0.1",
		"--tls-cert-file", filepath.Join(cp.dir, "apiserver.crt"), "--tls-private-key-file", filepath.Join(cp.dir, "apiserver.key"),
		"--token-auth-file", filepath.Join(cp.dir, "tokens.csv"),
		"--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(cp.dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(cp.dir, "sa.key"),
		"--service-cluster-ip-range", serviceCIDRs,
		"--service-node-port-range", "30000-32767",
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--cert-dir", filepath.Join(cp.dir, "certs"),
		"--v", "0")
	startLogged(t, api, filepath.Join(cp.dir, "apiserver.log"))

	client := cp.client(t)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if err == nil && string(body) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(cp.dir, "apiserver.log"))
			t.Fatalf("kube-apiserver not ready after 90 s: %v %s\n%s", err, body, tail(string(log), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The default namespace and service account machinery come up with
	// the server; wait for the namespace objects are created in.
	for {
		_, err := client.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no default namespace: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cp
}

// startLogged starts cmd with its output in logPath, and stops it when
// the test ends.
func startLogged(t testing.TB, cmd *exec.Cmd, logPath string) {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			f.Close()
		})
	})
}

// client is a clientset for the API server that dials inside the
// namespace: the test process itself stays in its own.
func (cp *controlPlane) client(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	cfg := &rest.Config{
		Host:            "https://" + apiserverAddr,
		BearerToken:     cp.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.caPEM},
		QPS:             500,
		Burst:           1000,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := cp.ns.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeCredentials makes a throw-away CA, the API server's certificate, a
// service-account key pair, the token file and a kubeconfig.
func (cp *controlPlane) writeCredentials(t testing.TB) {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "xdplane-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	cp.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	srvKey := newKey(t)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey := newKey(t)
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ca.crt":        cp.caPEM,
		"apiserver.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"apiserver.key": keyPEM(t, srvKey),
		"sa.key":        keyPEM(t, saKey),
		"sa.pub":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":    []byte(cp.token + `,xdplane-test,xdplane-test,"system:masters"` + "\n"),
		"kubeconfig": []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://%s
    certificate-authority: %s
users:
- name: test
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`, apiserverAddr, filepath.Join(cp.dir, "ca.crt"), cp.token)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(cp.dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp.kubeconfig = filepath.Join(cp.dir, "kubeconfig")
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyPEM(t testing.TB, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
