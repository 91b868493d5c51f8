package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestScenariosOnTheBinary builds the sidecar and runs hit-vs-static (wrk,
// then the own open loop) and mixed (vegeta) briefly, checking that every
// request reached the sidecar and got the answer its class must get.
func TestScenariosOnTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the sidecar and vegeta")
	}
	needWrk(t)
	var stdout, stderr bytes.Buffer
	args := []string{"-scenario", "hit-vs-static", "-rounds", "1", "-round", "1s", "-open-duration", "200ms", "-open-segments", "1", "-rate", "500", "-json"}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("hit-vs-static: %v\n%s", err, stderr.Bytes())
	}
	var rep report
	if err := json.Unmarshal(jsonPart(t, stdout.String()), &rep); err != nil {
		t.Fatal(err)
	}
	h := rep.HitVsStatic
	for name, tp := range map[string]throughput{"hit": h.Hit, "static": h.Static} {
		if tp.Requests == 0 || tp.Statuses[wrkAnswered] != int(tp.Requests) {
			t.Errorf("closed loop %s: %d requests, answers %v", name, tp.Requests, tp.Statuses)
		}
	}
	for _, o := range []openResult{h.OpenHit, h.OpenStatic} {
		if o.Completed != 100 || o.Statuses["200"] != 100 {
			t.Errorf("open loop %s: %d completed, answers %v", o.Target, o.Completed, o.Statuses)
		}
	}

	stdout.Reset()
	args = []string{"-scenario", "mixed", "-rate", "300", "-duration", "2s", "-hot", "5", "-settle", "100ms", "-json"}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("mixed: %v\n%s", err, stderr.Bytes())
	}
	rep = report{}
	if err := json.Unmarshal(jsonPart(t, stdout.String()), &rep); err != nil {
		t.Fatal(err)
	}
	m := rep.Mixed
	want := map[string]string{"hit": "200", "miss": "200", "refresh": "200",
		"notfound": "404 CREDENTIALS_NOT_FOUND", "unavailable": "503 TENANT_SERVICE_UNAVAILABLE"}
	// vegeta stops at the duration: a late pacer may not have sent the last.
	if m.Completed < 540 || m.Completed > 600 || len(m.Classes) != numClasses {
		t.Fatalf("mixed: %d completed (want 600 at 300/s for 2 s), %d classes", m.Completed, len(m.Classes))
	}
	var sum uint64
	for _, c := range m.Classes {
		sum += c.Count
		if c.Statuses[want[c.Class]] != int(c.Count) {
			t.Errorf("class %s: %d requests, answers %v; want all %q", c.Class, c.Count, c.Statuses, want[c.Class])
		}
	}
	if sum != uint64(m.Completed) || m.Classes[classHit].Count < 400 || m.Upstream.TenantService == 0 {
		t.Errorf("classes add up to %d, hits %d, Tenant Service calls %d", sum, m.Classes[classHit].Count, m.Upstream.TenantService)
	}
}

// jsonPart is the JSON document -json prints after the tables.
func jsonPart(t *testing.T, out string) []byte {
	t.Helper()
	i := strings.Index(out, "\n{\n")
	if i < 0 {
		t.Fatalf("no JSON document in:\n%s", out)
	}
	return []byte(out[i+1:])
}
