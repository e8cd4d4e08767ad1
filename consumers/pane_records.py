"""The wire format of the panes topic: one :class:`~monitor.pane_merge.PaneUpdate` per record.

Key: the model name (so all of a model's updates land on one panes partition). Value: a
zlib-compressed MessagePack map, format ``driftline.panes/v1``, with the publishing
consumer group (``source``: stage 2 ignores other deployments sharing the topic), the
source partition, version, watermark, last closed pane, activity time, reference
fingerprint and the panes' counts, value sums and performance accumulators. A record that
does not decode, or decodes to something else, raises :class:`PaneRecordError`.
"""

from __future__ import annotations

import math
import zlib

import msgspec
import numpy as np

from consumers.checkpoints import decode_plain, encode_plain
from consumers.exceptions import ConsumersError
from monitor.pane_merge import PaneUpdate
from monitor.panes import PaneCounts

__all__ = ["PANES_FORMAT", "PaneRecordError", "decode_update", "encode_update"]

PANES_FORMAT = "driftline.panes/v1"
#: a pane record never inflates past this (a hostile record cannot exhaust memory)
MAX_INFLATED_BYTES = 64 << 20


class PaneRecordError(ConsumersError):
    """A panes-topic record that is not a pane update of this format."""


def encode_update(update: PaneUpdate, source: str) -> bytes:
    data = {
        "format": PANES_FORMAT,
        "source": source,
        "model": update.model,
        "partition": update.partition,
        "version": update.version,
        "watermark": update.watermark,
        "last_closed": update.last_closed,
        "active_at": update.active_at,
        "fingerprint": update.fingerprint,
        "profile": update.profile,
        "panes": [[i, p.events, p.counts, p.sums, p.extra] for i, p in update.panes],
    }
    return zlib.compress(encode_plain(data), 1)


def decode_update(blob: bytes) -> tuple[str, PaneUpdate]:
    """``(source group, update)`` of a record value."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob, MAX_INFLATED_BYTES)
        if inflater.unconsumed_tail:
            raise PaneRecordError(f"pane record inflates past {MAX_INFLATED_BYTES} bytes")
        data = decode_plain(raw)
    except (zlib.error, msgspec.DecodeError, TypeError, ValueError) as exc:
        raise PaneRecordError(f"unreadable pane record: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != PANES_FORMAT:
        raise PaneRecordError(f"not a {PANES_FORMAT} record")
    try:
        panes = []
        for index, events, counts, sums, extra in data["panes"]:
            c, s, e = (np.asarray(a) for a in (counts, sums, extra))
            if c.dtype != np.int64 or s.dtype != np.float64 or c.shape != s.shape:
                raise ValueError("pane vectors of the wrong type or shape")
            panes.append((int(index), PaneCounts(int(events), c, s, e.astype(np.float64))))
        last = data["last_closed"]
        update = PaneUpdate(
            model=str(data["model"]),
            partition=int(data["partition"]),
            version=int(data["version"]),
            watermark=float(data["watermark"]),
            last_closed=None if last is None else int(last),
            active_at=float(data["active_at"]),
            fingerprint=str(data["fingerprint"]),
            panes=tuple(panes),
            profile=data.get("profile"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PaneRecordError(f"malformed pane record: {exc!r}") from exc
    if math.isnan(update.watermark) or math.isnan(update.active_at):
        raise PaneRecordError("pane record with a NaN watermark or activity time")
    return str(data["source"]), update
