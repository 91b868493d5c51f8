package charttest

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestDefaults: the chart installed on its own runs the example app with the
// sidecar in demo mode, and nothing else.
func TestDefaults(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t))
	pod := &m.soleDeployment(t, "rel-token-sidecar-example").Spec.Template.Spec

	c, native := sidecar(t, pod)
	if native || c.RestartPolicy != nil || len(pod.InitContainers) != 0 {
		t.Errorf("sidecar is native (restartPolicy %v, %d init containers), want a regular container", c.RestartPolicy, len(pod.InitContainers))
	}
	checkSidecar(t, c, 8181, 9464)
	if c.Image != "ghcr.io/token-sidecar/token-sidecar:0.1.0" {
		t.Errorf("image = %q, want the chart's appVersion as tag", c.Image)
	}
	// Only demo is set: every other setting keeps the binary's default.
	if got, want := envMap(t, c), map[string]string{"SIDECAR_DEMO": "true"}; !maps.Equal(got, want) {
		t.Errorf("env = %v, want %v", got, want)
	}
	if c.Lifecycle != nil {
		t.Errorf("lifecycle = %+v, want none by default", c.Lifecycle)
	}

	checkAppURL(t, pod, "app", "http://127.0.0.1:8181")
	if !strings.Contains(m.notes, "kubectl logs") {
		t.Errorf("NOTES.txt does not say how to watch the example:\n%s", m.notes)
	}
}

// TestAllSettings: every contract setting in values reaches the sidecar as
// its SIDECAR_* variable, with numbers printed as the binary parses them.
func TestAllSettings(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-all-settings.yaml"))
	pod := &m.onlyDeployment(t).Spec.Template.Spec
	checkRestrictedPod(t, pod)
	c, _ := sidecar(t, pod)
	checkSidecar(t, c, 8282, 9555)

	want := map[string]string{
		"SIDECAR_LISTEN":                    "127.0.0.1:8282",
		"SIDECAR_ADMIN_LISTEN":              ":9555",
		"SIDECAR_TENANT_SERVICE_URL":        "http://tenant-service.platform.svc:8080",
		"SIDECAR_SERVICE_NAME":              "auth-service",
		"SIDECAR_TENANT_SERVICE_TIMEOUT":    "3s",
		"SIDECAR_GENESYS_LOGIN_URL":         "https://login.example.test",
		"SIDECAR_GENESYS_API_URL":           "https://api.example.test",
		"SIDECAR_OAUTH_TIMEOUT":             "7s",
		"SIDECAR_OAUTH_MAX_RETRIES":         "4",
		"SIDECAR_BREAKER_FAILURE_THRESHOLD": "8",
		"SIDECAR_BREAKER_FAILURE_RATE":      "0.25",
		"SIDECAR_BREAKER_WINDOW":            "1m",
		"SIDECAR_BREAKER_OPEN_DURATION":     "30s",
		"SIDECAR_BREAKER_HALF_OPEN_PROBES":  "3",
		"SIDECAR_DEFAULT_TENANT":            "acme",
		"SIDECAR_ALLOWED_TENANTS":           "acme,globex",
		"SIDECAR_REQUIRE_REQUEST_HEADER":    "false",
		"SIDECAR_REQUEST_TIMEOUT":           "12s",
		"SIDECAR_PROXY_TIMEOUT":             "30m",
		"SIDECAR_MIN_REFRESH_INTERVAL":      "2s",
		"SIDECAR_REFRESH_AT":                "0.75",
		"SIDECAR_NEGATIVE_TTL":              "1s",
		"SIDECAR_CACHE_CAPACITY":            "1000000",
		"SIDECAR_MAX_CONCURRENT_FETCHES":    "16",
		"SIDECAR_MAX_CONNECTIONS":           "256",
		"SIDECAR_ADMIN_MAX_CONNECTIONS":     "32",
		"SIDECAR_IDLE_TIMEOUT":              "5s",
		"SIDECAR_PROXY_RETRY_BUFFER":        "8MiB",
		"SIDECAR_STATIC_TOKEN_TTL":          "2m",
		"SIDECAR_NEGATIVE_CAPACITY":         "200",
		"SIDECAR_REFRESH_RETRY_INTERVAL":    "3s",
		"SIDECAR_PREFETCH_TENANTS":          "acme,whatsapp:globex",
		"SIDECAR_PREFETCH_TIMEOUT":          "45s",
		"SIDECAR_METRICS_TENANT_LABEL":      "true",
		"SIDECAR_SHUTDOWN_TIMEOUT":          "20s",
		"SIDECAR_LOG_LEVEL":                 "debug",
		"OTEL_EXPORTER_OTLP_ENDPOINT":       "http://otel-collector.observability.svc:4318",
		"OTEL_SERVICE_NAME":                 "token-sidecar",
	}
	if got := envMap(t, c); !maps.Equal(got, want) {
		t.Errorf("env:\n got %v\nwant %v", got, want)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != "otel-settings" {
		t.Errorf("envFrom = %+v", c.EnvFrom)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds != 5 {
		t.Errorf("lifecycle = %+v, want preStop sleep 5s", c.Lifecycle)
	}
	checkAppURL(t, pod, "app", "http://127.0.0.1:8282") // follows config.listen
}

// TestSettingsFromSet: values given with --set arrive as int64 and strings,
// not float64; they must print the same.
func TestSettingsFromSet(t *testing.T) {
	vals := values(t)
	vals["config"] = map[string]any{"cacheCapacity": int64(50000), "refreshAt": "0.9", "requireRequestHeader": true, "oauthMaxRetries": int64(0),
		"breakerFailureRate": "1", "breakerWindow": "30s",
		"breakerFailureThreshold": int64(0)} // 0 = breakers off: must be set, not dropped
	c, _ := sidecar(t, &mustRender(t, loadChart(t), vals).onlyDeployment(t).Spec.Template.Spec)
	env := envMap(t, c)
	for k, want := range map[string]string{"SIDECAR_CACHE_CAPACITY": "50000", "SIDECAR_REFRESH_AT": "0.9", "SIDECAR_REQUIRE_REQUEST_HEADER": "true", "SIDECAR_OAUTH_MAX_RETRIES": "0",
		"SIDECAR_BREAKER_FAILURE_THRESHOLD": "0", "SIDECAR_BREAKER_FAILURE_RATE": "1", "SIDECAR_BREAKER_WINDOW": "30s"} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}
}

// TestNativeSidecar: the sidecar moves to initContainers with restartPolicy
// Always, and leaves containers.
func TestNativeSidecar(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-native.yaml"))
	pod := &m.onlyDeployment(t).Spec.Template.Spec
	checkRestrictedPod(t, pod)
	c, native := sidecar(t, pod)
	if !native {
		t.Fatal("sidecar is not in initContainers")
	}
	if pod.InitContainers[0].Name != "token-sidecar" {
		t.Error("sidecar is not the first init container")
	}
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("restartPolicy = %v, want Always", c.RestartPolicy)
	}
	checkSidecar(t, c, 8181, 9464)
	if names := containerNames(pod.Containers); !slices.Equal(names, []string{"app"}) {
		t.Errorf("containers = %v, want [app]", names)
	}
}

