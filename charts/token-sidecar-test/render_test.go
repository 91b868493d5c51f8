package charttest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const (
	chartDir     = "../token-sidecar"
	userChartDir = "testdata/user-chart"
	releaseName  = "rel"
	namespace    = "apps"
	// kubeVersion is the cluster version the chart is rendered for: the
	// oldest the chart claims (native sidecars need 1.29) would do, a
	// current one is what users run.
	kubeVersion = "v1.34.0"
)

// manifest is what one render produced, decoded strictly by kind.
type manifest struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	podMonitors     []*monitoringv1.PodMonitor
	serviceMonitors []*monitoringv1.ServiceMonitor
	notes           string
}

func (m *manifest) count() int {
	return len(m.deployments) + len(m.services) + len(m.configMaps) + len(m.podMonitors) + len(m.serviceMonitors)
}

// loadChart loads the token-sidecar chart afresh: rendering a chart with
// dependencies changes it, so no two renders share one.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	return c
}

// loadUserChart loads testdata/user-chart with the token-sidecar chart as
// its dependency, as `helm dependency build` would leave it.
func loadUserChart(t testing.TB) *chart.Chart {
	t.Helper()
	c, err := loader.Load(userChartDir)
	if err != nil {
		t.Fatalf("load %s: %v", userChartDir, err)
	}
	c.AddDependency(loadChart(t))
	return c
}

// values reads values files (relative to testdata/) and YAML snippets, the
// later ones winning key by key, as helm's -f does.
func values(t testing.TB, filesOrYAML ...string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, s := range filesOrYAML {
		data := []byte(s)
		if strings.HasSuffix(s, ".yaml") && !strings.Contains(s, "\n") {
			var err error
			if data, err = os.ReadFile(filepath.Join("testdata", s)); err != nil {
				t.Fatal(err)
			}
		}
		v, err := chartutil.ReadValues(data)
		if err != nil {
			t.Fatalf("values %q: %v", s, err)
		}
		out = mergeValues(out, v.AsMap())
	}
	return out
}

