"""A real local OpenAI-compatible server playing the app's own LLM behind the proxy: it answers
every chat request with "UPSTREAM: " and the last user turn (streamed when asked), lists models,
answers embeddings, and fails on cue. Every request is kept (path, headers, body). Given ``answer``
(the request body -> the assistant message), it answers chat requests as that message instead, like
an LLM that reads the app's prompt; each such exchange is kept in ``log`` as the app would log it."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class UpstreamLLM:
    def __init__(self, answer=None):
        self.requests: list[dict] = []
        self.log: list[dict] = []  # {"request": body, "response": completion}, when answering
        self.fail: tuple[int, dict] | None = None  # (status, error body) for the next chat request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # headers and body go out in two writes: without this, Nagle's algorithm holds the
                # body until the client's delayed ACK (~40 ms a request)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status, payload, ctype="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", "req-upstream")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                outer.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": None}
                )
                if self.path.endswith("/models"):
                    self._send(
                        200,
                        {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "upstream"}]},
                    )
                else:
                    self._send(404, {"error": {"message": "no such path", "type": "not_found"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                outer.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
                if self.path.endswith("/embeddings"):
                    self._send(
                        200, {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}
                    )
                    return
                if outer.fail is not None:
                    status, err = outer.fail
                    outer.fail = None
                    self._send(status, err)
                    return
                text = "UPSTREAM: " + str(body["messages"][-1]["content"])
                head = {"id": "chatcmpl-up", "created": 1, "model": body.get("model", "m")}
                if answer is not None and body.get("stream"):
                    self._stream_message(head, answer(body))
                    return
                if answer is not None:
                    msg = answer(body)
                    finish = "tool_calls" if msg.get("tool_calls") else "stop"
                    done = {
                        **head,
                        "object": "chat.completion",
                        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
                    }
                    outer.log.append({"request": body, "response": done})
                    self._send(200, done)
                    return
                if not body.get("stream"):
                    self._send(
                        200,
                        {
                            **head,
                            "object": "chat.completion",
                            "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            ],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
                        },
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                parts = [text[i : i + 7] for i in range(0, len(text), 7)]
                events = [{"role": "assistant", "content": ""}] + [{"content": p} for p in parts]
                for delta in events:
                    chunk = {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                    time.sleep(0.01)
                done = {
                    **head,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                self._chunk(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.write(b"0\r\n\r\n")

            def _stream_message(self, head, msg):
                """``msg`` as a stream: its text, or its tool call's arguments, a few characters a chunk."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deltas = [{"role": "assistant", "content": None if msg.get("tool_calls") else ""}]
                if msg.get("tool_calls"):
                    call = msg["tool_calls"][0]
                    args = call["function"]["arguments"]
                    deltas.append(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                    deltas += [
                        {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 5]}}]}
                        for i in range(0, len(args), 5)
                    ]
                else:
                    deltas += [{"content": msg["content"][i : i + 5]} for i in range(0, len(msg["content"]), 5)]
                finish = "tool_calls" if msg.get("tool_calls") else "stop"
                for i, delta in enumerate(deltas + [{}]):
                    chunk = {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [
                            {"index": 0, "delta": delta, "finish_reason": finish if i == len(deltas) else None}
                        ],
                    }
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, data):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def chats(self):
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
