// Package charttest tests the token-sidecar Helm chart (../token-sidecar): it
// renders the chart with Helm's own Go packages, for the defaults and each
// toggle, decodes every object strictly into the Kubernetes API types, and
// checks the sidecar container. It is a module of its own so that Helm and
// the Kubernetes API types stay out of the sidecar's go.mod; nothing imports
// it.
package charttest
