# Two commands for a newcomer: `make demo` and `make test`. Each sets up whatever is
# missing first (engine, virtual environment, images), and does nothing twice.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHECKOV := .venv-checkov/.installed

.PHONY: demo test test-podman k8s-e2e unit lint mutation mutation-changed bench engine images venv clean

demo: images
	$(BIN)/sandbox-orch run configs/examples/hello.yaml

# Three workers, a test file each at a time: the engine tests mostly wait on containers.
test: images $(CHECKOV)
	$(BIN)/ruff check sandbox_orch tests bench
	$(BIN)/pytest -n 3 --dist loadfile

# The hardening suite (each hardening promise, the escape attempts, and the artifact
# hand-off with the attacks on its volumes) again with rootful Podman as the engine,
# through its Docker API (installed, configured and started by scripts/podman-up, here
# only; runc only: the gVisor cases skip). Nothing may be left behind on it.
PODMAN_HOST := unix:///run/podman/podman.sock
ARTIFACTS := tests/integration/test_artifacts.py
PODMAN_TESTS := tests/integration/test_hardening.py tests/integration/test_escape.py \
	$(ARTIFACTS)::test_producer_files_reach_consumer_read_only_and_host_copy \
	$(ARTIFACTS)::test_symlinks_are_refused_and_never_followed \
	$(ARTIFACTS)::test_sparse_files_fail_the_node_and_are_never_expanded_on_the_host \
	$(ARTIFACTS)::test_many_entries_fail_the_node_and_reach_the_host_bounded \
	$(ARTIFACTS)::test_a_binary_in_an_artifact_volume_does_not_run \
	$(ARTIFACTS)::test_a_script_in_an_artifact_volume_does_not_run \
	$(ARTIFACTS)::test_a_chain_of_producers_holds_under_a_ceiling_only_met_by_releasing \
	$(ARTIFACTS)::test_retried_producer_gets_fresh_volumes_and_leaves_none
PODMAN_IMAGES := shell python node

test-podman: images
	scripts/podman-up $(PODMAN_IMAGES)
	DOCKER_HOST=$(PODMAN_HOST) SANDBOX_ORCH_TEST_IMAGES="$(PODMAN_IMAGES)" $(BIN)/pytest -p no:cacheprovider $(PODMAN_TESTS)
	@left=$$(podman ps -aq --filter label=sandbox-orch.run | wc -l); \
	volumes=$$(podman volume ls -q --filter label=sandbox-orch.run | wc -l); \
	if [ "$$left" -ne 0 ] || [ "$$volumes" -ne 0 ]; then \
	  echo "test-podman: $$left labelled container(s), $$volumes volume(s) left" >&2; \
	  podman ps -a --filter label=sandbox-orch.run >&2; exit 1; fi

# The real-cluster suite (tests/k8s_e2e; not part of `make test`): on the cluster
# KUBECONFIG names, else it says what it needs and fails.
k8s-e2e: $(STAMP)
	PYTHON=$(BIN)/python scripts/k8s-e2e

unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check sandbox_orch tests bench
	$(BIN)/ruff format --check sandbox_orch tests bench

# Mutation testing of the security-critical modules against the unit tests (mutmut);
# fails when a mutant survives that tests/mutation/equivalent.txt does not list. A full
# run that passes records tests/mutation/baseline.json; `mutation-changed` (CI) mutates
# only the modules whose verdicts could differ from it (tests/mutation/baseline.py).
mutation: $(STAMP)
	$(BIN)/python tests/mutation/check.py

mutation-changed: $(STAMP)
	$(BIN)/python tests/mutation/check.py --changed

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
