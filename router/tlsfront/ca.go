package tlsfront

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The CA's files in its directory (LoadOrCreateCA).
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// How long a leaf lives, and how long before its end a new one is minted.
const (
	leafLife     = 24 * time.Hour
	leafRenew    = time.Hour
	maxLeaves    = 4096            // cached leaves; past it the cache starts over
	leafBackdate = 5 * time.Minute // clocks a little behind still accept it
)

// CA is interceptd's own certificate authority: it signs the short-lived
// leaf certificates the front presents for the names it intercepts. Its key
// is the crown jewel (docs/https.md): whoever holds it can impersonate any
// name to every client that trusts it.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
	now    func() time.Time
}

// LoadOrCreateCA loads the CA from dir (CACertFile, CAKeyFile), making one
// there first when neither file exists: an ECDSA P-256 key, written 0600, and
// a certificate valid for ten years. One file without the other is an error:
// it never overwrites a key.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCA(certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr == nil || keyErr == nil:
		return nil, fmt.Errorf("the CA in %s is half there (%s and %s must both exist or neither): refusing to make a new key over it", dir, CACertFile, CAKeyFile)
	default:
		return nil, fmt.Errorf("reading the CA in %s: %w", dir, errors.Join(certErr, keyErr))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the CA's directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making the CA's key: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "interceptd CA (" + host + ")", Organization: []string{"interceptd"}},
		NotBefore:    now.Add(-leafBackdate), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("making the CA's certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// The key first, exclusively: two daemons starting at once cannot both
	// write one.
	if err := writeExclusive(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, fmt.Errorf("writing the CA's key: %w", err)
	}
	if err := writeExclusive(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("writing the CA's certificate: %w", err)
	}
	return LoadCA(certPath, keyPath)
}

func writeExclusive(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadCA loads a CA an operator supplies: a PEM certificate that is a CA
// and the PEM private key (PKCS#8, EC or PKCS#1) that matches it. The key
// file must not be readable by group or others.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	if st, err := os.Stat(keyFile); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the CA key %s is readable by others (mode %v): chmod 600 it", keyFile, st.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA certificate and key: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("the CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("the certificate in %s is not a CA (no basic constraints CA:TRUE with keyCertSign)", certFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the CA key in %s cannot sign", keyFile)
	}
	return &CA{cert: cert, key: signer, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		leaves: map[string]*tls.Certificate{}, now: time.Now}, nil
}

// CertPEM is the CA's certificate, PEM: what clients in sandboxes trust.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Leaf returns a certificate for name, signed by the CA: cached while it has
// more than an hour left, else minted (minted says which). It names exactly
// name (no wildcard), lives a day, and has a key of its own.
func (ca *CA) Leaf(name string) (cert *tls.Certificate, minted bool, err error) {
	if !HostName(name) {
		return nil, false, fmt.Errorf("minting a certificate for %q: %w", name, errNotHostName)
	}
	now := ca.now()
	ca.mu.Lock()
	if c, ok := ca.leaves[name]; ok && now.Before(c.Leaf.NotAfter.Add(-leafRenew)) {
		ca.mu.Unlock()
		return c, false, nil
	}
	ca.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-leafBackdate), NotAfter: now.Add(leafLife),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, false, fmt.Errorf("minting a certificate for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, false, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	ca.mu.Lock()
	if len(ca.leaves) >= maxLeaves {
		ca.leaves = map[string]*tls.Certificate{}
	}
	ca.leaves[name] = c
	ca.mu.Unlock()
	return c, true, nil
}

var errNotHostName = errors.New("not a host name")

// HostName reports whether a leaf may name name: a host name as the front
// takes it from an SNI (router/tlspeek's rule, normalised), lower-case
// letters, digits, '-' and '_' in labels of 1 to 63 bytes, at most 253 bytes.
// No wildcard ("*.example.com", a glob key's host part, is no host),
// nothing long or odd.
func HostName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}
