# The README's two commands: `make run` (train, promote, build, serve) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA := data/transactions.parquet

.PHONY: run test test-fast test-latest lock bytecode lint format clean bench bench-full bench-ab bench-overload bench-training system-deps image security soak stalls \
	docs

UV := $(BIN)/uv
# uv's exports of the lock: the Bento's requirements, and uv itself for the bootstrap below.
EXPORT := $(UV) export --quiet --frozen --no-emit-project

# Every install is uv.lock's versions and hashes: nothing is resolved here. uv comes first, with
# pip from requirements/uv.txt (hashes required); `uv sync --locked` fails when pyproject.toml
# and the lock disagree, and removes what the lock does not list. Packages are compiled to
# bytecode as they are installed (pip's default, not uv's): where PYTHONDONTWRITEBYTECODE is set,
# every process would otherwise compile what it imports (`import service`: 7.6 s against 3.0 s).
SYNC := $(UV) sync --quiet --locked --compile-bytecode
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/uv.txt

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(SYNC) --extra train
	touch $@

$(VENV)/.installed-dev: pyproject.toml uv.lock | $(UV)
	$(SYNC) --extra train --extra dev
	touch $@ $(VENV)/.installed

# Refresh the lock on purpose: the newest releases inside pyproject's ranges, then the exports.
# The tools that get venvs of their own (ops/tool_venvs.py): requirements/NAME.in, compiled here
# to requirements/NAME.txt.
TOOL_VENVS = $(basename $(notdir $(wildcard requirements/*.in)))
lock: | $(UV)
	$(UV) lock --upgrade
	$(EXPORT) --no-default-groups -o requirements/serving.txt
	$(EXPORT) --only-group tools -o requirements/uv.txt
	for tool in $(TOOL_VENVS); do \
		$(UV) pip compile --quiet --upgrade --generate-hashes requirements/$$tool.in \
			-o requirements/$$tool.txt || exit 1; \
	done

# The newest releases inside the ranges, in a throwaway venv, against the fast suite; prints what
# moved from the lock. Not part of make test: it tries upgrades before `make lock` takes them.
test-latest: | $(UV)
	$(BIN)/python ops/test_latest.py --venv runs/latest-venv

$(DATA): | $(VENV)/.installed
	$(BIN)/python -m training simulate --out $(DATA)

run: $(VENV)/.installed $(DATA)
	$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python -m serving backfill --data $(DATA)
	@tag=$$($(BIN)/bentoml build . --output tag | tail -n 1 | sed 's/^__tag__://') && \
	echo "Built $$tag with model $$($(BIN)/python -m model_store current)." && \
	echo "Serving: HTTP http://localhost:3000 (docs /docs), gRPC localhost:3001. Try:" && \
	echo "  curl -X POST http://localhost:3000/predict -H 'Content-Type: application/json'" \
		"-d @ops/examples/test_request.json" && \
	echo "  curl -X POST http://localhost:3000/score -H 'Content-Type: application/json'" \
		"-d @ops/examples/score_request.json" && \
	exec $(BIN)/bentoml serve "$$tag" --port 3000

# The serving benchmark on the pinned model (trained first if nothing is pinned yet).
bench bench-full: $(VENV)/.installed-dev $(DATA)
	@[ -n "$$FRAUD_MODEL_TAG" ] || [ -f ops/model.lock ] || \
		$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python ops/bench/run.py --profile $(if $(filter bench-full,$@),full,quick) \
		--scratch runs/bench/scratch
	$(BIN)/python ops/bench/overload.py --out runs/bench

# Overload alone: capacity C, then 1.2, 2 and 4 C open loop and 0.7 C right after, at 1 and 100
# transactions a request; with BASELINE=REV, that commit's files served beside this checkout.
bench-overload: $(VENV)/.installed-dev $(DATA)
	@[ -n "$$FRAUD_MODEL_TAG" ] || [ -f ops/model.lock ] || \
		$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python ops/bench/overload.py --out runs/bench-overload $(if $(BASELINE),--baseline $(BASELINE))

# A change against the commit before it, side by side in one run (both served from this
# environment, the same model, alternating runs): make bench-ab BASELINE=REV
bench-ab: $(VENV)/.installed-dev $(DATA)
	@[ -n "$(BASELINE)" ] || { echo "give the commit to compare with: make bench-ab BASELINE=REV"; exit 2; }
	@[ -n "$$FRAUD_MODEL_TAG" ] || [ -f ops/model.lock ] || \
		$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python ops/bench/run.py --profile quick --servers bento,bento_baseline \
		--baseline $(BASELINE) --alternating-pairs bento/bento_baseline \
		--scratch runs/bench/scratch --out runs/bench-ab

# Training at scale: features of simulated tables of 1, 10 and 100 million payments (out of core
# and in memory) and `python -m training train` on 1.2 and 10 million, time, memory and PR-AUC.
bench-training: $(VENV)/.installed-dev
	$(BIN)/python ops/bench/training.py --all-rows-tuning 1200000 --out runs/bench-training

# A bounded soak of the pinned model (not part of make test, which runs a 36-second one).
SOAK_SECONDS ?= 600
soak: $(VENV)/.installed-dev $(DATA)
	@[ -n "$$FRAUD_MODEL_TAG" ] || [ -f ops/model.lock ] || \
		$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python ops/bench/soak.py --duration $(SOAK_SECONDS) --out runs/soak

# Event-loop stalls under load at 30/50/70% of the held rate, with GC and GIL attribution.
stalls: $(VENV)/.installed-dev $(DATA)
	@[ -n "$$FRAUD_MODEL_TAG" ] || [ -f ops/model.lock ] || \
		$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python ops/bench/stalls.py --out runs/stalls

# The documentation site (docs/ and the README), into runs/site; a broken link fails it.
docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs build --strict

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/black --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/black .

# Debian packages the tests drive for real: Prometheus and promtool; Redis; gcc for the forest
# compiled to native code; Java for Spark in local mode; PostgreSQL (its server binaries stay off
# PATH); buildah, podman and debootstrap for the container image (installed only when a tool is
# missing; root or sudo).
SYSTEM_TOOLS := prometheus:prometheus promtool:prometheus buildah:buildah podman:podman \
	runc:runc fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns newuidmap:uidmap \
	debootstrap:debootstrap redis-server:redis-server java:openjdk-17-jre-headless gcc:gcc
system-deps:
	@missing=$$( (for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || \
		echo $${pair#*:}; done; ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		echo postgresql) | sort -u | tr '\n' ' '); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive sh -c \
			"apt-get update -qq && apt-get install -y -qq $$missing >/dev/null"; \
	fi

# The container image of the pinned model (trained first if nothing is pinned); prints its tag.
image: $(VENV)/.installed system-deps $(DATA)
	@[ -n "$$FRAUD_MODEL_TAG" ] || [ -f ops/model.lock ] || \
		$(BIN)/python -m training train --data $(DATA) --promote
	$(BIN)/python ops/container/image.py build

# Static security checks: bandit against its reviewed baseline, no secret in tracked files,
# known vulnerabilities in the installed packages.
BANDIT_PATHS := serving model_store monitoring training service.py settings.py bentoml_internals.py ops
# The benchmark's results.json files hold only figures a run measured (3 s of entropy checks
# each, 12 of the scan's 16 s); their tables (results.md) are scanned.
security: $(VENV)/.installed-dev
	$(BIN)/bandit -q -r $(BANDIT_PATHS) -b ops/security/bandit-baseline.json
	git ls-files -z -- . ':(exclude)ops/bench/results/*.json' \
		| xargs -0 -n 100 -P 2 $(BIN)/detect-secrets-hook --
	$(BIN)/python ops/security/audit_dependencies.py

# A test run must leave the work tree as it found it: generated files go to temp or ignored
# folders. The tree's state (status, untracked files, diff) is compared before and after.
TREE_STATE = { git status --porcelain --untracked-files=all; git diff; } 2>/dev/null | sha256sum
# Three test processes on the two cores, a test file each at a time (most tests wait on servers
# and subprocesses: two processes kept the cores 78% busy); then, alone, the tests that measure on
# pinned cores.
PYTEST_PARALLEL = $(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=25
# The project's own modules compiled too (into the ignored __pycache__ folders): the tests start
# a hundred processes that import them.
bytecode: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q settings.py bentoml_internals.py service.py serving model_store monitoring training \
		ops tests >/dev/null

# The two pytest runs share one folder (FRAUD_TESTS_SHARED): the small served model is trained
# once for both.
test: lint security system-deps bytecode
	@before=$$($(TREE_STATE)); \
	export FRAUD_TESTS_SHARED=$$(mktemp -d); \
	$(PYTEST_PARALLEL) -m "not exclusive" && $(BIN)/pytest -m exclusive; passed=$$?; \
	rm -rf "$$FRAUD_TESTS_SHARED"; [ $$passed = 0 ] || exit 1; \
	if [ "$$before" != "$$($(TREE_STATE))" ]; then \
		echo "make test changed tracked files or left files git does not ignore:"; \
		git status --short --untracked-files=all; exit 1; \
	fi

test-fast: lint bytecode
	$(PYTEST_PARALLEL) -m "not slow"

clean:
	rm -rf runs data .pytest_cache
