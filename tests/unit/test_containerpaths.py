"""Container paths exactly: the normal form's refusals and bounds, every fixed symlink
looked through (and nothing next to it), and each refusal's sentence. What a user reads
and where the limits lie are asserted whole (mutation testing found them unpinned)."""

from __future__ import annotations

import pytest

from sandbox_orch.containerpaths import (
    ALIASES,
    FORBIDDEN_TARGETS,
    FORBIDDEN_WORKDIRS,
    MAX_LENGTH,
    canonical,
    forbidden_target,
    forbidden_workdir,
    normalise,
)


@pytest.mark.parametrize("bad", ["work", "", "./w", None, 7, b"/w"])
def test_a_relative_or_non_text_path_is_refused_saying_what_is_expected(bad):
    with pytest.raises(ValueError) as refused:
        normalise(bad)
    assert str(refused.value) == "must be an absolute path inside the container"


def test_the_length_bound_is_exact():
    longest = "/" + "a" * (MAX_LENGTH - 1)
    assert MAX_LENGTH == 1024 and normalise(longest) == longest
    with pytest.raises(ValueError) as refused:
        normalise(longest + "a")
    assert str(refused.value) == "a container path is at most 1024 characters"


@pytest.mark.parametrize("character", ["\x00", "\n", "\x1f", "\x7f"])
def test_control_characters_are_refused(character):
    with pytest.raises(ValueError) as refused:
        normalise(f"/a{character}b")
    assert str(refused.value) == "a container path cannot contain control characters or NUL"


@pytest.mark.parametrize("character", [" ", "~", "\x80", "é"])
def test_the_characters_around_the_control_ones_are_kept(character):
    assert normalise(f"/a{character}b/") == f"/a{character}b"


@pytest.mark.parametrize(
    ("written", "normal"),
    [("/a/b/..", "/a"), ("/a/b/../..", "/"), ("/a/./b/.", "/a/b"), ("/a/..b/c", "/a/..b/c")],
)
def test_dot_and_dot_dot_components(written, normal):
    assert normalise(written) == normal


@pytest.mark.parametrize(("alias", "real"), sorted(ALIASES.items()))
def test_every_fixed_symlink_is_looked_through_and_nothing_beside_it(alias, real):
    assert canonical(alias) == real
    assert canonical(f"{alias}/x/y") == f"{real}/x/y"
    assert canonical(f"{alias}x") == f"{alias}x"  # a sibling name, not the symlink
    assert canonical(f"/work{alias}") == f"/work{alias}"  # only at the root


def test_the_fixed_symlinks_floor():
    """What the README promises is looked through; deleting one fails here."""
    assert {
        "/dev/fd": "/proc/self/fd",
        "/dev/stdin": "/proc/self/fd/0",
        "/var/run": "/run",
        "/bin": "/usr/bin",
        "/lib": "/usr/lib",
    }.items() <= ALIASES.items()


@pytest.mark.parametrize(("alias", "real"), sorted(ALIASES.items()))
def test_a_target_reached_through_a_symlink_names_both(alias, real):
    (place,) = [p for p in FORBIDDEN_TARGETS if real == p or real.startswith(p + "/")]
    expected = f"cannot mount over {place}: {FORBIDDEN_TARGETS[place]} ({alias} is {real})"
    assert forbidden_target(alias) == expected
    assert (
        forbidden_target(f"{place}/x") == f"cannot mount over {place}: {FORBIDDEN_TARGETS[place]}"
    )


def test_the_root_is_refused():
    assert forbidden_target("/") == "cannot mount over the root file system"


@pytest.mark.parametrize(("place", "reason"), sorted(FORBIDDEN_WORKDIRS.items()))
def test_each_forbidden_working_directory_says_why(place, reason):
    expected = f"a working directory cannot be in {place}: {reason}"
    assert forbidden_workdir(place) == expected
    assert forbidden_workdir(f"{place}/x") == expected
    assert forbidden_workdir(f"{place}x") is None


def test_a_working_directory_reached_through_a_symlink_names_both():
    assert forbidden_workdir("/dev/fd/7") == (
        "a working directory cannot be in /proc: the kernel's process interface "
        "(/dev/fd/7 is /proc/self/fd/7)"
    )
    assert forbidden_workdir("/dev/stdin") == (
        "a working directory cannot be in /proc: the kernel's process interface "
        "(/dev/stdin is /proc/self/fd/0)"
    )


@pytest.mark.parametrize("workdir", ["/", "/etc", "/usr/bin", "/run", "/var/run", "/tmp"])
def test_a_working_directory_elsewhere_is_fine(workdir):
    assert forbidden_workdir(workdir) is None


def test_no_fixed_symlink_leads_into_another():
    """One pass through the table reaches the end (canonical's bound is never the limit);
    a chain added later must be looked through, which this would point out."""
    for alias, real in ALIASES.items():
        for other in ALIASES:
            inside = real == other or real.startswith(other + "/") or other.startswith(real + "/")
            assert not inside, (alias, real, other)
