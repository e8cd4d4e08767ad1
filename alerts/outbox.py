"""A durable outbox: notifications accepted are on disk before ``put`` returns.

One JSON file per notification, written to a temporary name, fsynced, renamed into place
and the directory fsynced, so a crash leaves either the whole notification or nothing.
Delivered (or abandoned) notifications are removed. A crash between a delivery and its
removal sends it again after the restart with the same id, which is how receivers tell a
duplicate (Standard Webhooks' ``webhook-id``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.exceptions import OutboxError
from alerts.payloads import HttpRequest

__all__ = ["Notification", "Outbox", "new_notification_id"]

log = logging.getLogger("driftline.alerts.outbox")

_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SUFFIX = ".json"


def new_notification_id() -> str:
    """A fresh id (``msg_`` and 32 hex digits), to give a notification once, at creation."""
    return f"msg_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Notification:
    """One request to deliver to the destination named ``sink``.

    ``id`` is sent as ``webhook-id`` on every attempt; ``model`` and ``target`` are set on
    retraining requests (they label ``driftline_retraining_requests_total``).
    """

    id: str
    sink: str
    request: HttpRequest
    created_at: float
    model: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"notification id {self.id!r}: use 1-128 letters, digits, _ . -")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sink": self.sink,
            "request": self.request.to_dict(),
            "created_at": self.created_at,
            "model": self.model,
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            id=str(data["id"]),
            sink=str(data["sink"]),
            request=HttpRequest.from_dict(data["request"]),
            created_at=float(data["created_at"]),
            model=data.get("model"),
            target=data.get("target"),
        )


class Outbox:
    """The notifications of a directory not yet delivered. Not thread-safe: one owner."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for leftover in self.directory.glob(".*.tmp"):  # a write cut by a crash
                leftover.unlink()
        except OSError as e:
            raise OutboxError(f"outbox {self.directory}: {e}") from e
        self._pending: dict[str, Notification] = {}
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                n = Notification.from_dict(json.loads(path.read_text("utf-8")))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                log.error("outbox file %s unreadable (%s): set aside as .corrupt", path, e)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".corrupt"))
                continue
            self._pending[n.id] = n

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, notification_id: object) -> bool:
        return notification_id in self._pending

    def pending(self) -> list[Notification]:
        """Notifications not yet removed, oldest first."""
        return sorted(self._pending.values(), key=lambda n: (n.created_at, n.id))

    def put(self, notification: Notification) -> bool:
        """Persist ``notification`` durably; ``False`` (and nothing written) when one with the
        same id is already pending."""
        if notification.id in self._pending:
            return False
        path = self.directory / (notification.id + _SUFFIX)
        tmp = self.directory / f".{notification.id}.tmp"
        data = json.dumps(notification.to_dict(), ensure_ascii=False).encode()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._sync_directory()
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutboxError(f"outbox {self.directory}: cannot write {path.name}: {e}") from e
        self._pending[notification.id] = notification
        return True

    def remove(self, notification_id: str) -> None:
        """Forget a delivered or abandoned notification (no error when it is not there)."""
        if self._pending.pop(notification_id, None) is None:
            return
        try:
            (self.directory / (notification_id + _SUFFIX)).unlink(missing_ok=True)
            self._sync_directory()
        except OSError as e:  # it would be sent once more after a restart, with its id
            log.error("outbox %s: cannot remove %s: %s", self.directory, notification_id, e)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
