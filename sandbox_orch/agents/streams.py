"""Agents' event streams read as they arrive: Claude Code `stream-json` and Codex
`exec --json`, one JSON object per line.

A stream is untrusted (the node prints it): lines are bounded (a longer one is dropped
and counted), JSON depth is bounded, a field of the wrong type is never counted and
fails the node at the end with its name (as the parsers always did). Each message's
usage is counted once, by its id: Claude Code repeats a message's usage on every event
of that message, and its counts only grow.

Reading is cheap where it matters: the bulk of a Claude stream is partial-message
deltas and tool results, which carry no usage; they are recognised by their first bytes
and never decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..bounded.nesting import load_json
from ..text import one_line
from .pricing import Table
from .pricing import table as pricing_table
from .usage import Tokens, Usage

MAX_LINE = 4 * 1024 * 1024  # a longer line is dropped (counted), never buffered
ACTIVITY_CHARS = 160


class StreamProblem(Exception):
    """A field of the wrong type: the node fails with this reason when it ends."""


class Lines:
    """Complete lines from chunks; a line past MAX_LINE is dropped as it arrives."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._dropping = False
        self.dropped = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._keep(data[start:])
                return
            if self._dropping:
                self._dropping = False
            elif self._partial:
                self._partial += data[start:end]
                line, self._partial = bytes(self._partial), bytearray()
                yield line
            else:
                yield data[start:end]
            start = end + 1

    def _keep(self, rest: bytes) -> None:
        if self._dropping or not rest:
            return
        if len(self._partial) + len(rest) > MAX_LINE:
            self._partial, self._dropping = bytearray(), True
            self.dropped += 1
            return
        self._partial += rest

    def rest(self) -> bytes:
        """What came after the last newline (a stream cut mid-line)."""
        return b"" if self._dropping else bytes(self._partial)


class AgentStream:
    """What one attempt's stream has said so far."""

    format = ""
    # Lines that begin so carry nothing this reader counts.
    skip_prefixes: tuple[bytes, ...] = ()

    def __init__(self, prices: Table | None = None) -> None:
        self.prices = prices or pricing_table()
        self.lines = Lines()
        self.usage = Usage()
        self.activity: str | None = None  # the latest text or tool call, one line
        self.answer: str | None = None  # the final answer, once there is one
        self.error: str | None = None  # the agent's own error message
        self.said: str | None = None  # its latest non-fatal error (a Codex error item)
        self.is_error = False
        self.ended = False  # the agent's final event was seen
        self.problem: str | None = None
        self.events = 0

    def feed(self, data: bytes) -> bool:
        """Read a chunk; True if anything shown (usage, activity, answer) changed."""
        changed = False
        for line in self.lines.feed(data):
            changed |= self._line(line)
        return changed

    def finish(self) -> bool:
        """The stream ended: a last line without a newline still counts."""
        rest = self.lines.rest()
        self.lines = Lines()
        return self._line(rest) if rest else False

    def _line(self, line: bytes) -> bool:
        if not line.startswith(b"{") or line.startswith(self.skip_prefixes):
            return False
        try:
            event = load_json(line)
        except ValueError:  # not JSON, or nested too deep: not an event
            return False
        if not isinstance(event, dict):
            return False
        self.events += 1
        try:
            return self.event(event)
        except StreamProblem as problem:
            self.problem = self.problem or str(problem)
            return False

    def event(self, event: dict[str, Any]) -> bool:
        raise NotImplementedError

    def usage_json(self) -> dict[str, Any]:
        return self.usage.as_json(self.prices)

    def outputs(self) -> dict[str, Any]:
        """The contract's agent outputs, or StreamProblem when the stream cannot give them."""
        raise NotImplementedError

    def _act(self, text: str) -> bool:
        activity = one_line(text)[:ACTIVITY_CHARS]
        if activity == self.activity:
            return False
        self.activity = activity
        return True


