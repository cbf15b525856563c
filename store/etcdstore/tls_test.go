package etcdstore_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, kind string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test etcd ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kd)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func TestTLSWithAClientCertificateReachesAnEtcdThatAsksForOne(t *testing.T) {
	p := newPKI(t)
	client, err := etcdstore.TLSConfig(p.ca, p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	c := etcdtest.StartTLS(t, p.ca, p.serverCert, p.serverKey, client)
	tests := []struct {
		name string
		tls  func() *tls.Config
		ok   bool
	}{
		{"the CA and a client certificate are let in", func() *tls.Config { return client }, true},
		{"the CA without a client certificate is refused", func() *tls.Config {
			c, err := etcdstore.TLSConfig(p.ca, "", "")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, false},
		{"a client that does not trust the CA is refused", func() *tls.Config {
			c, err := etcdstore.TLSConfig("", p.clientCert, p.clientKey)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, c.Endpoints(), "/tls/", etcdstore.Options{TLS: tt.tls(), RequestTimeout: time.Second})
			err := s.Ping(context.Background())
			if tt.ok != (err == nil) {
				t.Fatalf("ping: %v", err)
			}
			if !tt.ok && !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("a refused handshake: %v, want store.ErrUnavailable", err)
			}
		})
	}
}

func TestTLSConfigRefusesFilesThatDoNotMakeOne(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name          string
		ca, cert, key string
	}{
		{"a CA file that does not exist", "/nonexistent/ca.pem", "", ""},
		{"a CA file without a certificate", p.clientKey, "", ""},
		{"a certificate without its key", p.ca, p.clientCert, ""},
		{"a key that is not the certificate's", p.ca, p.clientCert, p.serverKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := etcdstore.TLSConfig(tt.ca, tt.cert, tt.key); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAuthLetsTheRightPasswordInAndRefusesAWrongOne(t *testing.T) {
	c := etcdtest.Start(t)
	admin, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enabling auth: %v", err)
		}
	}
	good := open(t, c.Endpoints(), "/auth/", etcdstore.Options{Username: "root", Password: "rootpw", RequestTimeout: time.Second})
	if err := good.Ping(ctx); err != nil {
		t.Fatalf("the right password: %v", err)
	}
	kv := good.Keys(store.KindKV, "ns", store.ScopeShared, store.Limits{})
	if err := kv.Put("k", store.Entry{Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	bad, err := etcdstore.Open(etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "/auth/", Username: "root", Password: "wrong", RequestTimeout: time.Second})
	if err == nil {
		defer bad.Close()
		err = bad.Ping(ctx)
	}
	if err == nil {
		t.Fatal("a wrong password was let in")
	}
	anonymous := open(t, c.Endpoints(), "/auth/", etcdstore.Options{RequestTimeout: time.Second})
	if _, err := anonymous.Keys(store.KindKV, "ns", store.ScopeShared, store.Limits{}).Get("k"); err == nil {
		t.Fatal("a client without credentials read a key")
	}
}