// TestTenantServiceURLFromSecret: the URL comes from a Secret key.
func TestTenantServiceURLFromSecret(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-secret-url.yaml"))
	c, _ := sidecar(t, &m.onlyDeployment(t).Spec.Template.Spec)
	var got *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "SIDECAR_TENANT_SERVICE_URL" {
			got = &c.Env[i]
		}
	}
	if got == nil || got.Value != "" || got.ValueFrom == nil || got.ValueFrom.SecretKeyRef == nil ||
		got.ValueFrom.SecretKeyRef.Name != "tenant-service" || got.ValueFrom.SecretKeyRef.Key != "url" {
		t.Fatalf("SIDECAR_TENANT_SERVICE_URL = %+v, want secretKeyRef tenant-service/url", got)
	}
	if _, demo := envMap(t, c)["SIDECAR_DEMO"]; demo {
		t.Error("demo is on with example.demo=false")
	}

	m = mustRender(t, loadChart(t), values(t, "config: {tenantServiceURLFrom: {configMapKeyRef: {name: endpoints, key: tenant-service}}}\nexample: {demo: false}"))
	c, _ = sidecar(t, &m.onlyDeployment(t).Spec.Template.Spec)
	if ref := c.Env[0].ValueFrom; c.Env[0].Name != "SIDECAR_TENANT_SERVICE_URL" || ref == nil || ref.ConfigMapKeyRef == nil || ref.ConfigMapKeyRef.Key != "tenant-service" {
		t.Errorf("env[0] = %+v, want SIDECAR_TENANT_SERVICE_URL from configMapKeyRef", c.Env[0])
	}
}

