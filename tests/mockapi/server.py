"""A mock model API for end-to-end tests of the real agent CLIs (stdlib only).

Speaks just enough of Anthropic Messages (streaming) and OpenAI Responses (streaming) for
Claude Code and Codex to finish a turn, and records every request it receives so tests
can check what reached it (paths, API key headers, the last user message, and every user
message: the history a continued session sends). Run:
`python server.py [PORT] [--tls CERT_AND_KEY_PEM] [--host HOST]` (over TLS: the brokered
secrets' upstream, reached by the host-side egress proxy).

Behaviour is chosen by the prompt, so a test controls it from the workflow:
- `WRITE_FILE:<path>` makes the first answer a `Write` tool call creating <path>;
- `LIST_WORKSPACE` makes it a `Bash` tool call running `ls -la /workspace`;
- `SHA256:<path>` makes it a `Bash` tool call running `sha256sum <path>`;
- `TOOL_TURNS:<n>` makes the first n answers `Bash` tool calls (`echo step`), so the
  agent takes n + 1 turns;
- `CACHE:<read>:<written>` reports that many cache-read and cache-creation tokens;
- `OUTPUT_TOKENS:<n>` reports n output tokens per answer (else 13 for a tool call, 7);
- `HOLD:<seconds>` holds each answer open that long after its usage (message_delta),
  so a test can stop the agent between an answer's usage and its end;
- `LONG_ANSWER:<bytes>` answers with that much text, in 1,000-byte deltas;
- `MOCK_ERROR` answers HTTP 400 with an API error;
- otherwise the answer is the text in $MOCK_ANSWER (default "MOCK: all good").
Each answer has its own message id; GET /_requests lists what was served (the usage
each answer reported, and when its usage was sent) beside what was asked (and when).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count

ANSWER = os.environ.get("MOCK_ANSWER", "MOCK: all good")
REQUESTS: list[dict] = []
LOCK = threading.Lock()
MESSAGE_IDS = count()


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


LIST_COMMAND = "ls -la /workspace"


def tool_call(text: str) -> tuple[str, dict] | None:
    """The tool the prompt asks the first answer to call: (name, input), or None."""
    wants_write = re.search(r"WRITE_FILE:(\S+?)(?:[\s\"\\]|$)", text)
    if wants_write:
        return "Write", {
            "file_path": wants_write.group(1),
            "content": "written by the mock model\n",
        }
    wants_sum = re.search(r"SHA256:([\w./-]+)", text)
    if wants_sum:
        return "Bash", {"command": f"sha256sum {wants_sum.group(1)}", "description": "Checksum"}
    if "LIST_WORKSPACE" in text:
        return "Bash", {"command": LIST_COMMAND, "description": "List the workspace"}
    return None


def _number(pattern: str, text: str, default: int) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else default


def anthropic_answer(body: dict) -> tuple[list[bytes], list[bytes], dict]:
    """The answer's events up to its usage, the rest, and the usage it reports."""
    text = json.dumps(body)
    answered = text.count('"tool_result"')
    turns = _number(r"TOOL_TURNS:(\d+)", text, 0)
    tool = tool_call(text)
    if tool and answered:
        tool = None
    if turns and answered < turns:
        tool = ("Bash", {"command": "echo step", "description": "One more step"})
    number = next(MESSAGE_IDS)
    usage = {
        "input_tokens": 11,
        "output_tokens": 0,
        "cache_read_input_tokens": _number(r"CACHE:(\d+):\d+", text, 0),
        "cache_creation_input_tokens": _number(r"CACHE:\d+:(\d+)", text, 0),
    }
    output = _number(r"OUTPUT_TOKENS:(\d+)", text, 13 if tool else 7)
    start = {
        "type": "message_start",
        "message": {
            "id": f"msg_mock_{number}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-mock"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }
    events = [sse("message_start", start)]
    if tool:
        name, args = tool[0], json.dumps(tool[1])
        tool_id = "toolu_mock" if answered == 0 else f"toolu_mock_{answered}"
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": args}
    else:
        block = {"type": "text", "text": ""}
        size = _number(r"LONG_ANSWER:(\d+)", text, 0)
        answer = ("x" * 999 + "\n") * (size // 1000) if size else ANSWER
        delta = None
    events.append(
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
    )
    if delta is not None:
        events.append(
            sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    else:
        for at in range(0, len(answer), 1000):
            piece = {"type": "text_delta", "text": answer[at : at + 1000]}
            events.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": piece},
                )
            )
    events.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    stop = "tool_use" if tool else "end_turn"
    events.append(
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": output},
            },
        )
    )
    rest = [sse("message_stop", {"type": "message_stop"})]
    return events, rest, {**usage, "output_tokens": output}


def anthropic_stream(body: dict) -> bytes:
    head, rest, _ = anthropic_answer(body)
    return b"".join(head + rest)


