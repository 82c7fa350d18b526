"""The Ray engine: the same streamed predictions, computed by actors spread over a Ray cluster.

The driver (this process) reads the input and writes the output exactly as the local engine does,
so order, bad-row accounting and the write-then-rename guarantee are the same code; only the
prediction moves. The model directory travels once, through Ray's object store, as its files'
bytes; each actor writes them to a private directory on its node, checks them against the
manifest's hashes (and the driver's fingerprint) and loads the model once. Actors are spread over
the nodes, one CPU each. When an actor's process dies, the engine starts a replacement and sends
it the batches the dead one held; because the driver writes results in submission order, a batch
sent twice is written once.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from offramp.errors import UsageError
from offramp.estimators.predict import Predicted, predict_arrays
from offramp.modeldir.store import MANIFEST, model_version
from offramp.registry.records import load

INSTALL = "pip install 'offramp[ray]'"
CONNECT_TIMEOUT_S = 5.0
if TYPE_CHECKING:
    from ray import ObjectRef

MAX_RETRIES = 3  # times one batch is sent again after the actor holding it died


def _token_auth_for_clusters() -> None:
    """Ray 2.60 clusters turn token authentication on once a token exists (``~/.ray/auth_token``,
    or ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``), but a driver joining one sends the token only
    with ``RAY_AUTH_MODE=token``, read once when Ray is imported: set it when a token is there."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").exists()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _import_ray(joining: bool = False) -> ModuleType:
    if joining:
        _token_auth_for_clusters()
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed", INSTALL) from None
    return ray


def _cluster_file_address() -> str | None:
    """The address ``ray start --head`` on this machine wrote down (what ``auto`` means to Ray)."""
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    try:
        return Path(tempfile.gettempdir(), "ray", "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def check_address(address: str) -> None:
    """Refuse, quickly, an address where nothing answers (Ray itself would wait minutes)."""
    target = address
    if address == "auto":
        found = _cluster_file_address()
        if found is None:
            raise UsageError(
                "--address auto: no Ray cluster was started on this machine",
                "start one with 'ray start --head', give its address, or leave --address out to run Ray here",
            )
        target = found
    hostport = target.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address {address!r} is not a Ray address", "use 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise UsageError(
            f"no Ray cluster answers at {target} ({e.strerror or type(e).__name__})",
            "check the address ('ray status' on the head node prints it), or leave --address out to run Ray here",
        ) from None


def pack_model_dir(path: Path) -> dict[str, bytes]:
    """The model directory's files (those its manifest lists, and the manifest): what actors receive."""
    import json

    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    return {name: (path / name).read_bytes() for name in [*manifest["files"], MANIFEST]}


class Predictor:
    """A Ray actor's state: the model, unpacked on this node and verified, loaded once."""

    def __init__(self, files_ref: list[ObjectRef[dict[str, bytes]]], fingerprint: str):
        import ray

        files: dict[str, bytes] = ray.get(files_ref[0])  # wrapped: Ray passes the reference, not a copy
        self.node = ray.get_runtime_context().get_node_id()
        self.dir = Path(tempfile.mkdtemp(prefix="offramp-model-"))
        for name, data in files.items():
            target = (self.dir / name).resolve()
            if self.dir.resolve() not in target.parents:  # a manifest naming ../ is not a model
                raise ValueError(f"model file {name!r} points outside the model directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if model_version(self.dir) != fingerprint:
            raise ValueError("the model that arrived is not the one the driver sent")
        self.model = load(self.dir)  # checks every file against the manifest's hashes

    def predict(self, texts: list[str], top: int) -> tuple[object, ...]:
        """The batch's predictions (see predict_arrays), and the node that made them."""
        return (*predict_arrays(self.model, texts, top), self.node)

    def where(self) -> tuple[str, int]:
        return self.node, os.getpid()

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "dir", ""), ignore_errors=True)


def connect(address: str | None, cpus: int | None) -> bool:
    """Join the cluster at ``address`` (or start Ray in this process); True if this call did."""
    ray = _import_ray(joining=address is not None)
    if ray.is_initialized():
        return False
    if address is not None:
        check_address(address)
    quiet = {"logging_level": "ERROR", "log_to_driver": False}
    try:
        if address is None:
            ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UsageError(
            f"could not join the Ray cluster at {address}: {str(e).splitlines()[0]}",
            "if the cluster uses token authentication, give this process its token "
            "(RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, or the cluster's ~/.ray/auth_token)",
        ) from None
    return True


def cluster_cpus(ray: ModuleType, workers: int | None) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = workers or max(1, cpus)
    if n > cpus:
        raise UsageError(f"--workers {n} is more than the Ray cluster's {cpus} CPUs", f"use --workers {cpus}")
    return n


def release(ray: ModuleType, actors: list[object], started_here: bool) -> None:
    """Stop ``actors``, and the Ray this process started (a cluster it joined keeps running)."""
    for a in actors:
        try:
            ray.kill(a)
        except Exception:  # already gone
            pass
    if started_here:
        ray.shutdown()


@dataclass
class _Batch:
    """A batch sent to an actor: what is needed to send it again if the actor's process dies."""

    ref: Any  # Ray's object reference to the result
    slot: int
    actor: Any
    texts: list[str]
    top: int
    tries: int = 0


class RayEngine:
    """``submit``/``get``/``close`` over a pool of :class:`Predictor` actors (the stream's engine seam)."""

    def __init__(self, model_path: Path, workers: int | None, address: str | None):
        ray = _import_ray(joining=address is not None)
        self.ray = ray
        self.started_here = connect(address, workers)
        self.actors: list[Any] = []  # Ray actor handles (Ray ships no types)
        self._next = 0
        self.rows_by_node: dict[str, int] = {}
        self.replaced = 0  # actors started again after their process died
        try:
            self.n = cluster_cpus(ray, workers)
            self._files = ray.put(pack_model_dir(model_path))  # once, whatever the number of actors
            self._fingerprint = model_version(model_path)
            self._actor_cls = ray.remote(num_cpus=1)(Predictor)
            self.actors = [self._start() for _ in range(self.n)]
            ray.get([a.where.remote() for a in self.actors], timeout=300)
        except UsageError:
            self.close()
            raise
        except Exception as e:  # an actor that cannot load the model fails here, not mid-stream
            self.close()
            raise UsageError(f"the Ray workers could not load the model: {str(e).splitlines()[-1]}") from None

    def _start(self) -> Any:
        return self._actor_cls.options(scheduling_strategy="SPREAD").remote([self._files], self._fingerprint)

    def submit(self, texts: list[str], top: int) -> object:
        slot = self._next % self.n
        self._next += 1
        actor = self.actors[slot]
        return _Batch(actor.predict.remote(texts, top), slot, actor, texts, top)

    def get(self, handle: object) -> Predicted:
        from ray.exceptions import RayActorError

        batch = cast(_Batch, handle)
        while True:
            try:
                *result, node = self.ray.get(batch.ref)
                break
            except RayActorError:
                if batch.tries >= MAX_RETRIES:
                    raise
                if self.actors[batch.slot] is batch.actor:  # the first of its batches to notice: a replacement
                    self.actors[batch.slot] = self._start()
                    self.replaced += 1
                batch.actor = self.actors[batch.slot]
                batch.ref = batch.actor.predict.remote(batch.texts, batch.top)
                batch.tries += 1
        self.rows_by_node[node] = self.rows_by_node.get(node, 0) + len(result[0])
        return cast(Predicted, tuple(result))

    def close(self) -> None:
        release(self.ray, getattr(self, "actors", []), self.started_here)
