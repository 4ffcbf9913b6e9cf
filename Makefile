# Two commands for a newcomer: `make demo` and `make test`. Each sets up whatever is
# missing first (engine, virtual environment, images), and does nothing twice.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHECKOV := .venv-checkov/.installed

.PHONY: demo test test-podman unit lint mutation bench engine images venv clean

demo: images
	$(BIN)/sandbox-orch run configs/examples/hello.yaml

# Three workers, a test file each at a time: the engine tests mostly wait on containers.
test: images $(CHECKOV)
	$(BIN)/ruff check sandbox_orch tests bench
	$(BIN)/pytest -n 3 --dist loadfile

# The hardening suite (each hardening promise, and the escape attempts) again with
# rootful Podman as the engine, through its Docker API (installed, configured and started
# by scripts/podman-up, here only; runc only: the gVisor cases skip). Nothing may be left
# behind on it.
PODMAN_HOST := unix:///run/podman/podman.sock
PODMAN_TESTS := tests/integration/test_hardening.py tests/integration/test_escape.py
PODMAN_IMAGES := shell python node

test-podman: images
	scripts/podman-up $(PODMAN_IMAGES)
	DOCKER_HOST=$(PODMAN_HOST) SANDBOX_ORCH_TEST_IMAGES="$(PODMAN_IMAGES)" $(BIN)/pytest -p no:cacheprovider $(PODMAN_TESTS)
	@left=$$(podman ps -aq --filter label=sandbox-orch.run | wc -l); \
	volumes=$$(podman volume ls -q --filter label=sandbox-orch.run | wc -l); \
	if [ "$$left" -ne 0 ] || [ "$$volumes" -ne 0 ]; then \
	  echo "test-podman: $$left labelled container(s), $$volumes volume(s) left" >&2; \
	  podman ps -a --filter label=sandbox-orch.run >&2; exit 1; fi

unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check sandbox_orch tests bench
	$(BIN)/ruff format --check sandbox_orch tests bench

# Mutation testing of the security-critical modules against the unit tests (mutmut);
# fails when a mutant survives that tests/mutation/equivalent.txt does not list.
mutation: $(STAMP)
	$(BIN)/python tests/mutation/check.py

# Each prints its figures, its target and PASS/FAIL; --strict would make a miss fail.
BENCHES := node_overhead scheduler_overhead chain_handoff artifact_transfer output_flood agent_budget workspace_copy \
           cli_latency end_to_end warm_chain

bench: images
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

engine:
	scripts/engine-up

images: engine $(STAMP)
	$(BIN)/sandbox-orch images build

venv: $(STAMP)

# checkov (the Kubernetes manifests' outside judge, tests/unit/test_k8s_checkov.py) in a
# virtual environment of its own: its many dependencies stay out of the project's. About
# 35 s to install on a fresh machine.
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet 'checkov==3.3.30'
	touch $@

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	-$(BIN)/sandbox-orch gc
	rm -rf .sandbox-orch
