// Package testkit holds the test helpers that more than one package's tests
// use: key files swapped as the kubelet swaps a mounted Secret, tampered
// JWEs, the text of recorded spans, and the OTLP environment of export
// tests. Only _test.go files import it.
package testkit
