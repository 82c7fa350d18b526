"""Has the app changed its prompt? The share of the task's requests that stopped matching it.

A request that asks the task (it matched) or nearly does (its template, schema or tool differs:
``template_changed``, ``schema_changed``, ``unfillable_field``) counts; other prompts (``no_task``)
do not, as their volume says nothing about the task. The share is taken over windows of
``window`` such requests; when a window's share rises ``rise`` above the usual one (the mean of the
windows before, weighted to the recent) the watch says so once, in words that name the fix.
O(1) per request, no lock: it is called from the event loop only.
"""

from __future__ import annotations

CHANGED = frozenset({"template_changed", "schema_changed", "unfillable_field"})


class PromptWatch:
    def __init__(self, window: int = 200, rise: float = 0.2) -> None:
        self.window, self.rise = window, rise
        self._n = self._changed = 0
        self.usual: float | None = None  # the share in the windows so far (exponentially weighted)
        self.last: float | None = None  # the last whole window's share
        self.total = self.total_changed = 0

    def saw(self, reason: str | None) -> str | None:
        """Count one request (``reason``: None when it matched, else why it was forwarded); a
        warning when a window just ended with a sudden rise."""
        if reason is not None and reason not in CHANGED:
            return None
        changed = reason is not None
        self._n += 1
        self.total += 1
        if changed:
            self._changed += 1
            self.total_changed += 1
        if self._n < self.window:
            return None
        share, self._n, self._changed = self._changed / self._n, 0, 0
        before, self.last = self.usual, share
        self.usual = share if before is None else 0.7 * before + 0.3 * share
        if before is not None and share - before >= self.rise:
            return (
                f"{share:.0%} of the task's last {self.window} requests came with a changed prompt "
                f"(usually {before:.0%}); they go to the upstream LLM. The app changed its prompt? "
                "Re-run 'offramp import-logs LOGS --task-out task.yaml' on its new requests."
            )
        return None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "requests": self.total,
            "changed": self.total_changed,
            "changed_share": self.total_changed / self.total if self.total else None,
            "last_window_share": self.last,
            "usual_share": self.usual,
        }
