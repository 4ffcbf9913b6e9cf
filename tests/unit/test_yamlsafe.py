"""The strict YAML reader: what it refuses, and that it keeps lines."""

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.yamlsafe import MAX_BYTES, load_file, load_text


def refused(text: str) -> str:
    with pytest.raises(InputRefused) as caught:
        load_text(text, "w.yaml")
    (problem,) = caught.value.problems
    return str(problem)


def test_plain_mapping_keeps_line_of_every_key():
    doc = load_text("a: 1\nb:\n  c: [x, y]\n", "w.yaml")
    assert doc.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert doc.line_of(("b", "c", 1)) == 3
    assert doc.line_of(("b", "missing", "deeper")) == 2


def test_yaml_1_1_booleans_and_octals_are_not_applied():
    doc = load_text("on: [failed]\nyes: no\nmode: 017\nhex: 0x10\nflag: true\nnull_: ~\n", "w")
    assert doc.data == {
        "on": ["failed"],
        "yes": "no",
        "mode": 17,
        "hex": 16,
        "flag": True,
        "null_": None,
    }


def test_dates_stay_strings():
    assert load_text("when: 2026-11-25\n", "w").data == {"when": "2026-11-25"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &anchor 1\nb: 2\n", "w.yaml:1: YAML anchors are not allowed"),
        ("a: 1\nb: *x\n", "w.yaml:2:"),  # an undefined alias is still refused, with its line
        ("a: !!python/object:os.system 1\n", "w.yaml:1: YAML tags are not allowed"),
        ("a: !custom 1\n", "YAML tags are not allowed (!custom)"),
        ("a: !!binary aGVsbG8=\n", "YAML tags are not allowed"),
        ("a: 1\nb: 2\na: 3\n", "w.yaml:3: duplicate key 'a'"),
        ("a: [1, 2\n", "w.yaml:2: invalid YAML"),
        ("", "w.yaml: the file is empty"),
        ("---\na: 1\n---\nb: 2\n", "invalid YAML"),
        ("? [a, b]\n: 1\n", "mapping keys must be plain scalars"),
    ],
)
def test_refused_constructs_name_the_line(text, expected):
    assert expected in refused(text)


def test_merge_keys_are_plain_keys_not_merges():
    # `<<` has no special meaning, and aliases (its only use) are refused anyway.
    assert load_text("<<: 1\n", "w").data == {"<<": 1}


def test_billion_laughs_is_refused_at_the_first_anchor():
    text = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n'
    assert "anchors are not allowed" in refused(text)


def test_deep_nesting_is_refused():
    assert "nesting deeper than" in refused("[" * 200 + "]" * 200)


def test_file_over_one_mebibyte_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(InputRefused, match="larger than"):
        load_file(path)


def test_non_utf8_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(InputRefused, match="not UTF-8"):
        load_file(path)


@pytest.mark.parametrize(
    ("text", "line", "code"),
    [
        ("a: 1\nb: x\x00y\n", 2, "0000"),
        ("a: 'quoted \x07 bell'\n", 1, "0007"),
        ("a: 1\n\n# \x1b[31m a comment\n", 3, "001B"),
        ("a: \ufffe\n", 1, "FFFE"),
    ],
)
def test_an_unprintable_character_is_one_line_naming_it(text, line, code):
    """PyYAML refuses these as it makes its reader, outside its parse errors: it was a
    traceback and exit 3 (a workflow holding a NUL, or /proc/self/environ given as one)."""
    assert (
        refused(text)
        == f"w.yaml:{line}: invalid YAML: unprintable character U+{code} is not allowed"
    )
