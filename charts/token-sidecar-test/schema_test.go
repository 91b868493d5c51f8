package charttest

import (
	"strings"
	"testing"
)

// TestBadValuesFail: values.schema.json refuses wrong types, unknown keys
// and malformed settings, and the templates refuse settings that cannot work;
// either way rendering fails with a message that names the key.
func TestBadValuesFail(t *testing.T) {
	tests := []struct {
		name, values, wantErr string
	}{
		{"unknown top-level key", "replicaCount: 2", "replicaCount"},
		{"misspelt setting", "config: {cacheCapcity: 5}", "cacheCapcity"},
		{"unknown nested key", "probes: {liveness: {path: /live}}", "path"},
		{"unknown key in extraEnv", "extraEnv: [{name: A, valu: b}]", "valu"},
		{"integer as string", `config: {cacheCapacity: "lots"}`, "/config/cacheCapacity"},
		{"zero capacity", "config: {cacheCapacity: 0}", "/config/cacheCapacity"},
		{"fractional integer", "config: {oauthMaxRetries: 1.5}", "/config/oauthMaxRetries"},
		{"negative breaker threshold", "config: {breakerFailureThreshold: -1}", "/config/breakerFailureThreshold"},
		{"no half-open probe", "config: {breakerHalfOpenProbes: 0}", "/config/breakerHalfOpenProbes"},
		{"bad breaker duration", `config: {breakerOpenDuration: "10 seconds"}`, "/config/breakerOpenDuration"},
		{"zero breaker failure rate", "config: {breakerFailureRate: 0}", "/config/breakerFailureRate"},
		{"breaker failure rate above 1", "config: {breakerFailureRate: 1.5}", "/config/breakerFailureRate"},
		{"breaker failure rate as percent", `config: {breakerFailureRate: "50%"}`, "/config/breakerFailureRate"},
		{"breaker failure rate string above 1", `config: {breakerFailureRate: "1.5"}`, "/config/breakerFailureRate"},
		{"bare number breaker window", "config: {breakerWindow: 10}", "/config/breakerWindow"},
		{"bad breaker window", `config: {breakerWindow: "10 seconds"}`, "/config/breakerWindow"},
		{"bool as string", `nativeSidecar: "yes"`, "/nativeSidecar"},
		{"bool as number", "probes: {startup: {enabled: 1}}", "/probes/startup/enabled"},
		{"list as string", "config: {allowedTenants: acme,globex}", "/config/allowedTenants"},
		{"bad duration", `config: {requestTimeout: "15 seconds"}`, "/config/requestTimeout"},
		{"bare number duration", "config: {shutdownTimeout: 10}", "/config/shutdownTimeout"},
		{"bad log level", "config: {logLevel: verbose}", "/config/logLevel"},
		{"refreshAt out of range", "config: {refreshAt: 1.5}", "/config/refreshAt"},
		{"bad tenant", `config: {defaultTenant: "../admin"}`, "/config/defaultTenant"},
		{"bad URL", "config: {tenantServiceURL: tenant-service:8080}", "/config/tenantServiceURL"},
		{"bad listen address", "config: {listen: localhost}", "/config/listen"},
		{"bad image digest", "image: {digest: latest}", "/image/digest"},
		{"bad pull policy", "image: {pullPolicy: Sometimes}", "/image/pullPolicy"},
		{"both URL sources in schema", "config: {tenantServiceURLFrom: {secretKeyRef: {name: a, key: b}, configMapKeyRef: {name: a, key: b}}}", "/config/tenantServiceURLFrom"},
		{"secretKeyRef without key", "config: {tenantServiceURLFrom: {secretKeyRef: {name: a}}}", "key"},
		{"label value not a string", "podMonitor: {labels: {release: 1}}", "/podMonitor/labels/release"},
		{"unknown credentialKeys key", "credentialKeys: {secret: jwks}", "secret"},
		{"bad credential keys Secret name", "credentialKeys: {secretName: My_Keys}", "/credentialKeys/secretName"},
		{"credential keys key with a slash", "credentialKeys: {secretName: jwks, key: a/b}", "/credentialKeys/key"},
		{"bad credential keys poll interval", `credentialKeys: {secretName: jwks, pollInterval: "5 seconds"}`, "/credentialKeys/pollInterval"},

		// Refused by the templates rather than the schema.
		{"no tenant service", "example: {demo: false}", "config.tenantServiceURL (or config.tenantServiceURLFrom) is required"},
		{"both URL and URLFrom", "config: {tenantServiceURL: http://ts, tenantServiceURLFrom: {secretKeyRef: {name: a, key: b}}}", "not both"},
		{"loopback admin listener", "config: {adminListen: 127.0.0.1:9464}", "must not be a loopback address"},
		{"same port twice", "config: {listen: \"127.0.0.1:9000\", adminListen: \":9000\"}", "different ports"},
		{"same port name twice", "portNames: {token: web, admin: web}", "must differ"},
		{"encryption required without keys", "config: {tenantServiceURL: http://ts}\nexample: {demo: false}\ncredentialKeys: {requireEncrypted: true}", "credentialKeys.requireEncrypted needs credentialKeys.secretName"},
	}
	for _, tt := range tests {
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

// TestBadValuesFailThroughParent: the schema also guards the values a parent
// chart gives its token-sidecar dependency.
func TestBadValuesFailThroughParent(t *testing.T) {
	_, err := render(t, loadUserChart(t), values(t, "token-sidecar: {config: {cacheCapacity: lots}}"))
	if err == nil || !strings.Contains(err.Error(), "cacheCapacity") {
		t.Fatalf("err = %v, want a schema error for cacheCapacity", err)
	}
}
