package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bashCompletion is bash-completion's library, which the script cobra
// writes for bash builds on.
const bashCompletion = "/usr/share/bash-completion/bash_completion"

// complete asks bash, with interceptd's completion script loaded as a user
// loads it, for the completions of words (the last one being typed), with
// the admin socket sock.
func complete(t *testing.T, sock string, words ...string) (candidates []string, stderr string) {
	t.Helper()
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("%s is not there: run .ci/test, or apt-get install bash-completion", bashCompletion)
	}
	script := `source ` + bashCompletion + `
source <("$BIN" completion bash)
COMP_WORDS=("$BIN" "$@")
COMP_CWORD=$#
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
__start_interceptd
printf '%s\n' "${COMPREPLY[@]}"`
	cmd := exec.Command("bash", append([]string{"-c", script, "bash"}, words...)...)
	cmd.Env = append(os.Environ(), "BIN="+binary, "INTERCEPTD_SOCKET="+sock)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, errb.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			candidates = append(candidates, l)
		}
	}
	return candidates, errb.String()
}

func TestBashCompletesSandboxNamesFromTheDaemon(t *testing.T) {
	e := NewEnv(t, Options{})
	for _, name := range []string{"web1", "web2", "api"} {
		e.Create(name)
	}
	missing := filepath.Join(t.TempDir(), "nothing-here.sock")
	tests := []struct {
		name      string
		sock      string
		words     []string
		want, not []string
	}{
		{"sandbox show offers the daemon's sandboxes", e.Socket, []string{"sandbox", "show", ""}, []string{"web1", "web2", "api"}, nil},
		{"what is typed narrows them", e.Socket, []string{"sandbox", "delete", "we"}, []string{"web1", "web2"}, []string{"api"}},
		{"state get's first argument is a sandbox", e.Socket, []string{"state", "get", "a"}, []string{"api"}, []string{"web1"}},
		{"subcommands complete too", e.Socket, []string{"sandbox", "po"}, []string{"policy"}, nil},
		{"only the flags of the command", e.Socket, []string{"sandbox", "list", "--"}, []string{"--output", "--admin-socket"}, []string{"--internet", "--purge"}},
		{"without a daemon, no names and no word", missing, []string{"sandbox", "show", ""}, nil, []string{"web1", "api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, stderr := complete(t, tt.sock, tt.words...)
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("bash offers %q, not %q", got, w)
				}
			}
			for _, w := range tt.not {
				if slices.Contains(got, w) {
					t.Errorf("bash offers %q, %q included", got, w)
				}
			}
			// bash itself notes that compopt runs outside a real completion;
			// interceptd must say nothing.
			if strings.Contains(stderr, "interceptd") || strings.Contains(stderr, "daemon") {
				t.Errorf("completion wrote %q", stderr)
			}
		})
	}
}