func mergeValues(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				dst[k] = mergeValues(d, sub)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// render renders c with vals the way `helm template` does: dependencies
// resolved, values coalesced and checked against values.schema.json, the
// chart's kubeVersion checked. The error is the schema's or a template's.
func render(t testing.TB, c *chart.Chart, vals map[string]any) (map[string]string, error) {
	t.Helper()
	if err := chartutil.ProcessDependenciesWithMerge(c, vals); err != nil {
		return nil, fmt.Errorf("dependencies: %w", err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	caps.KubeVersion = *kv
	if want := c.Metadata.KubeVersion; want != "" && !chartutil.IsCompatibleRange(want, kubeVersion) {
		return nil, fmt.Errorf("chart needs kubeVersion %s, not %s", want, kubeVersion)
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(c, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	return engine.Render(c, rv)
}

// mustRender renders and decodes, failing the test on any error.
func mustRender(t testing.TB, c *chart.Chart, vals map[string]any) *manifest {
	t.Helper()
	files, err := render(t, c, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return decode(t, files)
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decode splits the rendered files into documents and decodes each strictly
// into its API type: a field the type does not have is an error, as it would
// be for kubectl apply --validate=strict.
func decode(t testing.TB, files map[string]string) *manifest {
	t.Helper()
	m := &manifest{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			if !strings.Contains(name, "/charts/") {
				m.notes = files[name]
			}
			continue
		}
		for i, doc := range docSeparator.Split(files[name], -1) {
			if isBlank(doc) {
				continue
			}
			where := fmt.Sprintf("%s (document %d)", name, i)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", where, err, doc)
			}
			var obj metav1.Object
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				obj = add(&m.deployments)
			case "v1 Service":
				obj = add(&m.services)
			case "v1 ConfigMap":
				obj = add(&m.configMaps)
			case "monitoring.coreos.com/v1 PodMonitor":
				obj = add(&m.podMonitors)
			case "monitoring.coreos.com/v1 ServiceMonitor":
				obj = add(&m.serviceMonitors)
			default:
				t.Fatalf("%s: unexpected object %s %s", where, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s: strict decode of %s: %v\n%s", where, tm.Kind, err, doc)
			}
			checkMeta(t, where, obj)
		}
	}
	return m
}

// add appends a new, empty object to list and returns it to decode into.
func add[T any, PT interface {
	*T
	metav1.Object
}](list *[]PT) metav1.Object {
	o := PT(new(T))
	*list = append(*list, o)
	return o
}

func isBlank(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// checkMeta checks what the API server would refuse in metadata.
func checkMeta(t testing.TB, where string, o metav1.Object) {
	t.Helper()
	for _, msg := range validation.IsDNS1123Subdomain(o.GetName()) {
		t.Errorf("%s: name %q: %s", where, o.GetName(), msg)
	}
	checkLabels(t, where, o.GetLabels())
}

func checkLabels(t testing.TB, where string, labels map[string]string) {
	t.Helper()
	for k, v := range labels {
		for _, msg := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label key %q: %s", where, k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s value %q: %s", where, k, v, msg)
		}
	}
}

// onlyDeployment returns the one Deployment of a render.
func (m *manifest) onlyDeployment(t testing.TB) *appsv1.Deployment {
	t.Helper()
	if len(m.deployments) != 1 {
		t.Fatalf("got %d Deployments, want 1", len(m.deployments))
	}
	return m.deployments[0]
}

// soleDeployment checks that the render holds one object, the Deployment
// called name, that its selector matches its pod, and that the pod meets the
// restricted Pod Security Standard.
func (m *manifest) soleDeployment(t testing.TB, name string) *appsv1.Deployment {
	t.Helper()
	if m.count() != 1 {
		t.Fatalf("got %d objects, want only the Deployment %s", m.count(), name)
	}
	d := m.onlyDeployment(t)
	if d.Name != name {
		t.Errorf("Deployment %q, want %q", d.Name, name)
	}
	sel := d.Spec.Selector.MatchLabels
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match pod labels %v", sel, d.Spec.Template.Labels)
	}
	checkRestrictedPod(t, &d.Spec.Template.Spec)
	return d
}

// sidecar finds the token-sidecar container in a pod spec and reports
// whether it is a native sidecar (an init container).
func sidecar(t testing.TB, pod *corev1.PodSpec) (c *corev1.Container, native bool) {
	t.Helper()
	var found []*corev1.Container
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == "token-sidecar" {
			found, native = append(found, &pod.InitContainers[i]), true
		}
	}
	for i := range pod.Containers {
		if pod.Containers[i].Name == "token-sidecar" {
			found = append(found, &pod.Containers[i])
		}
	}
	if len(found) != 1 {
		t.Fatalf("found the token-sidecar container %d times in the pod, want once", len(found))
	}
	return found[0], native
}

// envMap returns a container's plain env values; valueFrom entries map to
// "<valueFrom>". A name set twice is an error.
func envMap(t testing.TB, c *corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range c.Env {
		if _, dup := out[e.Name]; dup {
			t.Errorf("container %s: env %s set twice", c.Name, e.Name)
		}
		if e.ValueFrom != nil {
			out[e.Name] = "<valueFrom>"
			continue
		}
		out[e.Name] = e.Value
	}
	return out
}

// checkAppURL checks that the app container was told where the sidecar is.
func checkAppURL(t testing.TB, pod *corev1.PodSpec, app, want string) {
	t.Helper()
	if got := envMap(t, containerNamed(t, pod, app))["TOKEN_SIDECAR_URL"]; got != want {
		t.Errorf("%s: TOKEN_SIDECAR_URL = %q, want %q", app, got, want)
	}
}

func portByName(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

// checkSidecar checks what every rendering of the sidecar must have: the
// image, both ports, probes on the admin port, the hardened
// securityContext, resources.
func checkSidecar(t testing.TB, c *corev1.Container, tokenPort, adminPort int32) {
	t.Helper()
	if !strings.HasPrefix(c.Image, "ghcr.io/token-sidecar/token-sidecar:") && !strings.Contains(c.Image, "@sha256:") {
		t.Errorf("image = %q", c.Image)
	}
	for _, p := range []struct {
		name string
		port int32
	}{{"token", tokenPort}, {"admin", adminPort}} {
		got := portByName(c, p.name)
		if got == nil {
			t.Errorf("no container port named %s; ports: %+v", p.name, c.Ports)
			continue
		}
		if got.ContainerPort != p.port || got.Protocol != corev1.ProtocolTCP {
			t.Errorf("port %s = %d/%s, want %d/TCP", p.name, got.ContainerPort, got.Protocol, p.port)
		}
	}
	if len(c.Ports) != 2 {
		t.Errorf("got %d ports, want 2", len(c.Ports))
	}

	checkProbe(t, "livenessProbe", c.LivenessProbe, "/healthz")
	checkProbe(t, "readinessProbe", c.ReadinessProbe, "/readyz")
	checkProbe(t, "startupProbe", c.StartupProbe, "/readyz")

	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("runAsNonRoot is not true")
	case sc.RunAsUser == nil || *sc.RunAsUser != 65532:
		t.Error("runAsUser is not 65532")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("capabilities = %+v, want drop [ALL]", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("seccompProfile is not RuntimeDefault")
	}

	if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
	}
	for _, vm := range c.VolumeMounts {
		// The only mount: the shared cache's key file, read-only.
		if !strings.HasSuffix(vm.Name, "-shared-cache-keys") || !vm.ReadOnly {
			t.Errorf("volumeMount %+v, want none but the shared cache's read-only key file", vm)
		}
	}
}

func checkProbe(t testing.TB, name string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil {
		t.Errorf("no %s", name)
		return
	}
	if p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "admin" {
		t.Errorf("%s = %+v, want GET %s on port admin", name, p.ProbeHandler, path)
	}
	if p.PeriodSeconds < 1 || p.TimeoutSeconds < 1 || p.FailureThreshold < 1 {
		t.Errorf("%s timing = %d/%d/%d", name, p.PeriodSeconds, p.TimeoutSeconds, p.FailureThreshold)
	}
}

// checkRestrictedPod checks the "restricted" Pod Security Standard for every
// container of a pod: non-root, no privilege escalation, all capabilities
// dropped, RuntimeDefault seccomp (on the pod or the container).
func checkRestrictedPod(t testing.TB, pod *corev1.PodSpec) {
	t.Helper()
	podNonRoot := pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
	podSeccomp := pod.SecurityContext != nil && pod.SecurityContext.SeccompProfile != nil &&
		pod.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			t.Errorf("container %s: may run as root", c.Name)
		}
		if !podSeccomp && (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			t.Errorf("container %s: no RuntimeDefault seccomp profile", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: capabilities not dropped", c.Name)
		}
	}
	// Port names must be unique across the pod's containers.
	seen := map[string]string{}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, p := range c.Ports {
			if p.Name == "" {
				continue
			}
			if other, dup := seen[p.Name]; dup {
				t.Errorf("port name %s used by containers %s and %s", p.Name, other, c.Name)
			}
			seen[p.Name] = c.Name
		}
	}
}
