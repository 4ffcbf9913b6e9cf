"""Interactive sessions the way a person has them: `sandbox-orch single claude` (and
codex) with no prompt, in a real terminal (tmux), against the mock model API. Keys are
sent, the screen is read back (polled for text, never slept on), the agent is left with
its own exit keys, and then: the session ended, the terminal is back in cooked mode,
the changes came back as a patch, and nothing the run created is left on the engine."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from ..conftest import REPO, labelled_leftovers, unique
from .conftest import ANSWER, for_the_mock, without_agent_rules

pytestmark = pytest.mark.engine

SCREEN_TIMEOUT_S = 90.0  # an agent's first screen, under gVisor on a busy machine
POLL_S = 0.1
EXIT_WAIT_S = 15.0  # for an agent to react to one Ctrl-C
WIDTH, HEIGHT = 100, 30


class Terminal:
    """A tmux server of the test's own (its own socket: other tmux users are untouched),
    holding one window."""

    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.name, *args], capture_output=True, text=True, check=True
        )
        return proc.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        settings = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        size = ["-x", str(WIDTH), "-y", str(HEIGHT)]
        self.tmux("new-session", "-d", "-s", "main", *size, *settings, command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "main", "-S", "-200")

    def wait_for(
        self, wanted: Callable[[str], bool], what: str, timeout: float = SCREEN_TIMEOUT_S
    ) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if wanted(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} on the screen:\n{screen}")
            time.sleep(POLL_S)  # polling the screen, not waiting for an effect

    def wait_for_text(self, text: str) -> str:
        return self.wait_for(lambda screen: text in screen, repr(text))

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        """Type `text` literally; return once it shows (then Enter submits it, not a
        paste the agent might still be reading)."""
        self.tmux("send-keys", "-t", "main", "-l", text)
        self.wait_for_text(text)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)


@pytest.fixture
def terminal():
    term = Terminal(unique("so-tty"))
    yield term
    term.close()


def session_command(store: Path, runtime: str, workspace: Path, policy: Path) -> str:
    """The user's shell line: the session, then its exit code and the terminal's modes
    (read after it, from the same terminal), then a pause to read them."""
    argv = [
        sys.executable, "-m", "sandbox_orch", "single", runtime,
        "--workspace", str(workspace), "--policy", str(policy),
    ]  # fmt: skip
    line = " ".join(shlex.quote(a) for a in argv)
    return (
        f"cd {shlex.quote(str(REPO))} && SANDBOX_ORCH_HOME={shlex.quote(str(store))} {line}; "
        'echo "EXIT=$?"; stty -a | tr "\\n" " " | sed "s/^/STTY: /"; echo; sleep 600'
    )


def exit_agent(term: Terminal) -> str:
    """Ctrl-C, as the agent wants it for leaving: again once it says "again", or when a
    first one only interrupted what it was still finishing (a few tries, each waited on)."""
    for _ in range(3):
        term.keys("C-c")
        try:
            screen = term.wait_for(
                lambda s: "EXIT=" in s or "again" in s.lower(), "exit or its hint", EXIT_WAIT_S
            )
        except AssertionError:
            continue
        if "EXIT=" not in screen:
            term.keys("C-c")
        return term.wait_for_text("STTY: ")
    raise AssertionError(f"Ctrl-C did not end the agent:\n{term.screen()}")


def finished_run(store: Path) -> tuple[str, dict]:
    (results,) = (store / "runs").glob("*/results.json")
    data = json.loads(results.read_text())
    return data["run_id"], data


def assert_restored(screen: str) -> None:
    """Cooked mode again: line editing, echo and signals from the keyboard."""
    modes = screen.split("STTY: ")[1].split()
    assert {"icanon", "echo", "isig"} <= set(modes), modes


def project(tmp_path: Path) -> Path:
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "app.py").write_text("print('hello')\n")
    return workspace


@pytest.mark.parametrize("agent_policy", ["runc", "runsc"], indirect=True)
def test_claude_session_in_a_terminal_writes_a_file_that_comes_back_as_a_patch(
    agent_policy, mock_api, tmp_path, keys, docker_client, terminal
):
    # The shipped policy for sessions: its agent rules hold on the session's command line.
    policy = for_the_mock("sessions", agent_policy[1], mock_api, tmp_path)
    store, workspace = tmp_path / "store", project(tmp_path)
    command = session_command(store, "claude", workspace, policy)
    terminal.start(command, {"ANTHROPIC_API_KEY": keys["ANTHROPIC_API_KEY"]})
    # Straight at the prompt (no onboarding, trust or API-key dialog), at the window's
    # width: the size reached the container at the start.
    terminal.wait_for(lambda s: "─" * WIDTH in s and "accept edits" in s, "a full-width prompt")
    # A resize reaches it too: it redraws at the new width.
    terminal.tmux("resize-window", "-t", "main", "-x", str(WIDTH - 10), "-y", str(HEIGHT))
    terminal.wait_for(
        lambda s: any(line == "─" * (WIDTH - 10) for line in s.splitlines()), "a resized rule"
    )
    terminal.type("please WRITE_FILE:/workspace/NOTES.md now")
    terminal.keys("Enter")
    terminal.wait_for_text(ANSWER)
    screen = exit_agent(terminal)
    assert "EXIT=0" in screen, screen
    assert_restored(screen)
    assert "changes: " in screen
    run_id, results = finished_run(store)
    node = results["nodes"]["single"]
    assert node["status"] == "succeeded" and node["interactive"] is True
    patch = Path(node["artifacts"][0]["path"]).read_text()
    assert "+++ b/NOTES.md" in patch and "+written by the mock model" in patch
    assert not (workspace / "NOTES.md").exists()  # the workspace itself is untouched
    assert labelled_leftovers(docker_client, run_id) == []
    assert keys["ANTHROPIC_API_KEY"] not in json.dumps(results)


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)
def test_codex_session_in_a_terminal_answers_and_ends_cleanly(
    agent_policy, mock_api, tmp_path, keys, docker_client, terminal
):
    policy, _ = agent_policy
    without_agent_rules(policy)
    store, workspace = tmp_path / "store", project(tmp_path)
    command = session_command(store, "codex", workspace, policy)
    terminal.start(command, {"OPENAI_API_KEY": keys["OPENAI_API_KEY"]})
    terminal.wait_for_text("Ask Codex to do anything")  # no trust dialog first
    terminal.type("hello there")
    terminal.keys("Enter")
    terminal.wait_for_text(ANSWER)
    terminal.wait_for_text("Worked for")  # its turn is over: Ctrl-C now means "quit"
    screen = exit_agent(terminal)
    assert "EXIT=0" in screen, screen
    assert_restored(screen)
    run_id, results = finished_run(store)
    node = results["nodes"]["single"]
    assert node["status"] == "succeeded" and node["interactive"] is True
    assert labelled_leftovers(docker_client, run_id) == []


def start_claude_session(
    term: Terminal, policy: Path, mock_api: str, tmp_path: Path, keys: dict[str, str]
) -> Path:
    """A Claude session at its prompt, under `policy` without its agent rules; returns
    the run store."""
    without_agent_rules(policy)
    store = tmp_path / "store"
    term.start(session_command(store, "claude", project(tmp_path), policy),
               {"ANTHROPIC_API_KEY": keys["ANTHROPIC_API_KEY"]})  # fmt: skip
    term.wait_for_text("accept edits")
    return store


def session_process(term: Terminal) -> psutil.Process:
    """The `sandbox-orch single` process running in the terminal's shell."""
    shell = psutil.Process(int(term.tmux("display-message", "-p", "-t", "main", "#{pane_pid}")))
    (found,) = [p for p in shell.children() if "sandbox_orch" in " ".join(p.cmdline())]
    return found


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)
def test_a_sigint_goes_to_the_agent_and_a_sigterm_ends_the_session_cleanly(
    agent_policy, mock_api, tmp_path, keys, docker_client, terminal
):
    """A SIGINT sent from outside during a session is the agent's Ctrl-C (it asks for a
    second one), not a cancelled run; a SIGTERM cancels the run: the terminal is restored
    and nothing is left behind."""
    store = start_claude_session(terminal, agent_policy[0], mock_api, tmp_path, keys)
    process = session_process(terminal)
    # Half-typed input that the agent's Ctrl-C clears: a lasting sign that the signal
    # reached it (its "press Ctrl-C again" hint fades within a second, and a busy
    # machine's screen polling can miss it).
    terminal.keys("-l", "typed-before-sigint")
    terminal.wait_for_text("typed-before-sigint")
    process.send_signal(signal.SIGINT)
    terminal.wait_for(lambda s: "typed-before-sigint" not in s, "the input cleared by Ctrl-C")
    terminal.keys("-l", "typed-after-sigint")  # and the session goes on
    screen = terminal.wait_for_text("typed-after-sigint")
    assert "EXIT=" not in screen and process.is_running(), screen
    process.send_signal(signal.SIGTERM)
    screen = terminal.wait_for_text("STTY: ")
    assert "EXIT=130" in screen, screen
    assert_restored(screen)
    run_id, results = finished_run(store)
    assert results["nodes"]["single"]["status"] == "cancelled"
    assert labelled_leftovers(docker_client, run_id) == []


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)
def test_closing_the_terminal_during_a_session_leaves_nothing_behind(
    agent_policy, mock_api, tmp_path, keys, docker_client, terminal
):
    """The window closed (SIGHUP): the run is cancelled and its container removed."""
    store = start_claude_session(terminal, agent_policy[0], mock_api, tmp_path, keys)
    process = session_process(terminal)
    (run,) = (store / "runs").iterdir()
    terminal.close()
    process.wait(timeout=SCREEN_TIMEOUT_S)
    assert labelled_leftovers(docker_client, run.name) == []
