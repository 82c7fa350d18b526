"""The app's own LLM behind the proxy: what offramp does not answer goes there unchanged.

:class:`Upstream` forwards a request — method, path under the upstream's base URL, query, body,
the headers that matter — and returns the upstream's status, headers and body as they came,
relaying a stream of server-sent events chunk by chunk. The text it carries passes the egress
policy first (offline mode refuses a host that is not loopback; the privacy guard masks message
contents where the policy applies it). The upstream's key comes from the environment
(``api_key_env``) and is never logged or echoed; the app's own ``Authorization`` header is
forwarded only if the pipeline says so.

It speaks HTTP/1.1 through httpcore's connection pool (kept-alive connections, no client layer
on top: this is the path every forwarded request takes), through the proxy the environment names
for the upstream's scheme (``HTTPS_PROXY``, ``NO_PROXY``) if any. The body comes back as the
upstream sent it; the upstream is not asked to compress (no ``Accept-Encoding``), and if it does,
its ``Content-Encoding`` comes back with the bytes.

Failures are answers in OpenAI's error shape: the upstream unreachable → 502
``upstream_unavailable``, too slow → 504 ``upstream_timeout``, a stream that breaks mid-way → an
``error`` event before the stream ends (never a silent cut).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore

from offramp.egress.policy import EgressPolicy, EgressRefused

# request headers passed on (besides the key): what the body is, what the app accepts
_PASSED = ("content-type", "accept", "openai-organization", "openai-project", "openai-beta")
# response headers passed back: what the body is, and the upstream's request id and rate-limit news
_RETURNED = ("content-type", "content-encoding", "x-request-id", "openai-processing-ms", "retry-after")
# what "could not be reached" looks like at the HTTP layer (timeouts are told apart: 504)
_UNREACHABLE = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
    OSError,
)


def _error(status: int, kind: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return status, {"content-type": "application/json"}, json.dumps(body).encode()


class Upstream:
    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        policy: EgressPolicy | None = None,
        forward_authorization: bool = False,
        env: Mapping[str, str] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        env = os.environ if env is None else env
        self._key = env.get(api_key_env or "", "") or None
        self.policy = policy or EgressPolicy()
        self.forward_authorization = forward_authorization
        self.timeout_s = timeout_s
        self._pool: httpcore.AsyncConnectionPool | None = None

    def url(self, path: str) -> str:
        """The upstream URL of an incoming path (``/v1/chat/completions`` → base + ``/chat/completions``)."""
        return self.base_url + (path[3:] if path.startswith("/v1/") or path == "/v1" else path)

    def _headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in incoming.items() if k.lower() in _PASSED}
        if self._key:
            out["authorization"] = f"Bearer {self._key}"
        elif self.forward_authorization and incoming.get("authorization"):
            out["authorization"] = incoming["authorization"]
        return out

    def _masked(self, url: str, body: bytes, policy: EgressPolicy) -> bytes:
        """``body`` as it may leave: message contents through the egress policy (unchanged bytes
        when nothing was masked); EgressRefused in offline mode for a remote host."""
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        messages = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(messages, list):
            policy.check(url, [])
            return body
        slots: list[tuple[dict[str, Any], str]] = []
        for m in messages:
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                slots.append((m, "content"))
            elif isinstance(m, dict) and isinstance(m.get("content"), list):
                slots += [(p, "text") for p in m["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
        texts = [str(holder[key]) for holder, key in slots]
        masked = policy.check(url, texts)
        if masked == texts:
            return body
        for (holder, key), new in zip(slots, masked):
            holder[key] = new
        return json.dumps(doc, ensure_ascii=False).encode("utf-8")

    def _get_pool(self) -> httpcore.AsyncConnectionPool:
        if self._pool is None:
            parts = urlsplit(self.base_url)
            host = parts.hostname or ""
            loopback = host == "localhost" or host == "::1" or host.startswith("127.")
            proxy = None if loopback else urllib.request.getproxies().get(parts.scheme)
            if proxy and not urllib.request.proxy_bypass(host):
                self._pool = httpcore.AsyncHTTPProxy(proxy_url=proxy, max_connections=100)
            else:
                self._pool = httpcore.AsyncConnectionPool(max_connections=100, keepalive_expiry=30.0)
        return self._pool

    async def send(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        stream: bool,
        policy: EgressPolicy | None = None,
    ) -> tuple[int, dict[str, str], bytes | AsyncIterator[bytes]]:
        """(status, headers, body or an iterator of its chunks) of the upstream's answer; ``policy``
        (default: the one given at construction) decides what the body's messages may carry."""
        url = self.url(path) + (f"?{query}" if query else "")
        try:
            payload = self._masked(url, body, policy or self.policy)
        except EgressRefused as e:
            return _error(403, "egress_refused", e.message)
        parts = urlsplit(url)
        sent = [(b"host", parts.netloc.encode("ascii", "replace"))]
        sent += [
            (k.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for k, v in self._headers(headers).items()
        ]
        if payload or method not in ("GET", "HEAD"):
            sent.append((b"content-length", str(len(payload)).encode()))
        t = self.timeout_s
        request = httpcore.Request(
            method.encode("ascii", "replace"),
            url.encode("utf-8"),
            headers=sent,
            content=payload,
            extensions={"timeout": {"connect": min(5.0, t), "read": t, "write": t, "pool": t}},
        )
        try:
            resp = await self._get_pool().handle_async_request(request)
            back = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
            back = {k: v for k, v in back.items() if k in _RETURNED}
            if stream:
                return resp.status, back, _relay(resp)
            try:
                content = b"".join([chunk async for chunk in resp.aiter_stream()])
            finally:
                await resp.aclose()
        except httpcore.TimeoutException:
            return _error(504, "upstream_timeout", f"the upstream LLM did not answer within {self.timeout_s:g} s")
        except _UNREACHABLE as e:
            return _error(502, "upstream_unavailable", f"the upstream LLM could not be reached ({type(e).__name__})")
        return resp.status, back, content

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


async def _relay(resp: httpcore.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_stream():
            yield chunk
    except (httpcore.TimeoutException, *_UNREACHABLE) as e:
        event = {
            "error": {
                "message": f"the upstream stream broke off ({type(e).__name__})",
                "type": "upstream_stream_broken",
            }
        }
        yield f"\n\ndata: {json.dumps(event)}\n\n".encode()
    finally:
        await resp.aclose()
