// Package buildinfo says which build of interceptd runs. It is the one place
// the version lives: the CLI prints it, the daemon reports it in
// `interceptd status` and in interceptd_build_info.
package buildinfo

// version is set at link time for release builds:
//
//	go build -ldflags "-X github.com/interceptd/interceptd/internal/buildinfo.version=1.2.3"
//
// It is unexported so that no package can change it at run time: everything
// reads it through Version.
var version = "0.1.0-dev"

// Version is the version of this build.
func Version() string { return version }
