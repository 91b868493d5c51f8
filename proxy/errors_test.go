package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// TestErrorTable pins THE table: every code's status, as the contract has it.
func TestErrorTable(t *testing.T) {
	for code, want := range map[string]int{
		"INVALID_REQUEST":            400,
		"REQUEST_HEADER_REQUIRED":    403,
		"TENANT_NOT_ALLOWED":         403,
		"CREDENTIALS_NOT_FOUND":      404,
		"OAUTH_INVALID_GRANT":        502,
		"UPSTREAM_INVALID_RESPONSE":  502,
		"TENANT_SERVICE_UNAVAILABLE": 503,
		"OAUTH_EXCHANGE_FAILED":      503,
		"TIMEOUT":                    504,
		"NOT_FOUND":                  404,
		"METHOD_NOT_ALLOWED":         405,
		"INTERNAL_ERROR":             500,
	} {
		status, message, ok := errorTable(code)
		if !ok || status != want || message == "" {
			t.Errorf("errorTable(%s) = %d, %q, %v; want %d, a message, true", code, status, message, ok, want)
		}
	}
	for _, code := range []string{"", "invalid_request", "SOMETHING_NEW"} {
		if _, _, ok := errorTable(code); ok {
			t.Errorf("errorTable(%q) is known", code)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for hint, want := range map[time.Duration]int{
		-time.Second:            5,
		0:                       5,
		time.Nanosecond:         1,
		time.Second:             1,
		time.Second + 1:         2,
		1500 * time.Millisecond: 2,
		30 * time.Second:        30,
		60 * time.Second:        60,
		61 * time.Second:        60,
		1<<63 - 1:               60,
	} {
		if got := retryAfterSeconds(hint); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", hint, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{"own code", invalidRequest("x"), 400, "INVALID_REQUEST"},
		{"own code wins over the cause", &apiError{code: codeInternal, err: &codedError{code: "TIMEOUT"}}, 500, "INTERNAL_ERROR"},
		{"cause's code", &apiError{err: &codedError{code: "CREDENTIALS_NOT_FOUND"}}, 404, "CREDENTIALS_NOT_FOUND"},
		{"deadline", context.DeadlineExceeded, 504, "TIMEOUT"},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), 504, "TIMEOUT"},
		{"echo 404", echo.ErrNotFound, 404, "NOT_FOUND"},
		{"wrapped echo 405", fmt.Errorf("x: %w", echo.ErrMethodNotAllowed), 405, "METHOD_NOT_ALLOWED"},
		{"echo 413", echo.ErrStatusRequestEntityTooLarge, 400, "INVALID_REQUEST"},
		{"echo 500", echo.ErrInternalServerError, 500, "INTERNAL_ERROR"},
		{"panic", errPanic, 500, "INTERNAL_ERROR"},
		{"plain", errors.New("x"), 500, "INTERNAL_ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := classify(tc.err)
			if p.status != tc.wantStatus || p.code != tc.wantCode || p.message == "" {
				t.Errorf("classify = %+v, want %d %s with a message", p, tc.wantStatus, tc.wantCode)
			}
			if (p.status == http.StatusServiceUnavailable) != (p.retryAfter > 0) {
				t.Errorf("retryAfter = %d for status %d", p.retryAfter, p.status)
			}
		})
	}
}
