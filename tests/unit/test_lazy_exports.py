"""Packages whose names are imported from their submodules on first use (egress,
artifacts: checking a workflow needs neither the proxy nor the volumes' event loop)."""

from __future__ import annotations

import importlib

import pytest

from sandbox_orch import artifacts, egress

PACKAGES = [egress, artifacts]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_exported_name_is_the_one_its_submodule_defines(package):
    assert set(package._HOMES) == set(package.__all__)
    for name, home in package._HOMES.items():
        module = importlib.import_module(f"{package.__name__}.{home}")
        assert getattr(package, name) is getattr(module, name), name


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_star_import_gives_every_exported_name(package):
    names: dict[str, object] = {}
    exec(f"from {package.__name__} import *", names)
    assert set(package.__all__) <= set(names)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_an_unknown_name_is_an_attribute_error(package):
    with pytest.raises(AttributeError) as raised:
        package.nothing_here  # noqa: B018
    assert str(raised.value) == f"module {package.__name__!r} has no attribute 'nothing_here'"
    assert not hasattr(package, "proxy_")
