package netns

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSysctlsAreWrittenWhereTheEnvironmentSays(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(SysctlDirEnv, dir)
	if err := os.MkdirAll(filepath.Join(dir, "net", "ipv4", "conf", "icd0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeSysctl("net/ipv4/conf/icd0/rp_filter", "1"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "net", "ipv4", "conf", "icd0", "rp_filter")); err != nil || string(b) != "1" {
		t.Errorf("rp_filter under %s: %q %v", dir, b, err)
	}
	t.Setenv(SysctlDirEnv, "")
	if got := sysctlPath("net/ipv4/ip_forward"); got != "/proc/sys/net/ipv4/ip_forward" {
		t.Errorf("without the variable: %s", got)
	}
}
