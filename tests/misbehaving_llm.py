"""A real local HTTP server that plays an OpenAI-compatible endpoint and misbehaves on cue."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content: str, prompt_tokens: int = 20, completion_tokens: int = 2) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class ScriptedLLM:
    """Answers each request with the next scripted step: (status, headers, body, delay_s).

    When the script runs out it repeats ``default``. Every request body is kept in ``requests``.
    """

    def __init__(self, script=None, default=(200, {}, completion("OTHER"), 0.0)):
        self.script = list(script or [])
        self.default = default
        self.requests: list[dict] = []
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                outer.requests.append(
                    {"path": self.path, "body": json.loads(body or b"{}"), "auth": self.headers.get("Authorization")}
                )
                outer.times.append(time.monotonic())
                status, headers, payload, delay = outer.script.pop(0) if outer.script else outer.default
                if callable(payload):
                    payload = payload(outer.requests[-1]["body"])
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class GoldLLM(ScriptedLLM):
    """An OpenAI-compatible server that answers each message with its gold label (looked up by the
    text it receives, masked or not), or ``unknown`` for texts it was not given."""

    def __init__(self, gold: dict[str, str], unknown: str = "OTHER"):
        self.gold = dict(gold)

        def answer(body):
            text = body["messages"][-1]["content"]
            return completion(self.gold.get(text, unknown))

        super().__init__(default=(200, {}, answer, 0.0))
