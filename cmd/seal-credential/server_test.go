package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// newBodyServer answers every request with 200 and body.
func newBodyServer(t *testing.T, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
