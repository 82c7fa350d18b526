"""Teacher labelling with the requests sent from a Ray cluster's workers.

Only the sending moves: the labeller in this process still decides what is sent, so the answer
cache (SQLite, here), the rate limit and the dollar budget stay one for the whole job, and a
rerun sends nothing that was answered before. Each worker is an actor holding an ordinary
:class:`~offramp.llm.client.ChatClient` (retries, timeouts, the egress policy) and takes
several requests at once. The API key is read from each worker's own environment, never shipped.
"""

from __future__ import annotations

import os
from typing import Any

from offramp.egress.policy import EgressPolicy
from offramp.errors import OfframpError
from offramp.llm.client import ChatClient, ChatResult, LLMConfig
from offramp.scale.ray_engine import MAX_RETRIES, _import_ray, cluster_cpus, connect, release


class Sender:
    """A Ray actor's state: one chat client on its node."""

    def __init__(self, config: LLMConfig, policy: EgressPolicy):
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.client = ChatClient(config, policy=policy)

    def chat(self, messages: list[dict], params: dict) -> tuple[ChatResult, str]:
        return self.client.chat(messages, **params), self.node

    def where(self) -> tuple[str, int]:
        return self.node, os.getpid()


class RayChatClient:
    """What a :class:`~offramp.llm.label.Labeller` sends through: ``chat`` as ChatClient's, on Ray."""

    def __init__(self, client: ChatClient, workers: int | None = None, address: str | None = None):
        ray = _import_ray(joining=address is not None)
        self.ray = ray
        self.config, self.url, self.policy = client.config, client.url, client.policy
        client.close()
        self.started_here = connect(address, workers)
        try:
            self.n = cluster_cpus(ray, workers)
            per_actor = max(1, -(-client.config.max_concurrency // self.n))  # the labeller's threads, shared out
            self._cls = ray.remote(num_cpus=1, max_concurrency=per_actor)(Sender)
            self.actors = [self._start() for _ in range(self.n)]
            ray.get([a.where.remote() for a in self.actors], timeout=120)
        except BaseException:
            self.close()
            raise
        self._next = 0
        self.requests_by_node: dict[str, int] = {}
        self.replaced = 0

    def _start(self) -> Any:
        return self._cls.options(scheduling_strategy="SPREAD").remote(self.config, self.policy)

    def chat(self, messages: list[dict], **params: Any) -> ChatResult:
        from ray.exceptions import RayActorError, RayTaskError

        slot = self._next % self.n
        self._next += 1
        for tries in range(MAX_RETRIES + 1):
            actor = self.actors[slot]
            try:
                result, node = self.ray.get(actor.chat.remote(messages, params))
                break
            except RayTaskError as e:  # the client's own error (unreachable, rejected...): as without Ray
                cause = getattr(e, "cause", None)
                if isinstance(cause, OfframpError):
                    raise cause from None
                raise
            except RayActorError:
                if tries >= MAX_RETRIES:
                    raise
                if self.actors[slot] is actor:  # its process died: a replacement takes its requests
                    self.actors[slot] = self._start()
                    self.replaced += 1
        self.requests_by_node[node] = self.requests_by_node.get(node, 0) + 1
        return result

    def close(self) -> None:
        release(self.ray, getattr(self, "actors", []), self.started_here)
