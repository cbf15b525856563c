package netns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
)

// Pod identity. A Kubernetes pod is known across hosts by its namespace and
// name, not by the container id its runtime gives each incarnation, so the
// CNI plugin names the sandbox of a pod after those (CNI_ARGS
// K8S_POD_NAMESPACE and K8S_POD_NAME): what the pod stored under its
// sandbox's name in a shared store is found again wherever it is scheduled
// next (a StatefulSet's pods keep their names; a Deployment's get new ones).

var (
	// dnsLabel is a Kubernetes namespace name (RFC 1123 label).
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// dnsSubdomain is a Kubernetes pod name (RFC 1123 subdomain), whose
	// length (at most 253) is checked apart.
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// podHashLen is how many hex digits of SHA-256 stand for what a long pod
// identity loses to the length bound: 64 bits, so that two pods of a
// cluster meet on one name only by a collision no cluster reaches.
const podHashLen = 16

// PodSandboxName is the sandbox name of the pod called pod in the
// Kubernetes namespace ns: "<ns>.<pod>", which a sandbox name may hold (a
// namespace has no dot, so the first dot splits the two and no two pods
// share a name). One longer than a sandbox name's 64 characters keeps its
// first 47 and ends in "_" and 16 hex digits of the SHA-256 of "<ns>/<pod>":
// "_" is in no Kubernetes name, so a shortened name never equals a whole
// one. Names that Kubernetes would not accept are an error.
func PodSandboxName(ns, pod string) (string, error) {
	if !dnsLabel.MatchString(ns) {
		return "", fmt.Errorf("%w: pod namespace %q is not a Kubernetes namespace name", ErrInvalidName, ns)
	}
	if len(pod) > 253 || !dnsSubdomain.MatchString(pod) {
		return "", fmt.Errorf("%w: pod name %q is not a Kubernetes pod name", ErrInvalidName, pod)
	}
	name := ns + "." + pod
	if len(name) <= 64 {
		return name, nil
	}
	sum := sha256.Sum256([]byte(ns + "/" + pod))
	return name[:64-1-podHashLen] + "_" + hex.EncodeToString(sum[:])[:podHashLen], nil
}
