package tlspeek_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router/tlspeek"
)

// echKey makes an ECH configuration (RFC 9849's ECHConfig, X25519 with
// HKDF-SHA256 and AES-128-GCM) whose public name is publicName, with the
// server's key for it.
func echKey(t *testing.T, publicName string) (configList []byte, key tls.EncryptedClientHelloKey) {
	t.Helper()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	contents := []byte{7}                   // config_id
	contents = append(contents, 0x00, 0x20) // kem_id: DHKEM(X25519, HKDF-SHA256)
	contents = append(contents, vec16(priv.PublicKey().Bytes())...)
	contents = append(contents, vec16([]byte{0, 1, 0, 1})...) // HKDF-SHA256, AES-128-GCM
	contents = append(contents, 0)                            // maximum_name_length
	contents = append(contents, vec8([]byte(publicName))...)
	contents = append(contents, vec16()...) // no extensions
	config := append([]byte{0xfe, 0x0d}, vec16(contents)...)
	return vec16(config), tls.EncryptedClientHelloKey{Config: config, PrivateKey: priv.Bytes()}
}

// TestWithECHPeekSeesTheOuterName runs a real ECH handshake through Peek:
// the hello on the wire names the public name and carries the extension,
// the server decrypts the inner hello and sees the real name, and the
// handshake completes as if Peek were not there.
func TestWithECHPeekSeesTheOuterName(t *testing.T) {
	cert, pool := testCert(t, "secret.test.internal", "public.test.internal")
	configList, key := echKey(t, "public.test.internal")
	client, server := pipe(t)
	type result struct {
		hello tlspeek.Hello
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		h, conn, err := tlspeek.Peek(server, 5*time.Second)
		if err != nil {
			done <- result{err: err}
			return
		}
		s := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, EncryptedClientHelloKeys: []tls.EncryptedClientHelloKey{key}})
		err = s.Handshake()
		if err == nil {
			_, err = s.Write([]byte("hi"))
		}
		done <- result{h, s.ConnectionState(), err}
		s.Close()
	}()
	c := tls.Client(client, &tls.Config{ServerName: "secret.test.internal", RootCAs: pool, EncryptedClientHelloConfigList: configList})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hi" {
		t.Fatalf("client read %q (%v)", got, err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.state.ECHAccepted || r.state.ServerName != "secret.test.internal" {
		t.Errorf("server saw ECH accepted %v, name %q", r.state.ECHAccepted, r.state.ServerName)
	}
	want := tlspeek.Hello{ServerName: "public.test.internal", ECH: true, Versions: []uint16{tls.VersionTLS13}}
	if !reflect.DeepEqual(r.hello, want) {
		t.Errorf("peeked %+v, want %+v", r.hello, want)
	}
}
