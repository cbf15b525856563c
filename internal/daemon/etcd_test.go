package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
)

func TestOpenEtcdReadsThePasswordFileAndNamesTheFieldsItCannotUse(t *testing.T) {
	c := etcdtest.Start(t)
	admin := c.Client(t)
	ctx := context.Background()
	if _, err := admin.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	// As systemd-creds or an editor leaves it: with a newline.
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	base := config.Default().Store.Etcd
	base.Endpoints, base.RequestTimeout = c.Endpoints(), time.Second
	quotas := func() store.Amounts { return store.Amounts{} }

	t.Run("the password file's password, without its newline, is let in", func(t *testing.T) {
		e := base
		e.Username, e.PasswordFile = "root", pw
		s, err := OpenEtcd(e, quotas, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	tests := []struct {
		name, field string
		edit        func(*config.Etcd)
	}{
		{"a password file that does not exist", "store.etcd.password_file", func(e *config.Etcd) {
			e.Username, e.PasswordFile = "root", filepath.Join(dir, "missing")
		}},
		{"a CA file that does not exist", "store.etcd.tls", func(e *config.Etcd) { e.TLS.CAFile = filepath.Join(dir, "missing.pem") }},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is an error naming "+tt.field, func(t *testing.T) {
			e := base
			tt.edit(&e)
			s, err := OpenEtcd(e, quotas, nil, nil)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("%v does not name %s", err, tt.field)
			}
		})
	}
}
