"""What the web console shows and does, in plain Python (its routes in :mod:`offramp.serving.console.routes`
only parse, call this and render).

It reads the service's live state (traffic, shadow agreement, drift, the review queue) and drives
the registry being served: promote, roll back, and "retrain now" — ``retrain`` on the capture
pool's rows added since the last one, in a background thread, behind the same gate as the CLI's.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
import time
from pathlib import Path

from offramp.capture.pool import Pool, TrainingRow, read_rows, training_rows
from offramp.chain.run import Chain
from offramp.data.io import Dataset
from offramp.errors import OfframpError
from offramp.monitoring.drift import PSI_WARN
from offramp.monitoring.shadow import wilson
from offramp.registry.versions import Registry
from offramp.serving.errors import ApiError
from offramp.serving.service import ClassificationService
from offramp.training.retrain import retrain
from offramp.types import JSONDict


class Console:
    def __init__(self, service: ClassificationService):
        self.service = service
        self._job: JSONDict = {"state": "idle"}
        self._progress: list[str] = []  # the running or last job's steps
        self._job_lock = threading.Lock()
        self._reports: dict[str, tuple[str, str]] = {}  # version -> (html, CSP style hash)
        self._report_lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    @property
    def registry(self) -> Registry | None:
        path = self.service.built.registry
        return Registry(path) if path is not None else None

    def overview(self) -> JSONDict:
        s = self.service
        info = s.info
        snap = s.telemetry.traffic()
        m = s.metrics
        shadow = {}
        for label in info.get("labels", []):
            n = m.get("offramp_shadow_compared_total", label=label)
            if n:
                k = m.get("offramp_shadow_agreed_total", label=label) or 0.0
                lo, hi = wilson(int(k), int(n))
                shadow[label] = {"compared": int(n), "agreed": int(k), "agreement": k / n, "ci95": [lo, hi]}
        drift = s.drift
        promoted = None
        reg = self.registry
        if reg is not None:
            history = [h for h in reg.doc().get("history", []) if h.get("version") == info.get("version")]
            promoted = history[-1]["time"] if history else None
        return {
            "version": info.get("version"),
            "model": info.get("model"),
            "created": info.get("created"),
            "promoted": promoted,
            "registry": reg is not None,
            "shadow_mode": info.get("shadow"),
            "labels": info.get("labels", []),
            "traffic": snap,
            "price_model": s.settings.llm_price_model if s.price is not None else None,
            "shadow": shadow,
            "drift": {
                "values": drift.values if drift is not None else None,
                "messages": drift.count if drift is not None else 0,
                "min_messages": drift.min_count if drift is not None else None,
                "psi_threshold": PSI_WARN,
            },
            "review": s.review.counts(),
            "proxy": self._proxy(),
            "stages": self._stages(),
        }

    def _stages(self) -> list[JSONDict] | None:
        """A chain: each stage's version, traffic, time per message, LLM share, shadow agreement
        (local_first) and, on Ray Serve, the messages each replica answered."""
        chain = self.service.built.chain
        if not isinstance(chain, Chain):
            return None
        m = self.service.metrics
        routes: dict[str, dict[str, int]] = {}
        for labels, value in m.series("offramp_stage_decisions_total"):
            by = routes.setdefault(labels.get("stage", ""), {})
            by[labels.get("route", "")] = by.get(labels.get("route", ""), 0) + int(value)
        compared: dict[str, list[int]] = {}
        for name in ("offramp_stage_shadow_compared_total", "offramp_stage_shadow_agreed_total"):
            for labels, value in m.series(name):
                pair = compared.setdefault(labels.get("stage", ""), [0, 0])
                pair[0 if name.endswith("compared_total") else 1] += int(value)
        replicas = chain.replica_counts()
        sampled = chain.shadow_counts()
        out: list[JSONDict] = []
        for st in chain.stages:
            messages = int(m.get("offramp_stage_messages_total", stage=st.name) or 0)
            seconds = float(m.get("offramp_stage_seconds_total", stage=st.name) or 0.0)
            by_route = routes.get(st.name, {})
            answered = sum(by_route.values())
            n, k = compared.get(st.name, [0, 0])
            shadow: JSONDict | None = None
            if st.name in sampled:
                lo, hi = wilson(k, n)
                shadow = {
                    "compared": n,
                    "agreed": k,
                    "agreement": k / n if n else None,
                    "ci95": [lo, hi],
                    **sampled[st.name],
                }
            out.append(
                {
                    "stage": st.name,
                    "kind": st.kind,
                    "version": st.version,
                    "messages": messages,
                    "ms_per_message": 1000 * seconds / messages if messages else None,
                    "routes": by_route,
                    "llm_share": by_route.get("llm", 0) / answered if answered and st.kind == "classify" else None,
                    "shadow": shadow,
                    "replicas": replicas.get(st.name),
                }
            )
        return out

    def _proxy(self) -> JSONDict | None:
        """Proxy mode: where the app's requests went, and how many of the task's came with a changed prompt."""
        s = self.service
        if s.upstream is None and not s.built.tasks:
            return None
        m = s.metrics
        reasons = ("no_task", "template_changed", "schema_changed", "unfillable_field", "unsure", "shadow", "not_chat")
        forwarded = {r: int(m.get("offramp_proxy_forwarded_total", reason=r) or 0) for r in reasons}
        local = int(m.get("offramp_proxy_requests_total", outcome="local") or 0)
        total = local + sum(forwarded.values())
        warning = s.prompt_warning
        return {
            "requests": total,
            "local": local,
            "forwarded": forwarded,
            "forwarded_share": sum(forwarded.values()) / total if total else None,
            "prompts": s.prompt_watch.to_dict(),
            "warning": {"time": warning[0], "message": warning[1]} if warning else None,
        }

    def review_items(self, label: str | None, source: str | None, since: float | None, limit: int = 50) -> JSONDict:
        s = self.service
        capture = s.built.capture
        labels = sorted(capture.labels) if capture is not None else list(s.info.get("labels", []))
        return {
            "items": s.review.items(label, source, since, limit),
            "counts": s.review.counts(),
            "labels": labels,
            "feedback": capture is not None and "feedback" in capture.sources,
        }

    def models(self) -> JSONDict:
        reg = self.registry
        if reg is None:
            return {"registry": None, "versions": [], "current": self.service.info.get("version"), "job": self.job()}
        doc = reg.doc()
        return {
            "registry": str(reg.path),
            "current": doc.get("current"),
            "versions": reg.versions(),
            "history": doc.get("history", [])[-20:],
            "can_rollback": len(doc.get("stack", [])) >= 2,
            "job": self.job(),
        }

    def job(self) -> JSONDict:
        with self._job_lock:
            return {**self._job, "progress": list(self._progress)}

    # ------------------------------------------------------------------ changing
    def _need_registry(self) -> Registry:
        reg = self.registry
        if reg is None:
            raise ApiError(
                409, "no_registry", "this service serves a model directory, not a registry: nothing to promote"
            )
        return reg

    def promote(self, version: str) -> JSONDict:
        reg = self._need_registry()
        if not re.fullmatch(r"v\d{4,}", version or ""):
            raise ApiError(422, "invalid_request", f"{version!r} is not a version name (like v0002)")
        known = {v["version"] for v in reg.versions()}
        if version not in known:
            raise ApiError(
                404, "unknown_version", f"the registry has no version {version} (versions: {', '.join(sorted(known))})"
            )
        try:
            before = reg.promote(version)
        except OfframpError as e:  # its files fail their manifest: the current version keeps serving
            raise ApiError(409, "version_damaged", e.message) from None
        info = self.service.reload_all()
        return {"status": "promoted", "version": version, "previous": before, "serving": info.get("version")}

    def rollback(self) -> JSONDict:
        reg = self._need_registry()
        left = reg.current
        try:
            back = reg.rollback()
        except OfframpError as e:
            raise ApiError(409, "nothing_to_roll_back", e.message) from None
        info = self.service.reload_all()
        return {"status": "rolled_back", "version": back, "previous": left, "serving": info.get("version")}

    def start_retrain(self) -> JSONDict:
        reg = self._need_registry()
        capture = self.service.built.capture
        if capture is None:
            raise ApiError(409, "no_pool", "retrain needs the pipeline's capture: pool (nothing has been captured)")
        with self._job_lock:
            if self._job.get("state") == "running":
                raise ApiError(409, "retrain_running", "a retrain is already running; wait for its result")
            capture.pool.flush()
            # the rows earlier retrains used are recorded in the pool itself, so a restart never re-adds them
            used = capture.pool.used_through(str(reg.path.resolve()))
            rows = [r for r in read_rows(capture.pool.path, ["llm", "feedback"]) if r["id"] > used]
            if not rows:
                raise ApiError(
                    409, "nothing_new", "the pool has no new LLM answers or corrections since the last retrain"
                )
            last_id = max(r["id"] for r in rows)
            data = training_rows(rows)
            self._job = {"state": "running", "started": time.time(), "rows": len(data)}
            self._progress = []
        threading.Thread(target=self._retrain, args=(reg, data, capture.pool, last_id), daemon=True).start()
        return self.job()

    def _retrain(self, reg: Registry, data: list[TrainingRow], pool: Pool, last_id: int) -> None:
        def say(msg: str) -> None:
            with self._job_lock:
                self._progress.append(msg)

        try:
            ds = Dataset([r["text"] for r in data], [r["label"] for r in data], "the capture pool", rows_read=len(data))
            result = retrain(reg, ds, on_progress=say)
            pool.mark_used(str(reg.path.resolve()), last_id)
            if result.promoted:
                self.service.reload_all()
            with self._job_lock:
                self._job.update(state="done", finished=time.time(), result=result.to_dict())
        except Exception as e:  # shown in the console; the current version keeps serving
            message = e.message if isinstance(e, OfframpError) else f"{type(e).__name__}: {e}"
            with self._job_lock:
                self._job.update(state="failed", finished=time.time(), error=message)

    # ------------------------------------------------------------------ the report
    def report(self) -> tuple[str, str]:
        """(HTML, the sha256 CSP source of its style block) of the live version's report on the gate set."""
        reg = self.registry
        if reg is None:
            raise ApiError(409, "no_registry", "the report is made from a registry's gate set; serve a registry")
        version = str(self.service.info.get("version"))
        with self._report_lock:
            if version in self._reports:
                return self._reports[version]
            gate = reg.gate_set()
            if gate is None:
                raise ApiError(409, "no_gate_set", "the registry has no frozen gate set to report on")
            from offramp.evaluation.report import build_report

            with tempfile.TemporaryDirectory() as tmp:
                ds = Dataset(gate[0], gate[1], "the registry's gate set", rows_read=len(gate[0]))
                html_path, _, _ = build_report(
                    self.service.built.cascade.model, ds, Path(tmp) / "report.html", title=f"offramp report: {version}"
                )
                html = html_path.read_text(encoding="utf-8")
            style = re.search(r"<style>(.*?)</style>", html, re.S)
            digest = hashlib.sha256((style.group(1) if style else "").encode()).digest()
            import base64

            entry = (html, f"'sha256-{base64.b64encode(digest).decode()}'")
            self._reports = {version: entry}
            return entry
