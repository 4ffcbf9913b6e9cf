"""Slash commands read from a workspace's `.claude/commands`: Claude Code's format, and
hostile files (links out of the workspace, FIFOs, huge or deep trees, bad YAML, control
characters), which are skipped with a reason, never followed, never read whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_orch.agents import commands as commands_module
from sandbox_orch.agents.commands import (
    CommandFileError,
    parse_command,
    read_commands,
    split_tools,
)
from sandbox_orch.cli import main

REVIEW = """---
description: Review a pull request
argument-hint: [pr-number] [priority]
allowed-tools: Bash(git diff:*), Bash(gh pr view:*), Read
model: claude-sonnet-4-5
---
Review pull request $ARGUMENTS.
Focus on $2.
"""


def write(root: Path, relative: str, text: str | bytes) -> Path:
    path = root / ".claude" / "commands" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def skipped(found) -> dict[str, str]:
    return {s.path: s.reason for s in found.skipped}


# --- the format --------------------------------------------------------------------------


def test_frontmatter_fields_and_the_prompt():
    command = parse_command("review", ".claude/commands/review.md", REVIEW)
    assert command.description == "Review a pull request"
    assert command.argument_hint == "[pr-number] [priority]"  # a YAML list, shown as written
    assert command.allowed_tools == ("Bash(git diff:*)", "Bash(gh pr view:*)", "Read")
    assert command.model == "claude-sonnet-4-5"
    assert command.body == "Review pull request $ARGUMENTS.\nFocus on $2.\n"
    assert command.problems == ()


def test_a_one_element_hint_list_and_plain_lines_that_are_not_yaml():
    assert parse_command("x", "p", "---\nargument-hint: [pr]\n---\n").argument_hint == "[pr]"
    text = "---\nargument-hint: add [tag] | remove [tag]\ndescription: 'quoted'\n---\nb\n"
    command = parse_command("x", "p", text)
    assert command.argument_hint == "add [tag] | remove [tag]"
    assert command.description == "quoted"


def test_without_frontmatter_the_description_is_the_first_line():
    command = parse_command("fix", "p", "\n\nFix the failing test\nthen run it\n")
    assert command.description == "Fix the failing test"
    assert command.allowed_tools == () and command.model is None
    assert command.body == "\n\nFix the failing test\nthen run it\n"


def test_allowed_tools_as_a_list_and_a_string_hint():
    text = "---\nallowed-tools: [Read, 'Bash(ls:*)']\nargument-hint: '<file>'\n---\nbody\n"
    command = parse_command("x", "p", text)
    assert command.allowed_tools == ("Read", "Bash(ls:*)")
    assert command.argument_hint == "<file>"


def test_commas_inside_a_tool_pattern_stay_in_it():
    assert split_tools("Bash(git log --format=%h,%s:*), Read,, Write ") == [
        "Bash(git log --format=%h,%s:*)",
        "Read",
        "Write",
    ]


def test_wrong_field_types_are_ignored_and_named():
    text = "---\ndescription: {a: 1}\nallowed-tools: 7\nmodel: [x]\n---\nbody\n"
    command = parse_command("x", "p", text)
    assert command.description == "body"  # the default, since the field was unusable
    assert command.allowed_tools == () and command.model is None
    assert len(command.problems) == 3


def test_a_bom_and_crlf_lines_are_accepted():
    command = parse_command("x", "p", "\ufeff---\r\ndescription: d\r\n---\r\nbody\r\n")
    assert command.description == "d" and command.body == "body\r\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("---\ndescription: x\nbody\n", "no closing"),
        ("---\n- a\n- b\n---\nbody\n", "not a mapping"),
        ("---\na: &x 1\nb: *x\n---\nbody\n", "anchors"),
        ("---\na: !!python/object:os.system x\n---\nbody\n", "tag"),
        ("---\na: 1\na: 2\n---\nbody\n", "duplicate"),
        ("---\n- a: [\n---\nbody\n", "neither YAML"),
        ("---\na: [x\na: y\n---\nbody\n", "duplicate key"),
    ],
)
def test_bad_frontmatter_is_refused_with_a_reason(text, why):
    with pytest.raises(CommandFileError, match=why):
        parse_command("x", "p", text)


def test_fields_are_bounded():
    text = f"---\ndescription: {'d' * 5000}\nallowed-tools: {', '.join(['Read'] * 500)}\n---\n"
    command = parse_command("x", "p", text)
    assert len(command.description) == commands_module.MAX_FIELD
    assert len(command.allowed_tools) == commands_module.MAX_TOOLS
    assert any("more than" in p for p in command.problems)


# --- the tree ----------------------------------------------------------------------------


def test_names_come_from_files_and_subdirectories(tmp_path):
    write(tmp_path, "review.md", REVIEW)
    write(tmp_path, "frontend/component.md", "Make a component")
    write(tmp_path, "backend/api/endpoint.md", "Make an endpoint")
    write(tmp_path, "notes.txt", "not a command")
    write(tmp_path, ".hidden.md", "hidden")
    found = read_commands(tmp_path)
    assert sorted(found.commands) == ["backend:api:endpoint", "frontend:component", "review"]
    assert found.commands["frontend:component"].path == ".claude/commands/frontend/component.md"
    assert found.skipped == [] and found.found_dir


def test_find_by_full_name_bare_name_or_with_a_slash(tmp_path):
    write(tmp_path, "review.md", "top")
    write(tmp_path, "git/review.md", "git's")
    write(tmp_path, "frontend/component.md", "c")
    found = read_commands(tmp_path)
    assert found.find("/review").body == "top"  # the full name wins
    assert found.find("git:review").body == "git's"
    assert found.find("component").name == "frontend:component"  # unique bare name
    assert found.find("nope") is None
    write(tmp_path, "backend/component.md", "d")
    again = read_commands(tmp_path)
    assert again.find("component") is None  # ambiguous
    assert {c.name for c in again.candidates("component")} == {
        "frontend:component",
        "backend:component",
    }


def test_no_commands_directory_is_an_empty_set(tmp_path):
    found = read_commands(tmp_path)
    assert found.commands == {} and found.skipped == [] and not found.found_dir


def test_a_symlinked_command_file_is_not_followed(tmp_path):
    secret = tmp_path.parent / f"{tmp_path.name}-secret.md"
    secret.write_text("---\ndescription: SECRET-OUTSIDE\n---\nSECRET-OUTSIDE\n")
    write(tmp_path, "ok.md", "fine")
    (tmp_path / ".claude/commands/leak.md").symlink_to(secret)
    found = read_commands(tmp_path)
    assert list(found.commands) == ["ok"]
    assert skipped(found) == {".claude/commands/leak.md": "a symbolic link, not followed"}


@pytest.mark.parametrize("link", [".claude", ".claude/commands", ".claude/commands/sub"])
def test_a_symlinked_directory_on_the_way_is_not_followed(tmp_path, link):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    (outside / "commands" / "sub").mkdir(parents=True)
    (outside / "commands" / "sub" / "leak.md").write_text("SECRET-OUTSIDE")
    (outside / "commands" / "leak.md").write_text("SECRET-OUTSIDE")
    (outside / "sub").mkdir()
    (outside / "sub" / "leak.md").write_text("SECRET-OUTSIDE")
    (outside / "leak.md").write_text("SECRET-OUTSIDE")
    (outside / "commands" / "commands").mkdir()
    place = tmp_path / link
    place.parent.mkdir(parents=True, exist_ok=True)
    target = {".claude": outside, ".claude/commands": outside / "commands"}.get(link, outside)
    place.symlink_to(target, target_is_directory=True)
    found = read_commands(tmp_path)
    assert found.commands == {}
    assert skipped(found) == {link: "a symbolic link, not followed"}
    assert all("SECRET" not in c.body for c in found.commands.values())


def test_a_fifo_is_never_read(tmp_path):
    write(tmp_path, "ok.md", "fine")
    os.mkfifo(tmp_path / ".claude/commands/pipe.md")
    found = read_commands(tmp_path)  # would block forever if the FIFO were opened to read
    assert list(found.commands) == ["ok"]
    assert skipped(found) == {".claude/commands/pipe.md": "not a regular file (a FIFO)"}


def test_a_large_file_is_skipped_without_reading_it_all(tmp_path, monkeypatch):
    monkeypatch.setattr(commands_module, "MAX_FILE_BYTES", 1000)
    write(tmp_path, "big.md", "x" * 1001)
    write(tmp_path, "fits.md", "x" * 1000)
    found = read_commands(tmp_path)
    assert list(found.commands) == ["fits"]
    assert skipped(found) == {".claude/commands/big.md": "larger than 1000 bytes"}


def test_a_deep_tree_stops_at_the_depth_limit(tmp_path):
    depth = commands_module.MAX_DEPTH
    write(tmp_path, "/".join(f"d{i}" for i in range(depth)) + "/ok.md", "fine")
    write(tmp_path, "/".join(f"d{i}" for i in range(depth + 1)) + "/deep.md", "too deep")
    found = read_commands(tmp_path)
    assert list(found.commands) == [":".join(f"d{i}" for i in range(depth)) + ":ok"]
    assert list(skipped(found).values()) == [f"deeper than {depth} levels: not read"]


def test_many_entries_and_many_commands_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(commands_module, "MAX_COMMANDS", 5)
    for i in range(8):
        write(tmp_path, f"c{i}.md", "x")
    found = read_commands(tmp_path)
    assert len(found.commands) == 5
    assert len(found.skipped) == 3
    monkeypatch.setattr(commands_module, "MAX_ENTRIES", 4)
    for i in range(3):
        write(tmp_path, f"sub{i}/a.md", "x")
    bounded = read_commands(tmp_path)
    reasons = list(skipped(bounded).values())
    assert reasons.count("more than 4 entries: the rest were not read") == 1
    assert len(bounded.commands) <= 4


def test_unusable_names_and_non_utf8_are_skipped(tmp_path):
    write(tmp_path, "with space.md", "x")
    write(tmp_path, "bad\x1bname.md", "x")
    write(tmp_path, "latin.md", b"caf\xe9")
    write(tmp_path, "ok.md", "fine")
    found = read_commands(tmp_path)
    assert list(found.commands) == ["ok"]
    assert skipped(found) == {
        ".claude/commands/bad\x1bname.md": "not a usable command name",
        ".claude/commands/latin.md": "not UTF-8 text",
        ".claude/commands/with space.md": "not a usable command name",
    }


def test_a_commands_path_that_is_a_file_is_reported(tmp_path):
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude/commands").write_text("not a directory")
    found = read_commands(tmp_path)
    assert found.commands == {} and not found.found_dir
    assert skipped(found) == {".claude/commands": "not a directory"}


# --- the command line --------------------------------------------------------------------


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_list_shows_names_hints_and_descriptions_and_reports_skips(tmp_path):
    write(tmp_path, "review.md", REVIEW)
    os.mkfifo(tmp_path / ".claude/commands/pipe.md")
    result = cli("commands", "list", "--workspace", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["/review [pr-number] [priority]  Review a pull request"]
    assert "skipped .claude/commands/pipe.md: not a regular file (a FIFO)" in result.stderr


def test_list_json(tmp_path):
    write(tmp_path, "review.md", REVIEW)
    result = cli("commands", "list", "--workspace", str(tmp_path), "--json")
    document = json.loads(result.stdout)
    assert [c["name"] for c in document["commands"]] == ["review"]
    assert document["commands"][0]["allowed_tools"][0] == "Bash(git diff:*)"
    assert document["skipped"] == []


def test_output_escapes_control_characters_and_never_starts_a_line_with_the_file(tmp_path):
    hostile = (
        '---\ndescription: "ok\\n::error::forged\\e[2J"\n---\n::set-env name=X::y\n\x1b[31mred\n'
    )
    write(tmp_path, "evil.md", hostile)
    listed = cli("commands", "list", "--workspace", str(tmp_path))
    shown = cli("commands", "show", "evil", "--workspace", str(tmp_path))
    for output in (listed.stdout, shown.stdout):
        assert "\x1b" not in output
        assert not any(line.startswith("::") for line in output.splitlines())
    assert "\\n::error::forged\\x1b[2J" in listed.stdout
    assert "  | ::set-env name=X::y" in shown.stdout.splitlines()
    assert "  | \\x1b[31mred" in shown.stdout.splitlines()


def test_show_a_command(tmp_path):
    write(tmp_path, "git/review.md", REVIEW)
    result = cli("commands", "show", "/git:review", "--workspace", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "/git:review  (.claude/commands/git/review.md)"
    assert "allowed-tools: Bash(git diff:*), Bash(gh pr view:*), Read" in lines
    assert lines[-2:] == ["  | Review pull request $ARGUMENTS.", "  | Focus on $2."]
    as_json = json.loads(
        cli("commands", "show", "review", "--workspace", str(tmp_path), "--json").stdout
    )
    assert as_json["name"] == "git:review" and as_json["body"].startswith("Review pull")


def test_show_an_unknown_or_ambiguous_command_exits_2(tmp_path):
    write(tmp_path, "a/x.md", "1")
    write(tmp_path, "b/x.md", "2")
    missing = cli("commands", "show", "nope", "--workspace", str(tmp_path))
    assert missing.exit_code == 2 and "'nope': not found" in missing.stderr
    ambiguous = cli("commands", "show", "x", "--workspace", str(tmp_path))
    assert ambiguous.exit_code == 2 and "ambiguous: /a:x, /b:x" in ambiguous.stderr
