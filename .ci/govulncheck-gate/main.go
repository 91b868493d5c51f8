// Command govulncheck-gate reads govulncheck's JSON output (-format json) on
// standard input and fails when it reports a vulnerability that the code
// calls (a finding at symbol level, the ones govulncheck's text output says
// "your code is affected by") and that the accepted file does not list.
//
//	govulncheck -format json ./... | go run ./.ci/govulncheck-gate .ci/govulncheck-accepted
//
// The accepted file holds one vulnerability per line: its ID, then why it
// does not apply; '#' starts a comment. Each reason must be written down:
// an ID without one is an error. Findings in modules or packages the code
// does not call are listed, not failed on, as govulncheck itself does. An
// accepted ID that no longer shows up is reported, so that the list shrinks.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: govulncheck -format json ./... | govulncheck-gate ACCEPTED-FILE")
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout, os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "govulncheck-gate:", err)
		os.Exit(1)
	}
}

// message is the part of a govulncheck JSON message the gate reads.
type message struct {
	Config *struct {
		ScannerVersion string `json:"scanner_version"`
		DB             string `json:"db"`
		GoVersion      string `json:"go_version"`
	} `json:"config"`
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

func run(in io.Reader, out io.Writer, acceptedFile string) error {
	accepted, err := readAccepted(acceptedFile)
	if err != nil {
		return err
	}
	called := map[string]string{}    // ID → module@version, for a finding the code calls
	reachable := map[string]string{} // ID → module@version, imported or required only
	dec := json.NewDecoder(in)
	for {
		var m message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("reading govulncheck's output: %w", err)
		}
		if c := m.Config; c != nil {
			fmt.Fprintf(out, "govulncheck %s, %s, database %s\n", c.ScannerVersion, c.GoVersion, c.DB)
		}
		f := m.Finding
		if f == nil || len(f.Trace) == 0 {
			continue
		}
		where := f.Trace[0].Module + "@" + f.Trace[0].Version
		if f.Trace[0].Function != "" {
			called[f.OSV] = where
		} else if _, ok := called[f.OSV]; !ok {
			reachable[f.OSV] = where
		}
	}
	for id := range called {
		delete(reachable, id)
	}
	var failed []string
	for _, id := range sortedKeys(called) {
		if why, ok := accepted[id]; ok {
			fmt.Fprintf(out, "accepted  %s in %s: %s\n", id, called[id], why)
			continue
		}
		fmt.Fprintf(out, "CALLED    %s in %s: see https://pkg.go.dev/vuln/%s\n", id, called[id], id)
		failed = append(failed, id)
	}
	for _, id := range sortedKeys(reachable) {
		fmt.Fprintf(out, "not called %s in %s\n", id, reachable[id])
	}
	for _, id := range sortedKeys(accepted) {
		if _, ok := called[id]; !ok {
			fmt.Fprintf(out, "note: accepted %s is no longer reported; remove it from %s\n", id, acceptedFile)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d vulnerabilities the code calls and %s does not accept: %s", len(failed), acceptedFile, strings.Join(failed, ", "))
	}
	return nil
}

// readAccepted reads the accepted file: ID → reason.
func readAccepted(name string) (map[string]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	accepted := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		id, why, _ := strings.Cut(strings.TrimSpace(line), " ")
		if id == "" {
			continue
		}
		if why = strings.TrimSpace(why); why == "" {
			return nil, fmt.Errorf("%s:%d: %s has no reason", name, n, id)
		}
		accepted[id] = why
	}
	return accepted, sc.Err()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
