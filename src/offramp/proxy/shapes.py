"""A label as the answer an app's parser expects: plain text, a JSON field, or a tool call; as
one chat completion or as a stream of chunks.

``n`` above 1 gives n identical choices; ``logprobs: true`` gives the answer as one token with
log(confidence); sampling parameters (temperature, top_p, seed, ...) mean nothing to a
classifier and are ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any

from offramp.llm.prompts import parse_label
from offramp.proxy.task import ProxyTask


def message(task: ProxyTask, label: str, call_id: str) -> tuple[dict[str, Any], str]:
    """(the assistant message, its finish reason) carrying ``label`` in ``task``'s shape."""
    if task.shape == "json_field":
        return {
            "role": "assistant",
            "content": json.dumps({task.key: label, **task.fill}, ensure_ascii=False),
        }, "stop"
    if task.shape == "tool":
        call = {
            "id": f"call_{call_id}",
            "type": "function",
            "function": {
                "name": task.tool,
                "arguments": json.dumps({task.key: label, **task.fill}, ensure_ascii=False),
            },
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    return {"role": "assistant", "content": label}, "stop"


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 128 else 1


def _logprobs(text: str, confidence: float) -> dict[str, Any]:
    lp = math.log(max(confidence, 1e-12))
    return {"content": [{"token": text, "logprob": lp, "bytes": list(text.encode()), "top_logprobs": []}]}


def completion(
    task: ProxyTask, label: str, confidence: float, body: dict[str, Any], head: dict[str, Any], usage: dict[str, int]
) -> dict[str, Any]:
    """A ``chat.completion`` object answering ``body`` with ``label``."""
    msg, finish = message(task, label, str(head["id"]).removeprefix("chatcmpl-"))
    n = _choices(body)
    choice: dict[str, Any] = {"message": msg, "finish_reason": finish, "logprobs": None}
    if body.get("logprobs") is True:
        choice["logprobs"] = _logprobs(msg.get("content") or msg["tool_calls"][0]["function"]["arguments"], confidence)
    return {
        **head,
        "object": "chat.completion",
        "choices": [{"index": i, **choice} for i in range(n)],
        "usage": usage,
    }


def chunks(
    task: ProxyTask, label: str, confidence: float, body: dict[str, Any], head: dict[str, Any], usage: dict[str, int]
) -> list[dict[str, Any]]:
    """The same answer as ``chat.completion.chunk`` events (role, content or tool call, finish)."""
    msg, finish = message(task, label, str(head["id"]).removeprefix("chatcmpl-"))
    n = _choices(body)
    base = {**head, "object": "chat.completion.chunk"}
    if "tool_calls" in msg:
        call = msg["tool_calls"][0]
        delta: dict[str, Any] = {"tool_calls": [{"index": 0, **call}]}
    else:
        delta = {"content": msg["content"]}
    events = [
        {
            **base,
            "choices": [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": None if "tool_calls" in msg else ""},
                    "finish_reason": None,
                }
                for i in range(n)
            ],
        },
        {**base, "choices": [{"index": i, "delta": delta, "finish_reason": None} for i in range(n)]},
        {**base, "choices": [{"index": i, "delta": {}, "finish_reason": finish} for i in range(n)]},
    ]
    if body.get("logprobs") is True:
        text = msg.get("content") or msg["tool_calls"][0]["function"]["arguments"]
        for c in events[1]["choices"]:
            c["logprobs"] = _logprobs(text, confidence)
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    return events


def label_of(task: ProxyTask, message: dict[str, Any]) -> str | None:
    """The label an LLM's answer (an assistant message) gives in ``task``'s shape, or None when it
    gives none the task knows (a refusal, free text, a field or argument missing)."""
    value: object = None
    if task.shape == "tool":
        for call in message.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and fn.get("name") == task.tool:
                value = _field(fn.get("arguments"), task.key)
                break
    elif task.shape == "json_field":
        value = _field(message.get("content"), task.key)
    else:
        value = message.get("content")
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
        return None
    text = str(value).strip()
    if not task.labels:
        return text
    if task.shape == "label":
        return parse_label(text, task.labels)
    return text if text in task.labels else None


def _field(doc: object, key: str | None) -> object:
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            return None
    return doc.get(key) if isinstance(doc, dict) and key is not None else None


class StreamTap:
    """Reads an answer out of a relayed stream of ``chat.completion.chunk`` events as the bytes go
    by (first choice only): its text and its tool calls, whole once the stream has ended."""

    def __init__(self) -> None:
        self._buf = b""
        self._content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.done = False

    def feed(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            for choice in event.get("choices") or [] if isinstance(event, dict) else []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    self._content.append(delta["content"])
                for call in delta.get("tool_calls") or []:
                    if not isinstance(call, dict):
                        continue
                    slot = self._calls.setdefault(int(call.get("index", 0)), {"name": "", "arguments": ""})
                    fn = call.get("function") or {}
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        """The assistant message the stream carried."""
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self._content) or None}
        if self._calls:
            msg["tool_calls"] = [{"type": "function", "function": dict(self._calls[i])} for i in sorted(self._calls)]
        return msg
