"""A mock model API for end-to-end tests of the real agent CLIs (stdlib only).

Speaks just enough of Anthropic Messages (streaming) and OpenAI Responses (streaming) for
Claude Code and Codex to finish a turn, and records every request it receives so tests
can check what reached it (paths, API key headers, the last user message). Run:
`python server.py [PORT]`.

Behaviour is chosen by the prompt, so a test controls it from the workflow:
- `WRITE_FILE:<path>` makes the first answer a `Write` tool call creating <path>;
- `LIST_WORKSPACE` makes it a `Bash` tool call running `ls -la /workspace`;
- otherwise the answer is the text in $MOCK_ANSWER (default "MOCK: all good").
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = os.environ.get("MOCK_ANSWER", "MOCK: all good")
REQUESTS: list[dict] = []
LOCK = threading.Lock()


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
    if "LIST_WORKSPACE" in text:
        return "Bash", {"command": LIST_COMMAND, "description": "List the workspace"}
    return None


def anthropic_stream(body: dict) -> bytes:
    text = json.dumps(body)
    tool = tool_call(text)
    answered_tool = '"tool_result"' in text
    model = body.get("model", "claude-mock")
    usage = {"input_tokens": 11, "output_tokens": 0}
    events = [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            },
        )
    ]
    if tool and not answered_tool:
        name, args = tool[0], json.dumps(tool[1])
        events += [
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_mock",
                        "name": name,
                        "input": {},
                    },
                },
            ),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": args},
                },
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                    "usage": {"output_tokens": 13},
                },
            ),
        ]
    else:
        events += [
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": ANSWER},
                },
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 7},
                },
            ),
        ]
    events.append(sse("message_stop", {"type": "message_stop"}))
    return b"".join(events)


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
    return "\n".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return

    def _record(self, body: bytes) -> dict:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
        with LOCK:
            REQUESTS.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "model": parsed.get("model") if isinstance(parsed, dict) else None,
                    "prompt": last_user_text(parsed),
                }
            )
        return parsed

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

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
            self._send(200, anthropic_stream(parsed), "text/event-stream")
        elif self.path.startswith("/v1/messages/count_tokens"):
            self._send(200, b'{"input_tokens": 11}', "application/json")
        elif self.path.startswith("/v1/responses"):
            self._send(200, openai_stream(parsed), "text/event-stream")
        else:
            self._send(404, b'{"error": "not mocked"}', "application/json")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    print(f"mock model API on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
