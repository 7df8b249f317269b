# presencehub — see README.md.
SHELL := /bin/bash
GO ?= go

.PHONY: run test fuzz fuzz-short bench build generate check-generated lint deps-test screenshot stop clean

## run: start private Redis + PostgreSQL in .data/dev, migrate, seed a demo, simulate an SBC and serve the dashboard
run: build
	@.ci/run-demo.sh

## test: every test (unit, real Redis/PostgreSQL, browser) with the race detector, the stack-size test without it, then every fuzz target for a few seconds
test: deps-test check-generated lint
	$(GO) test -race -count=1 -timeout 15m -tags browser ./...
	$(GO) test -count=1 -run 'StackSmall' ./api/  # stack sizes only show without -race (the race run skips it)
	@$(MAKE) --no-print-directory fuzz-short

## fuzz: run every Go fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME each (go test runs their seed corpora)
FUZZTIME ?= 60s
fuzz:
	@set -e; git grep -l --untracked '^func Fuzz' -- '*_test.go' | while read -r file; do \
		dir=./$$(dirname "$$file"); \
		for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$file"); do \
			echo "== $$dir $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) "$$dir"; \
		done; \
	done

## fuzz-short: every fuzz target for 3 s (the last step of make test)
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3s

## bench: short form of every benchmark, one table (see README "Performance")
bench: build
	@.ci/bench.sh

## build: bin/presencehub (the product) and bin/presencehub-bench (the benchmarks)
build:
	@mkdir -p bin
	$(GO) build -o bin/presencehub ./cmd/presencehub
	$(GO) build -o bin/presencehub-bench ./cmd/presencehub-bench

## generate: regenerate the templ components
generate:
	$(GO) tool templ generate

## check-generated: the committed *_templ.go files match their .templ sources
check-generated:
	@$(GO) tool templ generate >/dev/null 2>&1
	@git diff --quiet -- '*_templ.go' || { echo "generated *_templ.go files are stale: run make generate and commit"; git --no-pager diff --stat -- '*_templ.go'; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_templ.go$$')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...

## deps-test: what the tests need beyond Go: redis-server, PostgreSQL, Chromium
deps-test:
	@.ci/install-deps.sh

## screenshot: regenerate static/screenshot-account.png (the README's dashboard picture) from demo data
screenshot:
	PRESENCEHUB_SCREENSHOT=$(CURDIR)/static/screenshot-account.png $(GO) test -count=1 -run TestScreenshot ./cmd/presencehub/

## stop: stop the services make run started
stop:
	@.ci/local-services.sh stop dev

clean: stop
	rm -rf bin .data
