package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// vegeta drives the mixed scenario's open loop (and the generators
// comparison): `vegeta attack` at a constant rate, its results encoded as
// CSV and read back here, where each request's latency is counted from its
// scheduled time.

// vegetaModule is the pinned vegeta the tool builds when -vegeta is empty.
const vegetaModule = "github.com/tsenart/vegeta/v12@v12.13.0"

// installVegeta builds vegetaModule into dir and returns the binary's path.
func installVegeta(ctx context.Context, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "install", vegetaModule)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", vegetaModule, err, out)
	}
	return filepath.Join(dir, "vegeta"), nil
}

// vegetaSpec is one open-loop attack.
type vegetaSpec struct {
	bin string
	// dir holds the targets and results files.
	dir      string
	rate     int
	duration time.Duration
	// workers is the most requests in flight: vegeta's -workers and
	// -max-workers. When all are busy the next request waits, and its
	// latency, counted from its scheduled time, includes the wait.
	workers int
	// procs is vegeta's GOMAXPROCS (-cpus); 0 means 1.
	procs int
	// targets are sent in turn, cycling.
	targets []request
}

// vegetaResult is one request of an attack.
type vegetaResult struct {
	seq     int64
	sent    time.Time     // when a worker took the request
	latency time.Duration // from sent to the end of the answer
	status  string        // outcome key, as statusKey makes it
	method  string
	url     string
	err     string // a transport error; empty for an answer
}

// writeVegetaTargets writes targets in vegeta's http format, each with the
// X-Token-Request header a token client sends.
func writeVegetaTargets(w io.Writer, targets []request) error {
	bw := bufio.NewWriter(w)
	for _, t := range targets {
		fmt.Fprintf(bw, "%s %s\nX-Token-Request: true\n\n", t.method, t.url)
	}
	return bw.Flush()
}

// vegetaAttack runs the attack and returns the results file (vegeta's own
// binary encoding) and vegeta's CPU time.
func vegetaAttack(ctx context.Context, s vegetaSpec) (string, time.Duration, error) {
	if len(s.targets) == 0 || s.rate < 1 || s.workers < 1 || s.duration <= 0 {
		return "", 0, errors.New("vegeta needs targets, a rate, workers and a duration")
	}
	targets := filepath.Join(s.dir, "targets.http")
	results := filepath.Join(s.dir, "results.bin")
	f, err := os.Create(targets)
	if err != nil {
		return "", 0, err
	}
	if err := writeVegetaTargets(f, s.targets); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	attack := exec.CommandContext(ctx, s.bin, "-cpus", strconv.Itoa(max(s.procs, 1)), "attack",
		"-targets", targets, "-rate", strconv.Itoa(s.rate)+"/1s", "-duration", s.duration.String(),
		"-workers", strconv.Itoa(s.workers), "-max-workers", strconv.Itoa(s.workers),
		"-timeout", "30s", "-max-body", "64KB", "-output", results)
	if out, err := attack.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("vegeta attack: %w\n%s", err, out)
	}
	return results, attack.ProcessState.UserTime() + attack.ProcessState.SystemTime(), nil
}

// vegetaResults decodes an attack's results file.
func vegetaResults(ctx context.Context, bin, results string) ([]vegetaResult, error) {
	enc := exec.CommandContext(ctx, bin, "encode", "-to", "csv", results)
	var stdout, stderr bytes.Buffer
	enc.Stdout, enc.Stderr = &stdout, &stderr
	if err := enc.Run(); err != nil {
		return nil, fmt.Errorf("vegeta encode: %w\n%s", err, stderr.Bytes())
	}
	return parseVegetaCSV(&stdout)
}

// parseVegetaCSV reads `vegeta encode -to csv`: timestamp (Unix ns), code,
// latency (ns), bytes out, bytes in, error, body (base64), attack name,
// seq, method, URL, headers (base64). Results are returned by seq.
func parseVegetaCSV(r io.Reader) ([]vegetaResult, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 12
	var out []vegetaResult
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("vegeta csv: %w", err)
		}
		ts, err1 := strconv.ParseInt(rec[0], 10, 64)
		code, err2 := strconv.Atoi(rec[1])
		lat, err3 := strconv.ParseInt(rec[2], 10, 64)
		seq, err4 := strconv.ParseInt(rec[8], 10, 64)
		body, err5 := base64.StdEncoding.DecodeString(rec[6])
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return nil, fmt.Errorf("vegeta csv: %w", err)
		}
		r := vegetaResult{
			seq: seq, sent: time.Unix(0, ts), latency: time.Duration(lat),
			status: statusKey(code, body, rec[5]), method: rec[9], url: rec[10],
		}
		if code == 0 { // for an answer, vegeta's error is its status text
			r.err = rec[5]
		}
		out = append(out, r)
	}
	// vegeta writes results as they complete; seq is the send order.
	slices.SortFunc(out, func(a, b vegetaResult) int { return cmp.Compare(a.seq, b.seq) })
	return out, nil
}

// statusKey is an outcome's key, as the reports count them: "200", the
// status and the code of a JSON error body ("404 CREDENTIALS_NOT_FOUND"),
// the status alone when the body has no code, or a transport error.
func statusKey(code int, body []byte, errText string) string {
	if code == 0 {
		if e := strings.ToLower(errText); strings.Contains(e, "timeout") || strings.Contains(e, "deadline exceeded") {
			return statusTimeout
		}
		return statusTransport
	}
	s := strconv.Itoa(code)
	if code == 200 {
		return s
	}
	var e struct {
		Code string `json:"code"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return s + " " + e.Code
	}
	return s
}

// scheduled returns, for an attack at rate, each result's scheduled send
// time. vegeta schedules request i at began + (i+1)/rate; began is not in
// its output, so it is taken as the earliest that makes no request early:
// every lag is then ≥ 0 and the smallest is 0, a lower bound of the true
// lag.
func scheduled(rs []vegetaResult, rate int) []time.Time {
	if len(rs) == 0 {
		return nil
	}
	interval := time.Second / time.Duration(rate)
	began := rs[0].sent.Add(-interval * time.Duration(rs[0].seq+1))
	for _, r := range rs {
		if b := r.sent.Add(-interval * time.Duration(r.seq+1)); b.Before(began) {
			began = b
		}
	}
	out := make([]time.Time, len(rs))
	for i, r := range rs {
		out[i] = began.Add(interval * time.Duration(r.seq+1))
	}
	return out
}

// record adds an attack's results to rec: latency from the scheduled time,
// service time from the send, by class; and the pacer's lag (scheduled to
// sent) to lag. It returns the span from the first scheduled time to the
// last answer and to the last send.
func recordVegeta(results []vegetaResult, rec *recorder, lag *histogram, rate int, class func(vegetaResult) int) (elapsed, releaseElapsed time.Duration) {
	due := scheduled(results, rate)
	if len(due) == 0 {
		return 0, 0
	}
	var lastDone, lastSent time.Time
	for i, r := range results {
		done := r.sent.Add(r.latency)
		var err error
		if r.err != "" {
			err = errors.New(r.err)
		}
		rec.record(class(r), due[i], r.sent, done, r.status, err)
		lag.record(r.sent.Sub(due[i]))
		if done.After(lastDone) {
			lastDone = done
		}
		if r.sent.After(lastSent) {
			lastSent = r.sent
		}
	}
	interval := time.Second / time.Duration(rate)
	return lastDone.Sub(due[0].Add(-interval)), max(lastSent.Sub(due[0].Add(-interval)), time.Duration(len(due))*interval)
}
