# report-delivery: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
MOTO_PORT ?= 4566
export AWS_ENDPOINT_URL ?= http://127.0.0.1:$(MOTO_PORT)
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_REGION ?= us-east-1
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
export MOTO_PORT

.PHONY: demo up down test check lint venv build bench clean soak fuzz checkov lambda-build bench-cold bench-reportlab preview

## demo: run one sample execution through the whole local stack
demo: build
	@bash scripts/moto.sh start
	@trap 'bash scripts/moto.sh stop' EXIT; ./target/debug/local demo

## up: the local stack kept running (functions, sinks, API and links URLs, reconciler) until Ctrl-C; moto keeps its state
up: venv build
	@bash scripts/moto.sh start
	@./target/debug/local up

## down: stop a running `make up` and moto (the local stack's state goes with moto)
down:
	@pid=$$(cat .local/up/up.pid 2>/dev/null); \
	  if [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null; then kill "$$pid"; \
	    for i in $$(seq 1 50); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.2; done; fi
	@bash scripts/moto.sh stop

## test: every check CI runs (fmt, clippy, template lint, unit, integration, end to end)
test: venv
	@bash scripts/venv.sh schemathesis
	@bash scripts/test-deps.sh
	@bash scripts/moto.sh start
	@trap 'bash scripts/moto.sh stop' EXIT; $(MAKE) --no-print-directory check

## check: lint, build, then the tests with the deploy checks (checkov, the
## cargo-lambda arm64 build) running niced beside them; both must pass
check: lint build
	@mkdir -p .local; set -o pipefail; \
	  (nice -n 19 bash scripts/deploy-checks.sh > .local/deploy-checks.log 2>&1) & bg=$$!; \
	  cargo test --workspace --all-targets 2>&1 | tee .local/test.log; rc=$$?; \
	  awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "tests: %d passed, %d failed\n", p, f}' .local/test.log; \
	  echo "==> waiting for the deploy checks (.local/deploy-checks.log)"; \
	  wait $$bg; drc=$$?; grep -E "^(checkov|lambda-build|error)|Passed checks|Failed checks" .local/deploy-checks.log | tail -20; \
	  [ $$drc -eq 0 ] || echo "deploy checks failed: see .local/deploy-checks.log"; \
	  [ $$rc -eq 0 ] && [ $$drc -eq 0 ]

## lambda-build: the functions as `sam build` builds them (ARCH=--arm64 or --x86-64), with sizes
ARCH ?= --arm64
lambda-build:
	bash scripts/lambda-build.sh $(ARCH)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	.venv/bin/cfn-lint template.yaml
	.venv/bin/sam validate --lint --template template.yaml
	.venv/bin/python scripts/check_iam.py --self-test && .venv/bin/python scripts/check_iam.py template.yaml

build:
	cargo build --workspace --bins

## checkov: scan template.yaml with checkov (its own venv, .venv/checkov; skips and reasons in .checkov.yaml and inline; see README, Security)
checkov:
	@bash scripts/venv.sh checkov
	.venv/checkov/bin/checkov --config-file .checkov.yaml -f template.yaml

venv:
	@bash scripts/venv.sh

clean:
	rm -rf .local target

## bench: render (10,000 and 100,000 rows), fan-out (moto and the model), deliver throughput (moto and the model); release build, see BENCHMARKS.md
bench:
	cargo build --release --workspace --bins
	@bash scripts/moto.sh start
	@trap 'bash scripts/moto.sh stop' EXIT; set -e; \
	  ./target/release/local bench-render 10000; \
	  ./target/release/local bench-render 100000; \
	  ./target/release/local bench-fanout 1000; \
	  ./target/release/local bench-fanout-model 10000; \
	  RUST_LOG=warn ./target/release/local bench-deliver 10; \
	  ./target/release/local bench-deliver-model 20

## bench-reportlab: the render benchmark against reportlab, same rows and layout (ROWS, default 10000)
bench-reportlab:
	cargo build --release -p report-delivery-local
	@test -x .venv/reportlab/bin/python || (python3 -m venv .venv/reportlab && .venv/reportlab/bin/pip install -q reportlab==5.1.0)
	./target/release/local bench-render $${ROWS:-10000}
	.venv/reportlab/bin/python scripts/bench_reportlab.py $${ROWS:-10000}

## preview: the demo's email, Slack blocks, webhook event, chart and PDF as files, and screenshots of the email (headless Chromium)
preview:
	@bash scripts/preview.sh

## bench-cold: every function's cold start, 20 starts each (release build; see BENCHMARKS.md)
bench-cold:
	cargo build --release --workspace --bins
	@bash scripts/moto.sh start
	@trap 'bash scripts/moto.sh stop' EXIT; ./target/release/local bench-cold $${RUNS:-20}

## soak: the chaos run at scale (CHAOS_DELIVERIES, default 1000; see RELIABILITY.md)
soak: venv build
	@bash scripts/moto.sh start
	@trap 'bash scripts/moto.sh stop' EXIT; CHAOS_DELIVERIES=$${CHAOS_DELIVERIES:-1000} cargo test -p report-delivery-tests --test it -- --ignored --exact chaos::soak --nocapture 2>&1 | tee .local/soak.log | grep -E "^chaos:|test result|panicked"

## fuzz: run each cargo-fuzz target for FUZZ_SECONDS (default 600) in turn (nightly; not part of `test`; see fuzz/README.md)
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= message claim_csv claim_json webhook_url link_token
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@cd fuzz; failed=; for t in $(FUZZ_TARGETS); do \
	  mkdir -p work/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  cargo +nightly fuzz run -O -a $$t work/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crash in:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi

## wcu: DynamoDB write units per delivery, measured from streams (WCU_TARGETS, default 20; see BENCHMARKS.md)
wcu: venv build
	@bash scripts/moto.sh start
	@trap 'bash scripts/moto.sh stop' EXIT; cargo test -p report-delivery-tests --test it -- --ignored --exact cost::write_units_per_delivery cost::write_units_per_email_delivery_with_feedback --nocapture --test-threads 1 2>&1 | grep -v "^test \|^running\|^$$"
