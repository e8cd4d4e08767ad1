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
from typing import Any

import numpy as np

from consumers.checkpoints import decode_plain, encode_plain
from consumers.exceptions import ConsumersError
from monitor.events import MAX_VERSION_LENGTH
from monitor.pane_merge import PaneUpdate
from monitor.panes import PaneCounts

__all__ = ["PANES_FORMAT", "PaneRecordError", "decode_update", "encode_update"]

PANES_FORMAT = "driftline.panes/v1"
#: a pane record never inflates past this (a hostile record cannot exhaust memory)
MAX_INFLATED_BYTES = 64 << 20
#: bounds of what a record may say (stage 1 sends one pane per record)
MAX_PANES = 64
MAX_PARTITION = (1 << 20) - 1
BIG = (1 << 62) - 1


class PaneRecordError(ConsumersError):
    """A panes-topic record that is not a pane update of this format."""


def encode_update(update: PaneUpdate, source: str) -> bytes:
    data = {
        "format": PANES_FORMAT,
        "source": source,
        "model": update.model,
        "partition": update.partition,
        "version": update.version,
        "epoch": update.epoch,
        "watermark": update.watermark,
        "last_closed": update.last_closed,
        "active_at": update.active_at,
        "fingerprint": update.fingerprint,
        "profile": update.profile,
        "model_version": update.model_version,
        "panes": [[i, p.events, p.counts, p.sums, p.extra] for i, p in update.panes],
    }
    return zlib.compress(encode_plain(data), 1)


def decode_update(blob: bytes) -> tuple[str, PaneUpdate]:
    """``(source group, update)`` of a record value; :class:`PaneRecordError` for anything
    that is not a well-formed update of this format (nothing else escapes)."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob, MAX_INFLATED_BYTES)
        if inflater.unconsumed_tail:
            raise PaneRecordError(f"pane record inflates past {MAX_INFLATED_BYTES} bytes")
        data = decode_plain(raw)
    except PaneRecordError:
        raise
    except Exception as exc:  # zlib, msgpack, a malformed array: all the same to us
        raise PaneRecordError(f"unreadable pane record: {exc!r}") from exc
    if not isinstance(data, dict) or data.get("format") != PANES_FORMAT:
        raise PaneRecordError(f"not a {PANES_FORMAT} record")
    try:
        return _source(data), _update(data)
    except PaneRecordError:
        raise
    except Exception as exc:
        raise PaneRecordError(f"malformed pane record: {exc!r}") from exc


def _source(data: dict[str, Any]) -> str:
    source = data["source"]
    if not isinstance(source, str):
        raise PaneRecordError("source is not a string")
    return source


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PaneRecordError(f"{what} is not an integer in [{lo}, {hi}]")
    return value


def _float(value: Any, what: str, *, allow_minus_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PaneRecordError(f"{what} is not a number")
    f = float(value)
    if not (math.isfinite(f) or (allow_minus_inf and f == -math.inf)):
        raise PaneRecordError(f"{what} is not finite")
    return f


def _update(data: dict[str, Any]) -> PaneUpdate:
    panes_in = data["panes"]
    if not isinstance(panes_in, list) or len(panes_in) > MAX_PANES:
        raise PaneRecordError(f"panes is not a list of at most {MAX_PANES}")
    panes = []
    for entry in panes_in:
        index, events, counts, sums, extra = entry
        c, s, e = (np.asarray(a) for a in (counts, sums, extra))
        if c.dtype != np.int64 or s.dtype != np.float64 or c.ndim != 1 or c.shape != s.shape:
            raise PaneRecordError("pane vectors of the wrong type or shape")
        if e.ndim != 1:
            raise PaneRecordError("pane accumulators of the wrong shape")
        panes.append(
            (
                _int(index, -BIG, BIG, "pane index"),
                PaneCounts(_int(events, 0, BIG, "events"), c, s, e.astype(np.float64)),
            )
        )
    last = data["last_closed"]
    model, fingerprint, profile = data["model"], data["fingerprint"], data.get("profile")
    if not isinstance(model, str) or not isinstance(fingerprint, str):
        raise PaneRecordError("model or fingerprint is not a string")
    if profile is not None and not isinstance(profile, dict):
        raise PaneRecordError("profile is not a map")
    model_version = data.get("model_version")
    if model_version is not None and (
        not isinstance(model_version, str) or len(model_version) > MAX_VERSION_LENGTH
    ):
        raise PaneRecordError(f"model_version is not a string of at most {MAX_VERSION_LENGTH}")
    return PaneUpdate(
        model=model,
        partition=_int(data["partition"], 0, MAX_PARTITION, "partition"),
        version=_int(data["version"], 0, BIG, "version"),
        watermark=_float(data["watermark"], "watermark", allow_minus_inf=True),
        last_closed=None if last is None else _int(last, -BIG, BIG, "last_closed"),
        active_at=_float(data["active_at"], "active_at", allow_minus_inf=True),
        fingerprint=fingerprint,
        panes=tuple(panes),
        profile=profile,
        epoch=_int(data.get("epoch", 0), 0, BIG, "epoch"),
        model_version=model_version,
    )
