package handlers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router"
)

func TestACredentialIsReadFromTheSystemdCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	for name, content := range map[string]string{
		"github-token": "ghp_from_systemd\n", // systemd keeps the file as written; the newline goes
		"api0x":        "zero-x\r\n",
		"empty":        "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		want    string
		wantErr string
	}{
		{"github-token", "ghp_from_systemd", ""},
		{"api0x", "zero-x", ""},
		{"absent", "", "reading secret"},
		{"empty", "", "is empty"},
		{"../github-token", "", "not a file name"},
		{`..\github-token`, "", "not a file name"},
		{"github-token\x00", "", "not a file name"},
		{"..", "", "not a file name"},
		{".", "", "not a file name"},
		{"", "", "not a file name"},
	}
	for _, tt := range tests {
		t.Run(strings.ToValidUTF8(tt.name, "?"), func(t *testing.T) {
			s, err := CredentialSecret(tt.name)
			if err == nil {
				err = s.Load()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CredentialSecret(%q) = %v, want an error containing %q", tt.name, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CredentialSecret(%q): %v", tt.name, err)
			}
			if v, err := s.Value(router.Env{}); err != nil || string(v) != tt.want {
				t.Errorf("value %q (%v), want %q", v, err, tt.want)
			}
		})
	}
}

func TestACredentialNeedsTheSystemdCredentialsDirectory(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := CredentialSecret("github-token"); err == nil || !strings.Contains(err.Error(), "LoadCredential=") {
		t.Fatalf("without $CREDENTIALS_DIRECTORY: %v, want an error naming LoadCredential=", err)
	}
}
