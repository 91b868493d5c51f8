# The few commands a contributor types; each calls what the README documents.
# `make ci` is what CI runs.
.PHONY: demo test bench ci lint

demo: ## the sidecar on its in-process fake upstreams (README "Quick start")
	go run ./cmd/token-sidecar -demo

test: ## every package's tests, race detector on (README "Testing")
	go test -race ./...

bench: ## the in-process benchmarks, then issue 14's table on the built binary (needs wrk; bench/README.md "Running it")
	go test -run '^$$' -bench . -benchmem ./bench/ ./proxy/ ./cache/ ./cmd/token-sidecar/ && bench/footprint.sh $${TMPDIR:-/tmp}/token-sidecar-footprint

ci: ## everything CI runs (.ci/run)
	bash .ci/run

lint: ## gofmt, go vet, then staticcheck and govulncheck, pinned (.ci/lint)
	@files=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$files" ] || { echo "gofmt would change: $$files"; exit 1; }; go vet ./... && .ci/lint
