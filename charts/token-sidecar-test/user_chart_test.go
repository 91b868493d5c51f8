package charttest

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestUserChart renders testdata/user-chart, a chart that has token-sidecar
// as a dependency and includes token-sidecar.container in its own pod spec
// exactly as the README shows: the primary way to use the chart.
func TestUserChart(t *testing.T) {
	m := mustRender(t, loadUserChart(t), values(t)) // the example is off
	d := m.soleDeployment(t, "rel-my-app")
	pod := &d.Spec.Template.Spec
	if names := containerNames(pod.Containers); !slices.Equal(names, []string{"my-app", "token-sidecar"}) {
		t.Errorf("containers = %v, want [my-app token-sidecar]", names)
	}
	if len(pod.InitContainers) != 0 {
		t.Errorf("initContainers = %v, want none", containerNames(pod.InitContainers))
	}
	c, _ := sidecar(t, pod)
	checkSidecar(t, c, 8181, 9464)
	want := map[string]string{
		"SIDECAR_TENANT_SERVICE_URL": "http://tenant-service.platform.svc:8080",
		"SIDECAR_DEFAULT_TENANT":     "acme",
	}
	if got := envMap(t, c); !maps.Equal(got, want) {
		t.Errorf("sidecar env = %v, want the user's values %v", got, want)
	}
	checkAppURL(t, pod, "my-app", "http://127.0.0.1:8181")
	if got := d.Spec.Template.Labels["token-sidecar/release"]; got != releaseName {
		t.Errorf("pod labels = %v, want token-sidecar.podLabels", d.Spec.Template.Labels)
	}
}

// TestUserChartNative: the same user chart with nativeSidecar on gets the
// sidecar as its first init container, restartPolicy Always.
func TestUserChartNative(t *testing.T) {
	m := mustRender(t, loadUserChart(t), values(t, "token-sidecar: {nativeSidecar: true}"))
	pod := &m.onlyDeployment(t).Spec.Template.Spec
	checkRestrictedPod(t, pod)
	c, native := sidecar(t, pod)
	if !native || pod.InitContainers[0].Name != "token-sidecar" {
		t.Fatalf("initContainers = %v, want token-sidecar first", containerNames(pod.InitContainers))
	}
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("restartPolicy = %v, want Always", c.RestartPolicy)
	}
	if names := containerNames(pod.Containers); !slices.Equal(names, []string{"my-app"}) {
		t.Errorf("containers = %v, want [my-app]", names)
	}
	checkSidecar(t, c, 8181, 9464)
}

// TestUserChartPodMonitor: the dependency's PodMonitor selects the user's
// pod through token-sidecar.podLabels.
func TestUserChartPodMonitor(t *testing.T) {
	m := mustRender(t, loadUserChart(t), values(t, "token-sidecar: {podMonitor: {enabled: true}}"))
	if len(m.podMonitors) != 1 {
		t.Fatalf("got %d PodMonitors", len(m.podMonitors))
	}
	pod := m.onlyDeployment(t).Spec.Template
	sel := m.podMonitors[0].Spec.Selector.MatchLabels
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(pod.Labels)) {
		t.Errorf("PodMonitor selector %v does not match the user's pod %v", sel, pod.Labels)
	}
}

// TestUserChartWrongScope: passing your own chart's "." instead of the
// dependency's scope fails with a message that says what to pass.
func TestUserChartWrongScope(t *testing.T) {
	c := loadUserChart(t)
	for _, tpl := range c.Templates {
		tpl.Data = bytes.ReplaceAll(tpl.Data, []byte(`index .Subcharts "token-sidecar"`), []byte(`.`))
	}
	_, err := render(t, c, values(t))
	if err == nil || !strings.Contains(err.Error(), `pass (index .Subcharts "token-sidecar")`) {
		t.Fatalf("err = %v, want the hint to pass the subchart's scope", err)
	}
}
