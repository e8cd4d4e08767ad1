"""The bounded join of predictions with their delayed ground truth, by ``event_id``.

Either side may arrive first. An unmatched prediction waits for its label, and an
unmatched label for its prediction, until its own event time is more than ``ttl`` seconds
older than ``now`` (*expired*), or until its side holds ``capacity`` entries and it is the
oldest by event time (*evicted*). A pending prediction keeps only its time, score, label
and model version, never its features.

Accounting: every prediction and every label passed in ends up exactly once as part of a
joined pair, pending, or dropped by reason (:data:`DROP_REASONS`). A second event with an
id that is already pending on its side, or that already joined (remembered for ``ttl``, up
to ``capacity`` ids), is a duplicate: the first one wins. Arrivals whose own time is
already beyond the TTL are dropped as expired without joining.

State lives in preallocated numpy columns indexed by a dict from event id to slot, so the
per-event work is a few dict look-ups; expiry and eviction are array operations.
:meth:`LabelJoin.snapshot` is plain JSON-able data and :meth:`LabelJoin.restore` reads it
back; eviction order is by (event time, arrival sequence), so a restored join behaves
exactly as the original would have.

>>> join = LabelJoin(ttl=3600.0, capacity=10)
>>> obj = lambda *v: np.array(v, dtype=object)
>>> early = join.add_labels(["b"], obj("ok"), np.array([5.0]), now=5.0)
>>> j = join.add_predictions(
...     ["a", "b"], np.array([1.0, 2.0]), np.array([0.9, 0.1]), obj(None, None),
...     obj("v1", "v1"), now=6.0)
>>> len(early), j.event_id, j.y_true.tolist(), join.pending_predictions
(0, ['b'], ['ok'], 1)
>>> join.expire(now=4000.0); join.pending_predictions, join.dropped["prediction_expired"]
(0, 1)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DROP_REASONS", "Joined", "LabelJoin"]

DROP_REASONS: tuple[str, ...] = (
    "prediction_expired",
    "prediction_evicted",
    "label_expired",
    "label_evicted",
    "duplicate_label",
    "duplicate_prediction",
)

_INITIAL_SLOTS = 1024
_PREDICTION_COLUMNS: dict[str, type] = {
    "score": np.float64,
    "label": object,
    "version": object,
    "segment": np.float64,
    "kpi": object,
}
_LABEL_COLUMNS: dict[str, type] = {"y_true": object}

Column = NDArray[Any]


@dataclass(frozen=True)
class Joined:
    """The prediction/label pairs that joined in one call, in the order of its arrivals."""

    event_id: list[str]
    prediction_time: NDArray[np.float64]
    label_time: NDArray[np.float64]
    score: NDArray[np.float64]
    label: NDArray[np.object_]
    y_true: NDArray[np.object_]
    version: NDArray[np.object_]
    #: the predictions' segments (see :meth:`monitor.segments.Segments.cells`); NaN for none
    segment: NDArray[np.float64] | None = None
    #: per pair, the values its prediction kept for label-aware KPIs (an array or list,
    #: ``None`` for none)
    kpi: NDArray[np.object_] | None = None

    def __len__(self) -> int:
        return len(self.event_id)


def _oldest(time: NDArray[np.float64], seq: NDArray[np.int64], k: int) -> NDArray[np.intp]:
    """Positions of the ``k`` smallest (time, seq) pairs, in O(n) plus the ties."""
    if k >= time.size:
        return np.arange(time.size, dtype=np.intp)
    kth = np.partition(time, k - 1)[k - 1]
    below = np.flatnonzero(time < kth)
    ties = np.flatnonzero(time == kth)
    ties = ties[np.argsort(seq[ties], kind="stable")[: k - below.size]]
    return np.concatenate([below, ties])


def _plain(value: Any) -> Any:
    """A JSON-able Python value for a numpy scalar or array or a non-finite float (as
    ``None``)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Store:
    """The pending entries of one side: numpy columns by slot, a dict from id to slot.

    Free slots have time +inf. Columns grow geometrically up to ``capacity`` slots.
    """

    def __init__(self, capacity: int, columns: Mapping[str, type]) -> None:
        self.capacity = capacity
        self.kinds = dict(columns)
        self.index: dict[str, int] = {}
        self.next_seq = 0
        self.ids: NDArray[np.object_] = np.empty(0, dtype=object)
        self.time: NDArray[np.float64] = np.empty(0)
        self.seq: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.cols: dict[str, Column] = {k: np.empty(0, dtype=t) for k, t in self.kinds.items()}
        self.free: list[int] = []
        #: no entry is older than this: expiry scans the slots only past it
        self.oldest = math.inf

    def __len__(self) -> int:
        return len(self.index)

    def _reserve(self, extra: int) -> None:
        old = self.time.size
        if len(self.free) >= extra:
            return
        size = min(self.capacity, max(old + extra - len(self.free), 2 * old, _INITIAL_SLOTS))
        grow = size - old

        def pad(arr: Column, fill: Any) -> Column:
            return np.concatenate([arr, np.full(grow, fill, dtype=arr.dtype)])

        self.ids = pad(self.ids, None)
        self.time = pad(self.time, np.inf)
        self.seq = pad(self.seq, 0)
        self.cols = {k: pad(v, _empty(v)) for k, v in self.cols.items()}
        self.free.extend(range(size - 1, old - 1, -1))

    def gather(self, slots: NDArray[np.intp]) -> tuple[NDArray[np.float64], dict[str, Column]]:
        return self.time[slots], {k: v[slots] for k, v in self.cols.items()}

    def release(self, slots: NDArray[np.intp], *, forget: bool) -> None:
        """Free ``slots``; ``forget`` also removes their ids from the index."""
        if forget:
            index = self.index
            for eid in self.ids[slots].tolist():
                del index[eid]
        self.ids[slots] = None
        self.time[slots] = np.inf
        for v in self.cols.values():
            v[slots] = _empty(v)
        self.free.extend(slots.tolist())

    def expire(self, cutoff: float) -> int:
        if cutoff <= self.oldest:
            return 0
        slots = np.flatnonzero(self.time < cutoff)
        self.release(slots, forget=True)
        self.oldest = float(self.time.min()) if self.time.size else math.inf
        return int(slots.size)

    def insert(
        self,
        ids: list[str],
        time: NDArray[np.float64],
        seq: NDArray[np.int64],
        cols: Mapping[str, Column],
    ) -> None:
        """Store entries whose ids are not in the index; the caller keeps within capacity."""
        n = len(ids)
        if n == 0:
            return
        self._reserve(n)
        taken = self.free[-n:]
        del self.free[-n:]
        slots = np.array(taken, dtype=np.intp)
        self.index.update(zip(ids, taken, strict=True))
        self.ids[slots] = np.array(ids, dtype=object)
        self.time[slots] = time
        self.seq[slots] = seq
        for k, v in self.cols.items():
            v[slots] = cols[k]
        self.next_seq = max(self.next_seq, int(seq.max()) + 1)
        self.oldest = min(self.oldest, float(time.min()))

    def admit(self, ids: list[str], time: NDArray[np.float64], cols: Mapping[str, Column]) -> int:
        """Insert new entries, first evicting the oldest of old and new beyond capacity.

        Returns how many were evicted (possibly some of the new ones).
        """
        n = len(ids)
        seq = np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)
        self.next_seq += n
        over = len(self.index) + n - self.capacity
        if over > 0:
            held = np.flatnonzero(np.isfinite(self.time))
            victims = _oldest(
                np.concatenate([self.time[held], time]),
                np.concatenate([self.seq[held], seq]),
                over,
            )
            self.release(held[victims[victims < held.size]], forget=True)
            keep = np.ones(n, dtype=bool)
            keep[victims[victims >= held.size] - held.size] = False
            ids = [e for e, k in zip(ids, keep.tolist(), strict=True) if k]
            time, seq = time[keep], seq[keep]
            cols = {k: v[keep] for k, v in cols.items()}
        self.insert(ids, time, seq, cols)
        return max(over, 0)

    def snapshot(self) -> dict[str, Any]:
        held = np.flatnonzero(np.isfinite(self.time))
        order = held[np.argsort(self.seq[held], kind="stable")]
        out: dict[str, Any] = {
            "next_seq": self.next_seq,
            "event_id": self.ids[order].tolist(),
            "time": self.time[order].tolist(),
            "seq": self.seq[order].tolist(),
        }
        for k, v in self.cols.items():
            out[k] = [_plain(x) for x in v[order].tolist()]
        return out

    def restore(self, data: Mapping[str, Any]) -> int:
        """Read a :meth:`snapshot` back; entries beyond this store's capacity (a smaller
        one configured since) are evicted oldest first. Returns how many were."""
        ids = [str(e) for e in data["event_id"]]
        if len(set(ids)) != len(ids):
            raise ValueError("snapshot holds repeated ids")
        # a column added since the snapshot was taken is empty in it
        blank = [None] * len(ids)
        cols = {
            k: np.array([_empty_value(t) if x is None else x for x in data.get(k, blank)], dtype=t)
            if t is not object
            else _objects(data.get(k, blank))
            for k, t in self.kinds.items()
        }
        time = np.asarray(data["time"], dtype=np.float64)
        seq = np.asarray(data["seq"], dtype=np.int64)
        if time.shape != (len(ids),) or seq.shape != (len(ids),):
            raise ValueError("snapshot columns of different lengths")
        over = len(ids) - self.capacity
        if over > 0:
            keep = np.ones(len(ids), dtype=bool)
            keep[_oldest(time, seq, over)] = False
            ids = [e for e, k in zip(ids, keep.tolist(), strict=True) if k]
            time, seq = time[keep], seq[keep]
            cols = {k: v[keep] for k, v in cols.items()}
        self.insert(ids, time, seq, cols)
        self.next_seq = int(data["next_seq"])
        return max(over, 0)


