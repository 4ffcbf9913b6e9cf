"""CI's mutation run (tests/mutation/baseline.py): which modules are mutated again after
a change, against the baseline a full run recorded. A module is skipped only when
neither it, nor a test file that ran its mutants (with what that file imports or
reads), nor its listed mutants changed."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from tests.mutation.baseline import Baseline, changed, module_of, patterns_for, record

MODULES = ["sandbox_orch.artifacts", "sandbox_orch.artifacts.volumes", "sandbox_orch.secrets"]
STATS = {
    "sandbox_orch.secrets.x_value": ["tests/unit/test_secrets.py::test_value[a]"],
    "sandbox_orch.artifacts.xǁArtifactVolumesǁholds": ["tests/unit/test_store.py::test_holds"],
    "sandbox_orch.artifacts.volumes.x_create": [
        "tests/unit/test_store.py::test_create",
        "tests/unit/test_volumes.py::test_create",
    ],
}
FILES = {
    "pyproject.toml": "[tool.mutmut]\n",
    "sandbox_orch/__init__.py": "",
    "sandbox_orch/secrets.py": "def value(): return 1\n",
    "sandbox_orch/artifacts/__init__.py": "class ArtifactVolumes: ...\n",
    "sandbox_orch/artifacts/volumes.py": "def create(): return 2\n",
    "tests/unit/__init__.py": "",
    "tests/unit/conftest.py": "",
    "tests/unit/helpers.py": "from .paths import here\n",
    "tests/unit/paths.py": "here = 1\n",
    "tests/unit/data/store.json": "{}\n",
    "tests/unit/test_secrets.py": "def test_value(): pass\n",
    "tests/unit/test_store.py": "from .helpers import here\nDATA = 'store.json'\n",
    "tests/unit/test_volumes.py": "def test_create(): pass\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def again(repo: Path, baseline: Baseline | None, entries=None) -> tuple[list[str], str]:
    return changed(baseline, repo, MODULES, entries or {})


def recorded(repo: Path, entries=None) -> Baseline:
    return Baseline.from_json(record(repo, MODULES, STATS, entries or {}).to_json())


def test_nothing_changed_nothing_is_mutated(repo):
    assert again(repo, recorded(repo)) == ([], "")


def test_a_changed_module_is_mutated_alone(repo):
    baseline = recorded(repo)
    (repo / "sandbox_orch/artifacts/volumes.py").write_text("def create(): return 3\n")
    assert again(repo, baseline) == (["sandbox_orch.artifacts.volumes"], "")


def test_a_changed_package_module_is_mutated_without_its_submodules(repo):
    baseline = recorded(repo)
    (repo / "sandbox_orch/artifacts/__init__.py").write_text("class ArtifactVolumes: x = 1\n")
    assert again(repo, baseline) == (["sandbox_orch.artifacts"], "")


def test_a_changed_test_file_mutates_every_module_it_ran_mutants_of(repo):
    baseline = recorded(repo)
    (repo / "tests/unit/test_store.py").write_text("from .helpers import here\n# weaker\n")
    assert again(repo, baseline) == (
        ["sandbox_orch.artifacts", "sandbox_orch.artifacts.volumes"],
        "",
    )


@pytest.mark.parametrize("support", ["tests/unit/helpers.py", "tests/unit/paths.py"])
def test_a_changed_support_module_mutates_the_modules_of_the_tests_importing_it(repo, support):
    baseline = recorded(repo)
    (repo / support).write_text("here = 2\n")
    assert again(repo, baseline)[0] == ["sandbox_orch.artifacts", "sandbox_orch.artifacts.volumes"]


def test_a_changed_data_file_mutates_the_modules_of_the_tests_naming_it(repo):
    baseline = recorded(repo)
    (repo / "tests/unit/data/store.json").write_text("[]\n")
    assert again(repo, baseline)[0] == ["sandbox_orch.artifacts", "sandbox_orch.artifacts.volumes"]


def test_a_deleted_test_file_mutates_its_modules(repo):
    baseline = recorded(repo)
    (repo / "tests/unit/test_volumes.py").unlink()
    assert again(repo, baseline) == (["sandbox_orch.artifacts.volumes"], "")


def test_a_new_test_file_only_adds_killers(repo):
    baseline = recorded(repo)
    (repo / "tests/unit/test_more.py").write_text("from .helpers import here\n")
    assert again(repo, baseline) == ([], "")


def test_changed_entries_mutate_their_module(repo):
    baseline = recorded(repo, {"sandbox_orch.secrets": "aa"})
    assert again(repo, baseline, {"sandbox_orch.secrets": "aa"}) == ([], "")
    assert again(repo, baseline, {"sandbox_orch.secrets": "bb"}) == (["sandbox_orch.secrets"], "")
    assert again(repo, baseline, {}) == (["sandbox_orch.secrets"], "")


def test_a_module_new_since_the_baseline_is_mutated(repo):
    baseline = recorded(repo)
    assert changed(baseline, repo, [*MODULES, "sandbox_orch.mounts"], {}) == (
        ["sandbox_orch.mounts"],
        "",
    )


@pytest.mark.parametrize("everywhere", ["pyproject.toml", "tests/unit/conftest.py"])
def test_what_every_test_depends_on_mutates_everything(repo, everywhere):
    baseline = recorded(repo)
    (repo / everywhere).write_text("# changed\n")
    modules, why = again(repo, baseline)
    assert modules == MODULES and everywhere in why


def test_without_a_baseline_everything_is_mutated(repo):
    assert again(repo, None) == (MODULES, "there is no baseline")


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("sandbox_orch.secrets.x_value__mutmut_3", "sandbox_orch.secrets"),
        ("sandbox_orch.artifacts.xǁArtifactVolumesǁholds__mutmut_1", "sandbox_orch.artifacts"),
        ("sandbox_orch.artifacts.volumes.x_create", "sandbox_orch.artifacts.volumes"),
    ],
)
def test_a_mutant_is_of_the_module_its_name_says(name, module):
    assert module_of(name) == module


def test_not_a_mangled_name_is_an_error():
    with pytest.raises(ValueError, match="not a mangled"):
        module_of("sandbox_orch.secrets")


def test_a_package_module_s_patterns_match_its_own_mutants_only():
    mutants = [
        "sandbox_orch.artifacts.x_f__mutmut_1",
        "sandbox_orch.artifacts.xǁArtifactVolumesǁholds__mutmut_2",
        "sandbox_orch.artifacts.volumes.x_create__mutmut_1",
        "sandbox_orch.artifacts.volumes.xǁStoreǁput__mutmut_4",
    ]

    def matched(module: str) -> list[str]:
        patterns = patterns_for(module)
        return [m for m in mutants if any(fnmatch.fnmatchcase(m, p) for p in patterns)]

    assert matched("sandbox_orch.artifacts") == mutants[:2]
    assert matched("sandbox_orch.artifacts.volumes") == mutants[2:]


def test_a_passing_run_of_the_changed_modules_renews_their_part_only(repo):
    baseline = recorded(repo)
    (repo / "tests/unit/test_store.py").write_text("from .helpers import here\n# weaker\n")
    (repo / "sandbox_orch/secrets.py").write_text("def value(): return 2\n")
    again_now, _ = again(repo, baseline)
    assert again_now == MODULES  # the store's two modules, and secrets
    part = record(repo, ["sandbox_orch.artifacts", "sandbox_orch.artifacts.volumes"], STATS, {})
    renewed = Baseline.from_json(baseline.renewed(part).to_json())
    assert again(repo, renewed) == (["sandbox_orch.secrets"], "")  # not run: still due
    assert renewed.modules["sandbox_orch.secrets"] == baseline.modules["sandbox_orch.secrets"]


def test_a_test_file_skipped_for_a_module_s_mutants_does_not_cover_it(repo):
    """conftest.py's SKIPPED_FOR: such a file never runs against the module's mutants,
    so its changes cannot change their verdicts."""
    skipped = {"sandbox_orch.artifacts.volumes.": ("test_store.py",)}
    baseline = Baseline.from_json(record(repo, MODULES, STATS, {}, skipped).to_json())
    assert baseline.covered_by["sandbox_orch.artifacts.volumes"] == ["tests/unit/test_volumes.py"]
    (repo / "tests/unit/test_store.py").write_text("# weaker\n")
    assert again(repo, baseline) == (["sandbox_orch.artifacts"], "")
