package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/config"
)

func TestTheS3KeysComeFromFilesOrCredentialsAndAFailureNamesTheField(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "access"), []byte("AK\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("SK\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	base := config.S3{Endpoint: "127.0.0.1:9", Bucket: "blobs", PathStyle: true, Insecure: true, RequestTimeout: time.Second}
	tests := []struct {
		name  string
		tweak func(*config.S3)
		want  string // "" for success
	}{
		{"keys from files", func(c *config.S3) {
			c.AccessKeyFile, c.SecretKeyFile = filepath.Join(dir, "access"), filepath.Join(dir, "secret")
		}, ""},
		{"keys from systemd credentials", func(c *config.S3) { c.AccessKeyCredential, c.SecretKeyCredential = "access", "secret" }, ""},
		{"a missing key file names its field", func(c *config.S3) {
			c.AccessKeyFile, c.SecretKeyFile = filepath.Join(dir, "access"), filepath.Join(dir, "nope")
		}, "store.blobs.s3.secret_key"},
		{"an empty key file names its field", func(c *config.S3) {
			c.AccessKeyFile, c.SecretKeyFile = filepath.Join(dir, "empty"), filepath.Join(dir, "secret")
		}, "store.blobs.s3.access_key"},
		{"a credential that is a path is refused", func(c *config.S3) { c.AccessKeyCredential, c.SecretKeyCredential = "../access", "secret" }, "store.blobs.s3.access_key_credential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.tweak(&c)
			s, err := OpenS3Blobs(c, nil)
			switch {
			case tt.want == "" && (err != nil || s == nil):
				t.Fatalf("open: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("open: %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
