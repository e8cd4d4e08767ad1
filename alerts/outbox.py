"""A durable outbox: notifications accepted are stored before ``put`` returns.

The outbox keeps one record per notification in a :class:`BlobStore` under a key prefix:
the service's configured state store (a directory or the compacted Kafka topic), so that
notifications live wherever the checkpoints do. The store writes each record whole or
not at all. Delivered (or abandoned) notifications are deleted. A crash between a
delivery and its deletion sends it again after the restart with the same id, which is
how receivers tell a duplicate (Standard Webhooks' ``webhook-id``).

Records hold no credentials: a request carrying an ``Authorization`` header is refused
by :meth:`Outbox.put` (destinations add their token when sending), and a record an
earlier version wrote with one is rewritten without it when loaded.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from alerts.exceptions import OutboxError
from alerts.payloads import HttpRequest

__all__ = ["BlobStore", "Notification", "Outbox", "new_notification_id"]

log = logging.getLogger("driftline.alerts.outbox")

_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class BlobStore(Protocol):
    """Durable bytes by key (the checkpoint stores are ones); ``keep`` is how many
    versions of the key a store that keeps several keeps after this one is saved."""

    def save(self, key: str, blob: bytes, *, keep: int | None = None) -> None: ...
    def load(self, key: str) -> bytes | None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> list[str]: ...


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


def _encode(notification: Notification) -> bytes:
    return json.dumps(notification.to_dict(), ensure_ascii=False).encode()


class Outbox:
    """The notifications not yet delivered, kept in ``store`` under ``prefix``. Not
    thread-safe: one owner. A record that cannot be read back is logged and skipped.
    Each record is kept in one version only."""

    def __init__(self, store: BlobStore, prefix: str = "alerts/outbox") -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")
        self._pending: dict[str, Notification] = {}

    def load(self) -> list[Notification]:
        """Read back what an earlier run left (oldest first); raises :class:`OutboxError`
        when the store cannot be read. A record that cannot be decoded is logged and
        skipped, never stopping the others; one holding credentials is rewritten without
        them."""
        try:
            keys = self.store.keys(self.prefix + "/")
        except Exception as e:  # the store's own error types, as one for the caller
            raise OutboxError(f"outbox {self.prefix}: cannot list: {e}") from e
        for key in keys:
            try:
                blob = self.store.load(key)
                if blob is None:
                    continue
                n = Notification.from_dict(json.loads(blob))
            except Exception as e:
                log.error("outbox record %s unreadable (%s): skipped", key, e)
                continue
            if n.request.credentials():
                n = replace(n, request=n.request.without_credentials())
                self._rewrite(key, n)
            self._pending.setdefault(n.id, n)
        return self.pending()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, notification_id: object) -> bool:
        return notification_id in self._pending

    def _key(self, notification_id: str) -> str:
        return f"{self.prefix}/{notification_id}"

    def pending(self) -> list[Notification]:
        """Notifications not yet removed, oldest first."""
        return sorted(self._pending.values(), key=lambda n: (n.created_at, n.id))

    def _rewrite(self, key: str, notification: Notification) -> None:
        """Replace the record at ``key`` with ``notification`` (whose credentials were
        removed); a failure is logged, and the record goes once it is delivered."""
        try:
            self.store.save(key, _encode(notification), keep=1)
        except Exception as e:
            log.error("outbox record %s holds credentials and cannot be rewritten: %s", key, e)
        else:
            log.warning("outbox record %s held credentials: rewritten without them", key)

    def put(self, notification: Notification) -> bool:
        """Store ``notification`` durably; ``False`` (and nothing written) when one with the
        same id is already pending. Raises :class:`OutboxError` when the store fails and
        ``ValueError`` when its request carries credentials."""
        if notification.id in self._pending:
            return False
        if names := notification.request.credentials():
            raise ValueError(
                f"notification {notification.id} carries {', '.join(names)}: credentials "
                "belong to its destination, which adds them when sending, not to the outbox"
            )
        try:
            self.store.save(self._key(notification.id), _encode(notification), keep=1)
        except Exception as e:
            raise OutboxError(f"outbox {self.prefix}: cannot write {notification.id}: {e}") from e
        self._pending[notification.id] = notification
        return True

    def remove(self, notification_id: str) -> None:
        """Forget a delivered or abandoned notification (no error when it is not there)."""
        if self._pending.pop(notification_id, None) is None:
            return
        try:
            self.store.delete(self._key(notification_id))
        except Exception as e:  # it would be sent once more after a restart, with its id
            log.error("outbox %s: cannot remove %s: %s", self.prefix, notification_id, e)