def openai_stream(body: dict) -> bytes:
    item = {
        "id": "msg_mock",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
    }
    response = {
        "id": "resp_mock",
        "object": "response",
        "created_at": 0,
        "status": "in_progress",
        "model": body.get("model", "gpt-mock"),
        "output": [],
    }
    usage = {
        "input_tokens": 23,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 28,
    }
    done = {**response, "status": "completed", "output": [item], "usage": usage}
    return b"".join(
        [
            sse("response.created", {"type": "response.created", "response": response}),
            sse(
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "status": "in_progress", "content": []},
                },
            ),
            sse(
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ),
            sse("response.completed", {"type": "response.completed", "response": done}),
        ]
    )


def last_user_text(body: object) -> str | None:
    """The text of the request's last user message (Messages `messages`, Responses
    `input`), so tests can check what prompt reached the model."""
    if not isinstance(body, dict):
        return None
    items = body.get("messages") or body.get("input")
    if isinstance(items, str):
        return items
    users = [m for m in items or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return None
    content = users[-1].get("content")
    if isinstance(content, str):
        return content
    blocks = content if isinstance(content, list) else []
    return "\n".join(_block_text(b) for b in blocks if isinstance(b, dict))


def user_texts(body: object) -> list[str]:
    """The text of every user message the request carries (Messages `messages`, Responses
    `input`): the conversation so far, so tests can see a continued session's history."""
    if not isinstance(body, dict):
        return []
    items = body.get("messages") or body.get("input")
    if isinstance(items, str):
        return [items]
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        blocks = content if isinstance(content, list) else []
        texts = [_block_text(b) for b in blocks if isinstance(b, dict)]
        found.append(content if isinstance(content, str) else "\n".join(texts))
    return found


def tool_results(body: object) -> list[dict]:
    """The tool results the request carries back (what each tool printed, and whether it
    failed), so tests can see what a tool did in the sandbox."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return []
    found = []
    for message in body["messages"][-1:]:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                found.append({"is_error": block.get("is_error") is True,
                              "content": _block_text(block)})  # fmt: skip
    return found


def _block_text(block: dict) -> str:
    """A text block's text, or a tool result's (what the tool printed)."""
    if isinstance(block.get("text"), str):
        return block["text"]
    content = block.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return

    def _served(self, usage: dict) -> None:
        """What the last request of this connection was answered with, and when."""
        with LOCK:
            for request in reversed(REQUESTS):
                if request.get("thread") == threading.get_ident():
                    request["served"] = {**usage, "at": time.time()}
                    break

    def _record(self, body: bytes) -> dict:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
        with LOCK:
            REQUESTS.append(
                {
                    "method": self.command,
                    "received": time.time(),
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "model": parsed.get("model") if isinstance(parsed, dict) else None,
                    "thread": threading.get_ident(),
                    "prompt": last_user_text(parsed),
                    "history": user_texts(parsed),
                    "tool_results": tool_results(parsed),
                }
            )
        return parsed

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _anthropic(self, body: dict) -> None:
        text = json.dumps(body)
        if "MOCK_ERROR" in text:
            error = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "mock: this request is refused",
                },
            }
            self._send(400, json.dumps(error).encode(), "application/json")
            return
        head, rest, usage = anthropic_answer(body)
        first, second = b"".join(head), b"".join(rest)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(first) + len(second)))
        self.end_headers()
        self.wfile.write(first)
        self.wfile.flush()
        self._served(usage)
        hold = _number(r"HOLD:(\d+)", text, 0)
        if hold:
            time.sleep(hold)  # the usage is out; the answer is not finished
        with contextlib.suppress(OSError):  # the agent was stopped meanwhile
            self.wfile.write(second)

    def do_GET(self) -> None:
        if self.path == "/_requests":
            with LOCK:
                payload = json.dumps(REQUESTS).encode()
            self._send(200, payload, "application/json")
            return
        self._record(b"")
        self._send(200, b"{}", "application/json")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        parsed = self._record(body)
        if self.path.startswith("/v1/messages") and "count_tokens" not in self.path:
            self._anthropic(parsed)
        elif self.path.startswith("/v1/messages/count_tokens"):
            self._send(200, b'{"input_tokens": 11}', "application/json")
        elif self.path.startswith("/v1/responses"):
            self._send(200, openai_stream(parsed), "text/event-stream")
        else:
            self._send(404, b'{"error": "not mocked"}', "application/json")


def serve(argv: list[str]) -> None:
    """`server.py [PORT] [--tls CERT_AND_KEY_PEM] [--host HOST]`: PORT 0 picks a free
    one; the line printed once listening names the port taken."""
    port = int(argv[0]) if argv and not argv[0].startswith("--") else 8080
    host = argv[argv.index("--host") + 1] if "--host" in argv else "0.0.0.0"
    server = ThreadingHTTPServer((host, port), Handler)
    if "--tls" in argv:  # the broker's upstream: HTTPS with a test CA's certificate
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(argv[argv.index("--tls") + 1])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"mock model API on :{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1:])
