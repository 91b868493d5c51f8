package charttest

import (
	"maps"
	"testing"
)

// TestCredentialKeys: credentialKeys.secretName mounts the Secret read-only
// as a directory (no subPath, so Kubernetes updates it in place) and points
// SIDECAR_CREDENTIAL_KEYS_FILE at its key; the example pod gets the volume.
func TestCredentialKeys(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, `config: {tenantServiceURL: "http://tenant-service:8080"}
example: {demo: false}
credentialKeys: {secretName: sidecar-jwks, key: keys.json, pollInterval: 2s, requireEncrypted: true}`))
	pod := &m.onlyDeployment(t).Spec.Template.Spec
	checkRestrictedPod(t, pod)
	c, _ := sidecar(t, pod)
	want := map[string]string{
		"SIDECAR_TENANT_SERVICE_URL":            "http://tenant-service:8080",
		"SIDECAR_CREDENTIAL_KEYS_FILE":          "/etc/token-sidecar/credential-keys/keys.json",
		"SIDECAR_CREDENTIAL_KEYS_POLL_INTERVAL": "2s",
		"SIDECAR_REQUIRE_ENCRYPTED_CREDENTIALS": "true",
	}
	if got := envMap(t, c); !maps.Equal(got, want) {
		t.Errorf("env = %v, want %v", got, want)
	}
	if len(c.VolumeMounts) != 1 {
		t.Fatalf("volume mounts %+v, want one", c.VolumeMounts)
	}
	vm := c.VolumeMounts[0]
	if !vm.ReadOnly || vm.SubPath != "" || vm.MountPath != "/etc/token-sidecar/credential-keys" {
		t.Errorf("mount %+v, want the directory read-only without subPath", vm)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].Name != vm.Name || pod.Volumes[0].Secret == nil ||
		pod.Volumes[0].Secret.SecretName != "sidecar-jwks" {
		t.Fatalf("volumes %+v, want the Secret sidecar-jwks as %s", pod.Volumes, vm.Name)
	}
	// Secret files are owned by root; the sidecar runs as 65532 without an
	// fsGroup, so it reads them as "others", and nobody may write.
	if mode := pod.Volumes[0].Secret.DefaultMode; mode == nil || *mode != 0o444 {
		t.Errorf("defaultMode %v, want 0444", mode)
	}
	for _, app := range pod.Containers {
		if app.Name != c.Name && len(app.VolumeMounts) != 0 {
			t.Errorf("container %s mounts %+v; only the sidecar reads the keys", app.Name, app.VolumeMounts)
		}
	}

	// Without a Secret: no volume, no mount, no variable.
	m = mustRender(t, loadChart(t), values(t))
	pod = &m.onlyDeployment(t).Spec.Template.Spec
	c, _ = sidecar(t, pod)
	if len(pod.Volumes) != 0 || len(c.VolumeMounts) != 0 {
		t.Errorf("default: volumes %+v, mounts %+v", pod.Volumes, c.VolumeMounts)
	}
}