class ClaudeStream(AgentStream):
    """Claude Code `--output-format stream-json --verbose` (with or without
    `--include-partial-messages`)."""

    format = "claude"
    # Partial-message deltas (text, tool input) and tool results: most of the bytes.
    skip_prefixes = (
        b'{"type":"stream_event","event":{"type":"content_block',
        b'{"type":"stream_event","event":{"type":"message_stop"',
        b'{"type":"user",',
    )

    def __init__(self, prices: Table | None = None) -> None:
        super().__init__(prices)
        self._messages: dict[str, Tokens] = {}
        self._model_of: dict[str, str] = {}
        self._tools: set[str] = set()
        self._model = ""  # the session's, from its init event
        self._result: dict[str, Any] | None = None

    def event(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "stream_event":
            return self._partial(event)
        if kind == "assistant":
            return self._assistant(_mapping(event.get("message"), "message"))
        if kind == "result":
            return self._end(event)
        if kind == "system" and event.get("subtype") == "init":
            self._model = _text(event.get("model", ""), "init model")
        return False

    def _partial(self, event: dict[str, Any]) -> bool:
        inner = _mapping(event.get("event"), "stream_event event")
        if inner.get("type") == "message_start":
            message = _mapping(inner.get("message"), "message_start message")
            return self._count(message.get("id"), message.get("model"), message.get("usage"))
        if inner.get("type") == "message_delta":
            return self._count(event.get("api_message_id"), None, inner.get("usage"))
        return False

    def _assistant(self, message: dict[str, Any]) -> bool:
        changed = self._count(message.get("id"), message.get("model"), message.get("usage"))
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                changed |= self._tool(block)
            elif block.get("type") == "text" and isinstance(block.get("text"), str):
                changed |= self._act(block["text"])
        return changed

    def _tool(self, block: dict[str, Any]) -> bool:
        name = _text(block.get("name", "?"), "tool_use name")[:100]
        key = block.get("id")
        if isinstance(key, str):
            if key in self._tools:
                return False
            self._tools.add(key)
        self.usage.tool_calls[name] += 1
        return self._act(f"{name}: {_tool_summary(block.get('input'))}") or True

    def _count(self, message_id: Any, model: Any, usage: Any) -> bool:
        if usage is None:
            return False
        if not isinstance(message_id, str):
            message_id = f"#{len(self._messages)}"  # no id: counted as a message of its own
        usage = _mapping(usage, "usage")
        seen = Tokens(
            _count(usage.get("input_tokens"), "usage.input_tokens"),
            _count(usage.get("output_tokens"), "usage.output_tokens"),
            _count(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens"),
            _count(usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens"),
        )
        if isinstance(model, str) and model:
            self._model_of.setdefault(message_id, model[:200])
        known = self._messages.setdefault(message_id, Tokens())
        before = Tokens(known.input, known.output, known.cache_read, known.cache_write)
        known.merge_max(seen)
        if self._result is not None:  # the session's own totals are final
            return False
        # What this message added, to its model's running total.
        model = self._model_of.get(message_id, self._model)
        running = self.usage.by_model.setdefault(model, Tokens())
        running.add(Tokens(known.input - before.input, known.output - before.output,
                           known.cache_read - before.cache_read,
                           known.cache_write - before.cache_write))  # fmt: skip
        self.usage.turns = len(self._messages)
        return known.total != before.total

    def _end(self, result: dict[str, Any]) -> bool:
        """The result event: the session's own totals, where it gives them, win (its
        `usage` block is zero on some error results while `modelUsage` holds the figures)."""
        self._result, self.ended = result, True
        self.is_error = bool(result.get("is_error", False))
        answer = _text(result.get("result") or "", "result")  # null on some error results
        self.answer = answer
        if self.is_error:
            self.error = _agent_error(result, answer)
        turns = _count(result.get("num_turns"), "num_turns")
        self.usage.turns = turns or self.usage.turns
        by_model = _model_usage(result.get("modelUsage"))
        if not any(t.total for t in by_model.values()):
            tokens = _tokens(_mapping(result.get("usage"), "usage"))
            if tokens.total:
                model = self._model or next(iter(self.usage.by_model), "")
                by_model = {model: tokens}
        if any(t.total for t in by_model.values()):
            self.usage.by_model = by_model
        reported = result.get("total_cost_usd")
        if reported is not None:
            self.usage.reported_cost = _cost(reported)
        return True

    def outputs(self) -> dict[str, Any]:
        if self.problem:
            raise StreamProblem(self.problem)
        if self._result is None:
            raise StreamProblem("no result event in the stream")
        turns = self.usage.turns
        return {"result": self.answer or "", "is_error": self.is_error, "num_turns": turns}


class CodexStream(AgentStream):
    """Codex `exec --json`: items (messages, commands, file changes, tool calls) and a
    `turn.completed` with the turn's usage. Codex names no model in its stream: the
    node's `agent.model`, else the CLI's default (pricing.json), prices it."""

    format = "codex"
    _TOOL_ITEMS = {
        "command_execution": "shell",
        "file_change": "apply_patch",
        "web_search": "web_search",
    }

    def __init__(self, prices: Table | None = None, model: str | None = None) -> None:
        super().__init__(prices)
        self.model = model or self.prices.defaults.get("codex", "")
        self._items: set[str] = set()
        self._turns = 0
        self._messages: list[str] = []

    def event(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind in ("item.started", "item.updated", "item.completed"):
            return self._item(_mapping(event.get("item"), "item"), kind == "item.completed")
        if kind in ("turn.completed", "turn.failed"):
            return self._turn(event, failed=kind == "turn.failed")
        if kind == "error":  # fatal, or a retry ("Reconnecting... 1/5"): a turn may follow
            self.is_error = True
            self.error = _message(event.get("message")) or "error"
            return self._act(self.error) or True
        return False

    def _item(self, item: dict[str, Any], completed: bool) -> bool:
        kind = item.get("type")
        key = item.get("id")
        changed = False
        tool = self._TOOL_ITEMS.get(kind) if isinstance(kind, str) else None
        if kind == "mcp_tool_call":
            server, name = item.get("server", "?"), item.get("tool", "?")
            tool = f"mcp:{_text(server, 'server')}.{_text(name, 'tool')}"
        if tool and isinstance(key, str) and key not in self._items:
            self._items.add(key)
            self.usage.tool_calls[tool[:100]] += 1
            changed = True
        if tool:
            detail = item.get("command") if kind == "command_execution" else None
            changed |= self._act(f"{tool}: {detail}" if isinstance(detail, str) else tool)
        if kind == "error" and completed:  # an error item: the turn goes on
            self.said = _message(item.get("message")) or self.said
            changed |= self._act(self.said or "error")
        if kind == "agent_message" and completed:
            text = _text(item.get("text", ""), "message")
            self._messages.append(text)
            self.answer = text
            changed |= self._act(text) or True
        return changed

    def _turn(self, event: dict[str, Any], failed: bool) -> bool:
        self._turns += 1
        self.usage.turns = self._turns
        usage = _mapping(event.get("usage"), "usage")
        cached = _count(usage.get("cached_input_tokens"), "usage.cached_input_tokens")
        seen = Tokens(
            # OpenAI's input_tokens include the cached ones; counted once, as cache reads.
            max(0, _count(usage.get("input_tokens"), "usage.input_tokens") - cached),
            _count(usage.get("output_tokens"), "usage.output_tokens"),
            cached,
            _count(usage.get("cache_write_input_tokens"), "usage.cache_write_input_tokens"),
        )
        self.usage.by_model.setdefault(self.model, Tokens()).add(seen)
        if failed:
            self.is_error = True
            error = _mapping(event.get("error"), "error")
            self.error = _message(error.get("message")) or self.error or self.said
            self.error = self.error or "the turn failed"
        else:  # the turn completed: the errors before it were retried, not fatal
            self.is_error, self.error = False, None
        self.ended = True
        return True

    def outputs(self) -> dict[str, Any]:
        if self.problem:
            raise StreamProblem(self.problem)
        if not self._turns and not self.is_error:
            raise StreamProblem("no turn.completed event in the stream")
        return {
            "result": self._messages[-1] if self._messages else "",
            "is_error": self.is_error,
            "num_turns": self._turns,
        }


def reader_for(fmt: str, model: str | None = None) -> AgentStream | None:
    """The live reader for a parse format, if it is an agent's."""
    if fmt == "claude":
        return ClaudeStream()
    if fmt == "codex":
        return CodexStream(model=model)
    return None


# --- untrusted fields: a wrong type fails the node, naming the field -------------------------


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StreamProblem(f"{what} is not an object")
    return value


def _count(value: Any, what: str) -> int:
    if value is None or value is False:
        return 0
    if isinstance(value, int) and 0 <= value < 2**63:
        return int(value)
    raise StreamProblem(f"{what} is not a count")


def _cost(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e9:
        return float(value)
    raise StreamProblem("total_cost_usd is not a number")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StreamProblem(f"{what} is not text")
    return value


def _message(value: Any) -> str | None:
    return one_line(value)[:500] if isinstance(value, str) and value.strip() else None


def _tokens(usage: dict[str, Any]) -> Tokens:
    return Tokens(
        _count(usage.get("input_tokens"), "usage.input_tokens"),
        _count(usage.get("output_tokens"), "usage.output_tokens"),
        _count(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens"),
        _count(usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens"),
    )


def _model_usage(value: Any) -> dict[str, Tokens]:
    """Claude Code's `modelUsage`: {model: {inputTokens, outputTokens, ...}}."""
    found: dict[str, Tokens] = {}
    for model, figures in _mapping(value, "modelUsage").items():
        figures = _mapping(figures, "modelUsage entry")
        found[model[:200]] = Tokens(
            _count(figures.get("inputTokens"), "modelUsage.inputTokens"),
            _count(figures.get("outputTokens"), "modelUsage.outputTokens"),
            _count(figures.get("cacheReadInputTokens"), "modelUsage.cacheReadInputTokens"),
            _count(figures.get("cacheCreationInputTokens"), "modelUsage.cacheCreationInputTokens"),
        )
    return found


def _agent_error(result: dict[str, Any], answer: str) -> str:
    """The agent's own words for why it stopped: its message, else its subtype."""
    errors = result.get("errors")
    if isinstance(errors, list):
        texts = [e for e in errors if isinstance(e, str) and e.strip()]
        if texts:
            return one_line("; ".join(texts))[:500]
    if answer.strip():
        return one_line(answer)[:500]
    subtype = result.get("subtype")
    return one_line(subtype)[:200] if isinstance(subtype, str) and subtype else "error result"


def _tool_summary(value: Any) -> str:
    """A tool call's input in a few words: its command, path or pattern."""
    if not isinstance(value, dict):
        return ""
    for key in ("command", "file_path", "path", "pattern", "url", "description", "prompt"):
        if isinstance(value.get(key), str):
            return value[key]
    return ""