// TestMonitoring: PodMonitor, ServiceMonitor (with its Service) and the
// dashboard ConfigMap, each pointing at what the example pod has.
func TestMonitoring(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-monitoring.yaml"))
	pod := m.onlyDeployment(t).Spec.Template
	c, _ := sidecar(t, &pod.Spec)
	admin := portByName(c, "admin")

	if len(m.podMonitors) != 1 {
		t.Fatalf("got %d PodMonitors", len(m.podMonitors))
	}
	pm := m.podMonitors[0]
	if sel, err := labelsSelector(pm.Spec.Selector.MatchLabels); err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("PodMonitor selector %v does not match the example pod %v", pm.Spec.Selector.MatchLabels, pod.Labels)
	}
	if pm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PodMonitor labels = %v", pm.Labels)
	}
	if eps := pm.Spec.PodMetricsEndpoints; len(eps) != 1 || eps[0].Port == nil || *eps[0].Port != admin.Name ||
		eps[0].Path != "/metrics" || eps[0].Interval != "30s" {
		t.Errorf("PodMonitor endpoints = %+v", eps)
	}

	if len(m.services) != 1 || len(m.serviceMonitors) != 1 {
		t.Fatalf("got %d Services, %d ServiceMonitors, want 1 each", len(m.services), len(m.serviceMonitors))
	}
	svc, sm := m.services[0], m.serviceMonitors[0]
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("metrics Service %+v does not select the example pod headlessly", svc.Spec)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != admin.ContainerPort || svc.Spec.Ports[0].TargetPort.String() != admin.Name {
		t.Errorf("metrics Service ports = %+v", svc.Spec.Ports)
	}
	if sel, err := labelsSelector(sm.Spec.Selector.MatchLabels); err != nil || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not match the Service %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints = %+v", sm.Spec.Endpoints)
	}

	if len(m.configMaps) != 1 {
		t.Fatalf("got %d ConfigMaps", len(m.configMaps))
	}
	cm := m.configMaps[0]
	if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Platform" || cm.Namespace != namespace {
		t.Errorf("dashboard ConfigMap meta = %+v", cm.ObjectMeta)
	}
	var dash struct {
		Title string `json:"title"`
	}
	if err := json.Unmarshal([]byte(cm.Data["token-sidecar.json"]), &dash); err != nil || dash.Title != "token-sidecar" {
		t.Errorf("dashboard JSON: title %q, err %v", dash.Title, err)
	}
}

// TestLibraryUse: with the example off the chart installs no workload, only
// what was asked for.
func TestLibraryUse(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-library.yaml"))
	if len(m.deployments) != 0 || len(m.podMonitors) != 1 || m.count() != 1 {
		t.Errorf("got %d Deployments, %d PodMonitors, %d objects; want the PodMonitor only", len(m.deployments), len(m.podMonitors), m.count())
	}
}

// TestImageDigestAndPortNames: a digest pins the image; port names can be
// changed where the app already uses token/admin, and the probes follow.
func TestImageDigestAndPortNames(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	m := mustRender(t, loadChart(t), values(t, "image: {digest: \""+digest+"\"}\nportNames: {token: sidecar-token, admin: sidecar-admin}"))
	c, _ := sidecar(t, &m.onlyDeployment(t).Spec.Template.Spec)
	if c.Image != "ghcr.io/token-sidecar/token-sidecar@"+digest {
		t.Errorf("image = %q", c.Image)
	}
	if portByName(c, "sidecar-token") == nil || portByName(c, "sidecar-admin") == nil {
		t.Errorf("ports = %+v", c.Ports)
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p.HTTPGet.Port.String() != "sidecar-admin" {
			t.Errorf("probe port = %s, want sidecar-admin", p.HTTPGet.Port.String())
		}
	}
}

// TestProbesOptional: each probe can be turned off.
func TestProbesOptional(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "probes: {startup: {enabled: false}, liveness: {enabled: false}, readiness: {enabled: false}}"))
	c, _ := sidecar(t, &m.onlyDeployment(t).Spec.Template.Spec)
	if c.StartupProbe != nil || c.LivenessProbe != nil || c.ReadinessProbe != nil {
		t.Errorf("probes still there: %v %v %v", c.StartupProbe, c.LivenessProbe, c.ReadinessProbe)
	}
}

func containerNamed(t testing.TB, pod *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	t.Fatalf("no container %q in %v", name, containerNames(pod.Containers))
	return nil
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// labelsSelector refuses an empty selector, which would match every pod.
func labelsSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, errEmptySelector
	}
	return labels.SelectorFromSet(m), nil
}

type selectorError string

func (e selectorError) Error() string { return string(e) }

const errEmptySelector = selectorError("empty selector")