def _empty(arr: Column) -> Any:
    return None if arr.dtype == object else np.nan


def _empty_value(kind: type) -> Any:
    return None if kind is object else math.nan


def _objects(values: Any) -> NDArray[np.object_]:
    out: NDArray[np.object_] = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


class LabelJoin:
    """Predictions and labels waiting for each other, bounded by a TTL and a capacity."""

    def __init__(self, ttl: float = 7 * 86400, capacity: int = 1_000_000) -> None:
        if not ttl > 0 or capacity < 1:
            raise ValueError("ttl > 0 and capacity >= 1 are required")
        self.ttl = float(ttl)
        self.capacity = int(capacity)
        self._predictions = _Store(capacity, _PREDICTION_COLUMNS)
        self._labels = _Store(capacity, _LABEL_COLUMNS)
        # Ids that already joined (and the version that predicted), so a redelivered event
        # counts as a duplicate and another version's prediction as a shadow.
        self._joined = _Store(
            capacity, {"version": object, "y_true": object, "label_time": np.float64}
        )
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.joined_total = 0

    @property
    def pending_predictions(self) -> int:
        return len(self._predictions)

    @property
    def pending_labels(self) -> int:
        return len(self._labels)

    def expire(self, now: float) -> None:
        """Drop pending entries whose event time is more than ``ttl`` before ``now``."""
        cutoff = now - self.ttl
        self.dropped["prediction_expired"] += self._predictions.expire(cutoff)
        self.dropped["label_expired"] += self._labels.expire(cutoff)
        self._joined.expire(cutoff)

    def unseen(self, event_id: Sequence[str]) -> NDArray[np.bool_]:
        """Which of these predictions are new: not pending, not joined already and not
        repeated earlier in the list (a redelivery, or a shadow version's prediction for a
        request the model already answered). Dictionary look-ups only; nothing changes."""
        pending, joined = self._predictions.index, self._joined.index
        n = len(event_id)
        if (
            len(set(event_id)) == n
            and not any(map(pending.__contains__, event_id))
            and not any(map(joined.__contains__, event_id))
        ):
            return np.ones(n, dtype=bool)  # the usual batch: look-ups in C only
        seen: set[str] = set()
        add = seen.add
        fresh = (not (e in pending or e in joined or e in seen or add(e)) for e in event_id)
        return np.fromiter(fresh, dtype=bool, count=n)

    def shadows(
        self, event_id: Sequence[str], version: NDArray[np.object_], fresh: NDArray[np.bool_]
    ) -> NDArray[np.bool_]:
        """Which of the predictions that are not ``fresh`` (see :meth:`unseen`) come from
        another model version than the one held for their id: a shadow (challenger)
        answering a request the model answered, not a redelivery. Looks at those only."""
        out = np.zeros(len(event_id), dtype=bool)
        pending, joined = self._predictions.index, self._joined.index
        held_p, held_j = self._predictions.cols["version"], self._joined.cols["version"]
        first: dict[str, Any] = {}
        versions = version.tolist()
        for i, (e, v) in enumerate(zip(event_id, versions, strict=True)):
            if fresh[i]:
                first.setdefault(e, v)
                continue
            if e in first:
                held = first[e]
            elif e in pending:
                held = held_p[pending[e]]
            else:
                held = held_j[joined[e]]
            out[i] = held != v
        return out

    def answers(
        self, event_id: Sequence[str]
    ) -> tuple[NDArray[np.intp], NDArray[np.object_], NDArray[np.float64]]:
        """The ground truth known for these ids, pending or already joined (and remembered):
        positions, labels and label times. Nothing changes: another version's join takes
        the labels the model's join already holds."""
        n = len(event_id)
        # look-ups in C; slots gathered with numpy (-1: not held on that side)
        in_p = np.fromiter(map(self._labels.index.get, event_id, repeat(-1)), np.intp, n)
        in_j = np.fromiter(map(self._joined.index.get, event_id, repeat(-1)), np.intp, n)
        in_j[in_p >= 0] = -1  # a pending label wins
        p_at, j_at = np.flatnonzero(in_p >= 0), np.flatnonzero(in_j >= 0)
        y_j = self._joined.cols["y_true"][in_j[j_at]]
        known = np.not_equal(y_j, np.array(None, dtype=object))  # joined before labels kept
        j_at = j_at[known]
        at = np.concatenate([p_at, j_at])
        order = np.argsort(at, kind="stable")
        y = np.concatenate([self._labels.cols["y_true"][in_p[p_at]], y_j[known]])
        t = np.concatenate(
            [self._labels.time[in_p[p_at]], self._joined.cols["label_time"][in_j[j_at]]]
        )
        return at[order], y[order], t[order]

    def add_predictions(
        self,
        event_id: list[str],
        time: ArrayLike,
        score: ArrayLike,
        label: Sequence[Any] | NDArray[Any],
        version: Sequence[Any] | NDArray[Any],
        now: float,
        segment: NDArray[np.float64] | None = None,
        kpi: NDArray[np.float64] | None = None,
    ) -> Joined:
        """Pend predictions, joining those whose label already waits; return the joins.

        A prediction with a non-finite time is stamped ``now``; ``segment`` is kept with
        each prediction and handed back with its join.
        """
        cols: dict[str, Column] = {
            "score": np.asarray(score, dtype=np.float64),
            "label": _column(label),
            "version": _column(version),
            "segment": (
                np.full(len(event_id), np.nan)
                if segment is None
                else np.asarray(segment, dtype=np.float64)
            ),
            "kpi": _rows(kpi, len(event_id)),
        }
        t, join_at, slots = self._arrive(
            "prediction", event_id, time, cols, now, self._predictions, self._labels
        )
        label_time, theirs = self._labels.gather(slots)
        self._labels.release(slots, forget=False)
        return self._record(
            Joined(
                event_id=[event_id[i] for i in join_at.tolist()],
                prediction_time=t[join_at],
                label_time=label_time,
                score=cols["score"][join_at],
                label=cols["label"][join_at],
                y_true=theirs["y_true"],
                version=cols["version"][join_at],
                segment=cols["segment"][join_at],
                kpi=cols["kpi"][join_at],
            )
        )

    def add_labels(
        self,
        event_id: list[str],
        y_true: Sequence[Any] | NDArray[Any],
        time: ArrayLike,
        now: float,
    ) -> Joined:
        """Pend labels, joining those whose prediction already waits; return the joins.

        A label with a non-finite time is stamped ``now``.
        """
        cols: dict[str, Column] = {"y_true": _column(y_true)}
        t, join_at, slots = self._arrive(
            "label", event_id, time, cols, now, self._labels, self._predictions
        )
        prediction_time, theirs = self._predictions.gather(slots)
        self._predictions.release(slots, forget=False)
        return self._record(
            Joined(
                event_id=[event_id[i] for i in join_at.tolist()],
                prediction_time=prediction_time,
                label_time=t[join_at],
                score=theirs["score"],
                label=theirs["label"],
                y_true=cols["y_true"][join_at],
                version=theirs["version"],
                segment=theirs["segment"],
                kpi=theirs["kpi"],
            )
        )

    def _arrive(
        self,
        side: str,
        event_id: list[str],
        time: ArrayLike,
        cols: dict[str, Column],
        now: float,
        mine: _Store,
        theirs: _Store,
    ) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.intp]]:
        """Sort arrivals into expired, duplicate, joining and pending; pend the last.

        Returns the arrivals' times, the positions that joined and the slots on the other
        side they joined with (still to be gathered and released by the caller).
        """
        n = len(event_id)
        t = np.asarray(time, dtype=np.float64)
        if t.shape != (n,) or any(c.shape != (n,) for c in cols.values()):
            raise ValueError(f"every column must hold one value per event id ({n})")
        t = np.where(np.isfinite(t), t, now)
        self.expire(now)
        too_old = t < now - self.ttl
        mine_index, theirs_index, joined_index = mine.index, theirs.index, self._joined.index
        seen: set[str] = set()
        join_at: list[int] = []
        join_slots: list[int] = []
        pend_at: list[int] = []
        expired = duplicate = 0
        if (
            not too_old.any()
            and len(set(event_id)) == n
            and (not mine_index or mine_index.keys().isdisjoint(event_id))
            and (not joined_index or joined_index.keys().isdisjoint(event_id))
        ):
            # The usual batch, every id new: set operations in C instead of the loop below.
            if not theirs_index or theirs_index.keys().isdisjoint(event_id):
                pend_at = list(range(n))
            else:
                slots = list(map(theirs_index.pop, event_id, repeat(None)))
                for i, slot in enumerate(slots):
                    if slot is None:
                        pend_at.append(i)
                    else:
                        join_at.append(i)
                        join_slots.append(slot)
        else:
            for i, (eid, old) in enumerate(zip(event_id, too_old.tolist(), strict=True)):
                if old:
                    expired += 1
                elif eid in seen or eid in mine_index or eid in joined_index:
                    duplicate += 1
                else:
                    seen.add(eid)
                    slot = theirs_index.pop(eid, None)
                    if slot is None:
                        pend_at.append(i)
                    else:
                        join_at.append(i)
                        join_slots.append(slot)
        self.dropped[f"{side}_expired"] += expired
        self.dropped[f"duplicate_{side}"] += duplicate
        if pend_at and len(pend_at) == n:
            self.dropped[f"{side}_evicted"] += mine.admit(list(event_id), t, cols)
        elif pend_at:
            at = np.array(pend_at, dtype=np.intp)
            self.dropped[f"{side}_evicted"] += mine.admit(
                [event_id[i] for i in pend_at], t[at], {k: v[at] for k, v in cols.items()}
            )
        return t, np.array(join_at, dtype=np.intp), np.array(join_slots, dtype=np.intp)

    def _record(self, joined: Joined) -> Joined:
        if len(joined):
            self.joined_total += len(joined)
            # Remembered until the later of the two times expires; forgotten silently.
            self._joined.admit(
                joined.event_id,
                np.maximum(joined.prediction_time, joined.label_time),
                {
                    "version": joined.version,
                    "y_true": joined.y_true,
                    "label_time": joined.label_time,
                },
            )
        return joined

    def forget_layout(self) -> None:
        """Forget what pending predictions kept under the model's previous layout: their
        segment cells and label-aware KPI values mean nothing under a new ``segments:`` or
        ``kpis:`` (a cell would be read as another segment, a KPI row has other fields).
        They still join their labels, and count for the whole model only."""
        cols = self._predictions.cols
        for name in ("segment", "kpi"):
            cols[name] = np.full(cols[name].size, _empty(cols[name]), dtype=cols[name].dtype)

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able data (lists, numbers, strings; NaN scores as ``None``)."""
        return {
            "ttl": self.ttl,
            "capacity": self.capacity,
            "joined_total": self.joined_total,
            "dropped": {k: int(v) for k, v in self.dropped.items()},
            "predictions": self._predictions.snapshot(),
            "labels": self._labels.snapshot(),
            "joined": self._joined.snapshot(),
        }

    @classmethod
    def restore(
        cls, data: Mapping[str, Any], *, ttl: float | None = None, capacity: int | None = None
    ) -> LabelJoin:
        """A join in the state a :meth:`snapshot` recorded. ``ttl`` and ``capacity``, when
        given (the configured ones), win over the snapshot's: entries beyond a smaller
        capacity are evicted oldest first and counted as evicted."""
        join = cls(
            ttl=float(data["ttl"]) if ttl is None else ttl,
            capacity=int(data["capacity"]) if capacity is None else capacity,
        )
        join.joined_total = int(data["joined_total"])
        for reason, count in data["dropped"].items():
            join.dropped[str(reason)] = int(count)
        join.dropped["prediction_evicted"] += join._predictions.restore(data["predictions"])
        join.dropped["label_evicted"] += join._labels.restore(data["labels"])
        join._joined.restore(data["joined"])
        return join


def _rows(values: NDArray[np.float64] | None, n: int) -> NDArray[np.object_]:
    """An object column holding each row of ``values`` (``None`` without values)."""
    out: NDArray[np.object_] = np.empty(n, dtype=object)
    if values is not None and values.size:
        out[:] = list(values)
    return out


def _column(values: Sequence[Any] | NDArray[Any]) -> NDArray[np.object_]:
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values.astype(object, copy=False)
    return _objects(list(values))
