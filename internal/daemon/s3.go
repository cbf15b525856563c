package daemon

import (
	"fmt"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/s3store"
)

// s3Kinds are the kinds store.blobs.backend s3 keeps in the object store.
var s3Kinds = []string{store.KindBlob}

// ledgerEngine names the engine that keeps the S3 blobs' ledger: etcd
// (fleet-wide) when KV is there, else this host's bbolt file (see Start).
func (d *Daemon) ledgerEngine() string {
	if d.etcd != nil {
		return "etcd"
	}
	return "bbolt"
}

// OpenS3Blobs makes the S3 blob store of store.blobs.s3, its keys read
// from their files or systemd credentials (never from the config), as the
// proxy handler's secrets are. m may be nil.
func OpenS3Blobs(c config.S3, m *s3store.Metrics) (*s3store.Store, error) {
	access, err := s3Key("access_key", c.AccessKeyFile, c.AccessKeyCredential)
	if err != nil {
		return nil, err
	}
	secret, err := s3Key("secret_key", c.SecretKeyFile, c.SecretKeyCredential)
	if err != nil {
		return nil, err
	}
	return s3store.New(s3store.Options{
		Endpoint: c.Endpoint, Bucket: c.Bucket, Region: c.Region, Prefix: c.Prefix, PathStyle: c.PathStyle,
		AccessKey: access, SecretKey: secret, CAFile: c.TLS.CAFile, Insecure: c.Insecure,
		RequestTimeout: c.RequestTimeout, Metrics: m,
	})
}

func s3Key(name, file, credential string) (string, error) {
	s := &handlers.FileSecret{Path: file}
	if credential != "" {
		var err error
		if s, err = handlers.CredentialSecret(credential); err != nil {
			return "", fmt.Errorf("store.blobs.s3.%s_credential: %w", name, err)
		}
	}
	if err := s.Load(); err != nil {
		return "", fmt.Errorf("store.blobs.s3.%s: %w", name, err)
	}
	v, err := s.Value(router.Env{})
	return string(v), err
}
