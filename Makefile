# Two commands on a fresh machine: `make pipeline` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: pipeline test test-fast install test-install chromium bench clean remote-s3 run-outputs

# The project, its dependencies and the evaluation's peer (Real-ESRGAN): all `make pipeline` needs.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing realsr-r1 and its dependencies into $(VENV) (a few minutes on a fresh machine)"
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --progress-bar on -e '.[peer]'
	touch $@

# What the tests and benchmarks add: pytest and its plugins, moto, accelerate (the dev extra).
$(BIN)/.dev-installed: $(BIN)/.installed
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# BasicSR 1.4.2, the Real-ESRGAN reference, for the tests and benchmarks that compare with it:
# outside the project environment (the library never imports it), installed once, never at run time.
BASICSR := .basicsr
$(BASICSR)/.installed: | $(BIN)/.dev-installed
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --target $(BASICSR) basicsr==1.4.2
	touch $@

# TRL 1.16.0, the peer of bench/grpo.py (GRPOTrainer): outside the project environment like BasicSR,
# only for that benchmark (its dependencies, transformers / accelerate / datasets, are the project's).
TRL := .trl
$(TRL)/.installed: | $(BIN)/.dev-installed
	$(BIN)/python -m pip install --quiet --no-deps --target $(TRL) trl==1.16.0
	touch $@

# Headless Chromium for the test that opens the evaluation report in a browser: Debian's package
# when it is missing and apt-get is there; never fails the install (the test then says how).
chromium:
	@test -x /usr/bin/chromium || ! command -v apt-get >/dev/null 2>&1 || apt-get install -y -q chromium \
		|| (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "note: could not install Chromium (run as root: apt-get install -y chromium); the report browser test will be skipped"

install: $(BIN)/.installed

# the test tools and references: the dev extra, BasicSR, Chromium
test-install: $(BIN)/.dev-installed $(BASICSR)/.installed chromium

# The whole DAG on the embedded default; `ingest` always re-scans the source so new photos are
# picked up, and unchanged inputs leave every downstream stage cached.
pipeline: install
	dvc repro

# everything (what CI runs)
test: test-install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# the edit loop: no servers, no stage subprocesses, no DeepSpeed ranks
test-fast: test-install
	$(BIN)/python -m pytest -m "not server and not stage and not distributed"

bench: test-install $(TRL)/.installed
	$(BIN)/python -m bench.synthesize
	$(BIN)/python -m bench.degrade_reference
	$(BIN)/python bench/rewards.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/sft.py
	$(BIN)/python bench/grpo.py
	$(BIN)/python bench/evaluate.py
	$(BIN)/python bench/flow.py
	$(BIN)/python bench/ingest_memory.py

# The DVC remote on S3, from the environment: REALSR_DVC_BUCKET (+ AWS_ENDPOINT_URL for an
# S3-compatible store, AWS credentials as usual). Written to .dvc/config.local, made the default.
remote-s3:
	dvc remote add --local --force --default s3 "s3://$${REALSR_DVC_BUCKET:?set REALSR_DVC_BUCKET}/dvc"

# The outputs of a remote run (grpo/remote) of the checked-out commit: its recorded dvc.lock,
# params and metrics from the DVC remote's runs/COMMIT/, then the outputs themselves.
run-outputs:
	python -m flows.runs fetch
	dvc pull

clean:
	rm -rf data/raw data/prepared data/shards .dvc/tmp

# The docs' generated tables (README.md, docs/*.md: between <!-- figures:NAME --> markers) from
# metrics/, params.yaml, dvc.yaml and bench/learning.json, and the README's picture: the first
# comparison sheet of the evaluation report, once `make pipeline` has written it.
.PHONY: figures deploy
figures:
	@test -x $(BIN)/python || $(MAKE) install
	$(BIN)/python docs/figures.py
	@sheet=$$(ls reports/evaluate/val/sheets/*.png 2>/dev/null | head -n 1); \
	if [ -n "$$sheet" ]; then cp "$$sheet" docs/comparison.png && echo "docs/comparison.png <- $$sheet"; \
	else echo "note: no comparison sheet yet (make pipeline writes reports/evaluate/val/sheets/); docs/comparison.png unchanged"; fi

# Prefect, on the server PREFECT_API_URL names: every work pool prefect.yaml's deployments use
# (created as process pools when missing), then every deployment. Safe to run again.
deploy:
	@test -x $(BIN)/prefect || $(MAKE) install
	@pools=$$($(BIN)/python -c 'import yaml; print(*sorted({d["work_pool"]["name"] for d in yaml.safe_load(open("prefect.yaml"))["deployments"]}))') \
		&& test -n "$$pools" || { echo "error: prefect.yaml names no work pool" >&2; exit 1; }; \
	for pool in $$pools; do \
		if $(BIN)/prefect work-pool inspect "$$pool" >/dev/null 2>&1; then echo "work pool $$pool: already there"; \
		else $(BIN)/prefect work-pool create "$$pool" --type process || exit 1; fi; \
	done
	$(BIN)/prefect --no-prompt deploy --all
