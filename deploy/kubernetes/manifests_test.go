// Package kubernetes holds the manifests that deploy interceptd on a
// Kubernetes cluster; this test decodes every one strictly with the
// Kubernetes API types, so that a typo'd or misplaced field fails CI
// instead of being dropped by the API server, and checks that they agree
// with each other and with the daemon (its config parser, its probes).
package kubernetes

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/internal/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var manifests embed.FS

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) these manifests use: k8s.io/api has no type
// for it, and importing the operator's module for one struct is not worth
// its dependencies. Strict decoding refuses any field not declared here,
// so a field the manifest gains must be added (from the operator's API
// reference) on purpose.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// decoder decodes the built-in kinds strictly: unknown and duplicate
// fields are errors.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// decodeAll decodes every document of a manifest file.
func decodeAll(name string, raw []byte) ([]any, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []any
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "ServiceMonitor" {
			var sm serviceMonitor
			if err := yaml.UnmarshalStrict(doc, &sm); err != nil {
				return nil, fmt.Errorf("%s: document %d (%s): %w", name, i, tm.Kind, err)
			}
			out = append(out, &sm)
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", name, i, tm.Kind, err)
		}
		out = append(out, obj)
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// objects decodes every manifest of the directory.
func objects(t *testing.T) map[string]any {
	t.Helper()
	names, err := fs.Glob(manifests, "*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string]any{}
	for _, n := range names {
		raw, _ := manifests.ReadFile(n)
		objs, err := decodeAll(n, raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			var key string
			switch o := o.(type) {
			case *serviceMonitor:
				key = "ServiceMonitor/" + o.Name
			case metav1.Object:
				key = fmt.Sprintf("%T/%s", o, o.GetName())
			}
			out[key] = o
		}
	}
	return out
}

func TestEveryManifestDecodesStrictlyWithTheKubernetesTypes(t *testing.T) {
	got := slices.Sorted(func(yield func(string) bool) {
		for k := range objects(t) {
			if !yield(k) {
				return
			}
		}
	})
	want := []string{"*v1.ConfigMap/interceptd-config", "*v1.DaemonSet/interceptd", "*v1.Namespace/interceptd",
		"*v1.Service/interceptd-metrics", "ServiceMonitor/interceptd"}
	if !slices.Equal(got, want) {
		t.Errorf("objects %q, want %q", got, want)
	}
}

func TestATypoInAManifestFailsTheDecoding(t *testing.T) {
	read := func(n string) string { b, _ := manifests.ReadFile(n); return string(b) }
	tests := []struct {
		name, file, from, to, wantErr string
	}{
		{"a misspelt pod field", "daemonset.yaml", "hostNetwork: true", "hostNetwrok: true", "hostNetwrok"},
		{"a misspelt field deep in a volume mount", "daemonset.yaml", "mountPropagation: HostToContainer", "mountPropogation: HostToContainer", "mountPropogation"},
		{"a value of the wrong type", "daemonset.yaml", "containerPort: 9780", "containerPort: nine", "containerPort"},
		{"a field given twice", "service.yaml", "  clusterIP: None\n", "  clusterIP: None\n  clusterIP: None\n", "clusterIP"},
		{"a misspelt ServiceMonitor field", "servicemonitor.yaml", "  endpoints:", "  endpoint:", "endpoint"},
		{"an unknown kind", "namespace.yaml", "kind: Namespace", "kind: Namespaec", "Namespaec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := read(tt.file)
			if !strings.Contains(src, tt.from) {
				t.Fatalf("%s no longer has %q: update the case", tt.file, tt.from)
			}
			if _, err := decodeAll(tt.file, []byte(src)); err != nil {
				t.Fatalf("the manifest as committed: %v", err)
			}
			_, err := decodeAll(tt.file, []byte(strings.Replace(src, tt.from, tt.to, 1)))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestTheManifestsAgreeWithEachOtherAndWithTheDaemon(t *testing.T) {
	objs := objects(t)
	ds := objs["*v1.DaemonSet/interceptd"].(*appsv1.DaemonSet)
	cm := objs["*v1.ConfigMap/interceptd-config"].(*corev1.ConfigMap)
	svc := objs["*v1.Service/interceptd-metrics"].(*corev1.Service)
	sm := objs["ServiceMonitor/interceptd"].(*serviceMonitor)
	pod := ds.Spec.Template.Spec
	var daemon corev1.Container
	for _, c := range pod.Containers {
		if c.Name == "interceptd" {
			daemon = c
		}
	}

	t.Run("the ConfigMap's config passes interceptd config check", func(t *testing.T) {
		cfg, err := config.Parse("configmap.yaml", []byte(cm.Data["config.yaml"]))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AdminSocket != "/run/interceptd/admin.sock" || !strings.HasSuffix(cfg.Listen.Metrics, ":9780") || strings.HasPrefix(cfg.Listen.Metrics, "127.") {
			t.Errorf("admin socket %s, metrics %s: want the socket on the node's /run/interceptd and metrics on the node's address", cfg.AdminSocket, cfg.Listen.Metrics)
		}
	})
	t.Run("the DaemonSet runs on the host's network with capabilities, not privileged", func(t *testing.T) {
		sc := daemon.SecurityContext
		if !pod.HostNetwork || pod.HostPID || sc == nil || sc.Privileged == nil || *sc.Privileged {
			t.Fatalf("hostNetwork %v, hostPID %v, securityContext %+v", pod.HostNetwork, pod.HostPID, sc)
		}
		var caps []string
		for _, c := range sc.Capabilities.Add {
			caps = append(caps, string(c))
		}
		if !slices.Equal(caps, []string{"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("capabilities %v, dropped %v", caps, sc.Capabilities.Drop)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Error("the daemon needs no API token")
		}
	})
	t.Run("the probes ask the daemon's health endpoints on its metrics port", func(t *testing.T) {
		for probe, want := range map[*corev1.Probe]string{daemon.LivenessProbe: "/healthz", daemon.ReadinessProbe: "/readyz", daemon.StartupProbe: "/healthz"} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "metrics" {
				t.Errorf("probe %+v, want GET %s on port metrics", probe, want)
			}
		}
		if len(daemon.Ports) != 1 || daemon.Ports[0].Name != "metrics" || daemon.Ports[0].ContainerPort != 9780 ||
			ds.Spec.Template.Annotations["prometheus.io/port"] != "9780" {
			t.Errorf("ports %+v, annotations %v", daemon.Ports, ds.Spec.Template.Annotations)
		}
	})
	t.Run("the mounts reach what the daemon and the plugin share on the node", func(t *testing.T) {
		vols := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			vols[v.Name] = v
		}
		want := map[string]string{"/run/interceptd": "/run/interceptd", "/run/netns": "/run/netns", "/var/lib/interceptd": "/var/lib/interceptd", "/host/proc/sys/net": "/proc/sys/net", "/run/xtables.lock": "/run/xtables.lock"}
		for _, m := range daemon.VolumeMounts {
			v, ok := vols[m.Name]
			if !ok {
				t.Errorf("mount %s names no volume", m.Name)
				continue
			}
			if host, ok := want[m.MountPath]; ok {
				if v.HostPath == nil || v.HostPath.Path != host {
					t.Errorf("%s is mounted from %+v, want the node's %s", m.MountPath, v.VolumeSource, host)
				}
				if m.MountPath == "/run/netns" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer) {
					t.Error("/run/netns must see the namespaces the runtime mounts later (HostToContainer)")
				}
				delete(want, m.MountPath)
			}
			if m.Name == "config" && v.ConfigMap.Name != cm.Name {
				t.Errorf("the config volume is ConfigMap %s, not %s", v.ConfigMap.Name, cm.Name)
			}
		}
		if len(want) != 0 {
			t.Errorf("not mounted: %v", want)
		}
		var sysctlDir string
		for _, e := range daemon.Env {
			if e.Name == "INTERCEPTD_SYSCTL_DIR" {
				sysctlDir = e.Value
			}
		}
		if sysctlDir != "/host/proc/sys" {
			t.Errorf("INTERCEPTD_SYSCTL_DIR=%q: the node's /proc/sys/net is mounted under /host/proc/sys", sysctlDir)
		}
	})
	t.Run("the init container installs the plugin into the node's CNI dirs", func(t *testing.T) {
		if len(pod.InitContainers) != 1 || !slices.Contains(pod.InitContainers[0].Command, "install") ||
			!slices.Contains(pod.InitContainers[0].Command, "--bin-dir=/host/opt/cni/bin") {
			t.Errorf("init containers: %+v", pod.InitContainers)
		}
	})
	t.Run("every command line names a command and flags interceptd has", func(t *testing.T) {
		// docs/cli.md is generated from the command tree, and a test in
		// cmd/interceptd keeps it current: its sections are the CLI.
		ref, err := os.ReadFile("../../docs/cli.md")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			argv := append(slices.Clone(c.Command), c.Args...)
			if len(argv) > 0 && strings.HasSuffix(argv[0], "/interceptd") {
				argv = argv[1:]
			}
			var sub []string
			for _, a := range argv {
				if strings.HasPrefix(a, "-") {
					break
				}
				sub = append(sub, a)
			}
			title := "## " + strings.Join(append([]string{"interceptd"}, sub...), " ") + "\n"
			i := strings.Index(string(ref), title)
			if len(sub) == 0 || i < 0 {
				t.Errorf("container %s runs %q: no such command in docs/cli.md", c.Name, argv)
				continue
			}
			section := string(ref)[i+len(title):]
			if j := strings.Index(section, "\n## "); j >= 0 {
				section = section[:j]
			}
			for _, a := range argv[len(sub):] {
				flag, _, _ := strings.Cut(a, "=")
				if !strings.Contains(section, "      "+flag+" ") {
					t.Errorf("container %s: interceptd %s has no flag %s", c.Name, strings.Join(sub, " "), flag)
				}
			}
		}
	})
	t.Run("the Service and the ServiceMonitor find the pods and their port", func(t *testing.T) {
		for k, v := range svc.Spec.Selector {
			if ds.Spec.Template.Labels[k] != v {
				t.Errorf("the Service selects %s=%s, the pods are %v", k, v, ds.Spec.Template.Labels)
			}
		}
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				t.Errorf("the ServiceMonitor selects %s=%s, the Service is %v", k, v, svc.Labels)
			}
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
			t.Errorf("ServiceMonitor %+v, Service ports %+v", sm.Spec, svc.Spec.Ports)
		}
	})
}
