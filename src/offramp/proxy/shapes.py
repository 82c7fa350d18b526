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
