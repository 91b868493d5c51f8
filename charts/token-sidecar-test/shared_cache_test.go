package charttest

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestSharedCache: sharedCache.urlFrom and keySecret give the sidecar the URL
// from its Secret, the key file mounted read-only from its Secret, and the
// pod the matching volume; without them nothing of it is rendered.
func TestSharedCache(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-shared-cache.yaml"))
	pod := &m.onlyDeployment(t).Spec.Template.Spec
	checkRestrictedPod(t, pod)
	c, _ := sidecar(t, pod)
	checkSharedCache(t, pod, c)
	env := envMap(t, c)
	for k, want := range map[string]string{
		"SIDECAR_SHARED_CACHE_TIMEOUT": "300ms",
		"SIDECAR_SHARED_CACHE_PREFIX":  "payments:",
		"SIDECAR_SHARED_CACHE_LEASE":   "10s",
	} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}

	// Off by default: no variable, no mount, no volume.
	m = mustRender(t, loadChart(t), values(t))
	pod = &m.onlyDeployment(t).Spec.Template.Spec
	c, _ = sidecar(t, pod)
	for k := range envMap(t, c) {
		if strings.HasPrefix(k, "SIDECAR_SHARED_CACHE_") {
			t.Errorf("%s set with the shared cache off", k)
		}
	}
	if len(c.VolumeMounts) != 0 || len(pod.Volumes) != 0 {
		t.Errorf("mounts %v, volumes %v with the shared cache off", c.VolumeMounts, pod.Volumes)
	}
}

func TestUserChartSharedCache(t *testing.T) {
	m := mustRender(t, loadUserChart(t), values(t, "token-sidecar:\n  sharedCache:\n    urlFrom: {secretKeyRef: {name: redis, key: url}}\n    keySecret: {name: keys, key: keys}"))
	pod := &m.soleDeployment(t, "rel-my-app").Spec.Template.Spec
	c, _ := sidecar(t, pod)
	checkSharedCache(t, pod, c)
}

// checkSharedCache checks the URL's secretKeyRef, the key file's variable,
// mount and volume.
func checkSharedCache(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	var url *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "SIDECAR_SHARED_CACHE_URL" {
			url = &c.Env[i]
		}
	}
	if url == nil || url.Value != "" || url.ValueFrom == nil || url.ValueFrom.SecretKeyRef == nil || url.ValueFrom.SecretKeyRef.Key != "url" {
		t.Fatalf("SIDECAR_SHARED_CACHE_URL = %+v, want a secretKeyRef", url)
	}
	file := envMap(t, c)["SIDECAR_SHARED_CACHE_KEY_FILE"]
	if len(c.VolumeMounts) != 1 {
		t.Fatalf("volumeMounts = %+v, want the key file's", c.VolumeMounts)
	}
	vm := c.VolumeMounts[0]
	if !vm.ReadOnly || file != vm.MountPath+"/keys" {
		t.Errorf("mount %+v, key file %q: want read-only, the file inside it", vm, file)
	}
	var vol *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == vm.Name {
			vol = &pod.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || len(vol.Secret.Items) != 1 || vol.Secret.Items[0].Path != "keys" {
		t.Fatalf("volume %s = %+v, want the key Secret's one key as keys", vm.Name, vol)
	}
	if vol.Secret.SecretName == "" {
		t.Error("the volume names no Secret")
	}
}

func TestSharedCacheBadValuesFail(t *testing.T) {
	for _, tt := range []struct{ name, values, wantErr string }{
		{"URL without keys", "sharedCache: {urlFrom: {secretKeyRef: {name: r, key: url}}}", "sharedCache.keySecret (name and key of the Secret holding the key file) is required"},
		{"keys without URL", "sharedCache: {keySecret: {name: k, key: keys}}", "sharedCache.urlFrom is not"},
		{"URL from a ConfigMap", "sharedCache: {urlFrom: {configMapKeyRef: {name: r, key: url}}, keySecret: {name: k, key: keys}}", "configMapKeyRef"},
		{"bad timeout", `sharedCache: {timeout: "200 ms"}`, "/sharedCache/timeout"},
		{"misspelt key", "sharedCache: {urlform: {}}", "urlform"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := render(t, loadChart(t), values(t, tt.values))
			if err == nil {
				t.Fatalf("rendering with %s succeeded, want an error", tt.values)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error does not mention %q:\n%v", tt.wantErr, err)
			}
		})
	}
}

// TestCredentialKeysAndSharedCacheTogether: with both Secrets set, the
// sidecar mounts both read-only, each at its own path, and the pod gets both
// volumes — one template renders them, so neither may hide the other.
func TestCredentialKeysAndSharedCacheTogether(t *testing.T) {
	m := mustRender(t, loadChart(t), values(t, "values-shared-cache.yaml", `credentialKeys: {secretName: sidecar-jwks, key: keys.json}`))
	pod := &m.onlyDeployment(t).Spec.Template.Spec
	c, _ := sidecar(t, pod)
	if len(c.VolumeMounts) != 2 || len(pod.Volumes) != 2 {
		t.Fatalf("mounts %+v, volumes %+v: want two of each", c.VolumeMounts, pod.Volumes)
	}
	vols := map[string]bool{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v.Secret != nil
	}
	paths := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		if !vm.ReadOnly || !vols[vm.Name] {
			t.Errorf("mount %+v: want read-only, of a Secret volume of the pod", vm)
		}
		paths[vm.MountPath] = true
	}
	if !paths["/etc/token-sidecar/credential-keys"] || !paths["/etc/token-sidecar/shared-cache"] {
		t.Errorf("mount paths %v", paths)
	}
	env := envMap(t, c)
	if env["SIDECAR_CREDENTIAL_KEYS_FILE"] == "" || env["SIDECAR_SHARED_CACHE_KEY_FILE"] == "" {
		t.Errorf("env %v: want both key files named", env)
	}
}
