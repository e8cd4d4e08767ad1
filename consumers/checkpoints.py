"""Checkpoints: durable snapshots of a partition's state with the offset they reflect.

Format ``driftline.checkpoint/v1``: a zlib-compressed MessagePack map with ``format``,
``topic``, ``partition``, ``offset`` (the next offset to consume), ``created_at`` and the
state; numpy arrays are stored as ``{"__ndarray__": dtype, "shape": [...], "data": bytes}``.
A checkpoint of another format is refused with a message saying which one this
driftline reads (state is then rebuilt from the committed offsets).

Two stores behind one interface: a directory (default; temporary file, fsync, atomic
rename, the last ``keep`` checkpoints kept; files readable by their owner only) and a
compacted Kafka topic (for stateless pods), where a checkpoint is written in chunks
followed by a manifest record.
"""

from __future__ import annotations

import os
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.exceptions import ConsumersError
from consumers.topics import ensure_topics

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointStore",
    "DirectoryStore",
    "KafkaTopicStore",
    "RestoreError",
    "decode_checkpoint",
    "decode_plain",
    "encode_checkpoint",
    "encode_plain",
]

CHECKPOINT_FORMAT = "driftline.checkpoint/v1"


class CheckpointError(ConsumersError):
    """A checkpoint cannot be written, or one that was read cannot be used."""


class RestoreError(CheckpointError):
    """A checkpoint was read but its state cannot be restored (corrupt, another format,
    counted against another reference or binning): the unit is rebuilt from the
    committed offsets instead, never left half restored."""


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"__ndarray__": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _arrays(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            flat = np.frombuffer(obj["data"], dtype=np.dtype(obj["__ndarray__"]))
            return flat.reshape(obj["shape"]).copy()
        return {k: _arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays(v) for v in obj]
    return obj


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode_plain(data: Any) -> bytes:
    """MessagePack of plain data with numpy arrays (as checkpoints hold them)."""
    return _encoder.encode(data)


def decode_plain(blob: bytes) -> Any:
    """Reads :func:`encode_plain` back (``msgspec.DecodeError`` when it is not that)."""
    return _arrays(msgspec.msgpack.decode(blob))


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    return zlib.compress(_encoder.encode({"format": CHECKPOINT_FORMAT, **state}), 1)


def decode_checkpoint(blob: bytes) -> dict[str, Any]:
    try:
        data = msgspec.msgpack.decode(zlib.decompress(blob))
    except (zlib.error, msgspec.DecodeError) as exc:
        raise RestoreError(f"unreadable checkpoint: {exc}") from exc
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != CHECKPOINT_FORMAT:
        raise RestoreError(
            f"checkpoint format {fmt!r} is not {CHECKPOINT_FORMAT!r}, the one this driftline "
            "reads; state will be rebuilt from the committed offsets"
        )
    result: dict[str, Any] = _arrays(data)
    return result


class CheckpointStore(Protocol):
    def save(self, key: str, blob: bytes, *, keep: int | None = None) -> None:
        """Store ``blob`` as the newest version of ``key``; ``keep`` overrides how many
        versions a store that keeps several keeps (the alert outbox keeps one)."""
        ...

    def load(self, key: str) -> bytes | None: ...
    def load_all(self, key: str) -> list[bytes]:
        """Every checkpoint kept for ``key``, newest first (for falling back past a bad one)."""
        ...

    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` that hold something (the alert outbox lists its own)."""
        ...

    def close(self) -> None: ...


class DirectoryStore:
    """Checkpoints as files ``<dir>/<key>/checkpoint-<n>.bin``; the newest ``keep`` kept.

    Files are created readable and writable by their owner only (0600), and the
    directories this store creates, the root included, are 0700: the state may hold
    what the alert outbox holds (alert text, URLs). Existing ones are left as they are.
    """

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep
        # temporary files of writes a crash interrupted are never read: remove them
        if self.root.is_dir():
            for tmp in self.root.rglob(".checkpoint-*.tmp"):
                tmp.unlink(missing_ok=True)

    def _dir(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _files(self, key: str) -> list[Path]:
        d = self._dir(key)
        if not d.is_dir():
            return []
        return sorted(d.glob("checkpoint-*.bin"))

    def _mkdirs(self, d: Path) -> None:
        """Create ``d`` and its missing parents, each 0700."""
        missing = []
        while not d.is_dir():
            missing.append(d)
            if d.parent == d:
                break
            d = d.parent
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)

    def save(self, key: str, blob: bytes, *, keep: int | None = None) -> None:
        d = self._dir(key)
        try:
            self._mkdirs(d)
            files = self._files(key)
            seq = int(files[-1].stem.split("-")[1]) + 1 if files else 1
            final = d / f"checkpoint-{seq:012d}.bin"
            tmp = d / f".{final.name}.{os.getpid()}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with open(fd, "wb") as f:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            fd = os.open(d, os.O_RDONLY)  # make the rename itself durable
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            for old in self._files(key)[: -(keep or self.keep)]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint under {d}: {exc}") from exc

    def load(self, key: str) -> bytes | None:
        files = self._files(key)
        return files[-1].read_bytes() if files else None

    def load_all(self, key: str) -> list[bytes]:
        out = []
        for path in reversed(self._files(key)):
            try:
                out.append(path.read_bytes())
            except OSError:
                out.append(b"")  # unreadable: decoding refuses it, the next one is tried
        return out

    def delete(self, key: str) -> None:
        """Remove every checkpoint of ``key`` (no error when there is none)."""
        d = self._dir(key)
        try:
            for path in self._files(key):
                path.unlink(missing_ok=True)
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        except OSError as exc:
            raise CheckpointError(f"cannot delete checkpoint under {d}: {exc}") from exc

    def keys(self, prefix: str) -> list[str]:
        """Keys under the folder ``prefix`` (ending in ``/``) that hold a checkpoint."""
        base = self._dir(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(
            f"{prefix}{d.name}"
            for d in base.iterdir()
            if d.is_dir() and any(d.glob("checkpoint-*.bin"))
        )

    def close(self) -> None:
        pass


class KafkaTopicStore:
    """Checkpoints in a compacted topic: chunk records, then a manifest naming them."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        chunk_bytes: int = 512 * 1024,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap_servers.split(",")
        self.topic = topic
        self.chunk_bytes = chunk_bytes
        self._client = dict(client_config or {})
        #: chunks written per key by this process (their tombstones on delete)
        self._chunks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._producer_: Any = None

    @property
    def _producer(self) -> Any:
        """Connected on first use, so that a broker down at start is retried by the
        caller instead of stopping the service."""
        with self._lock:
            if self._producer_ is None:
                # compaction keeps the newest record per key: the latest manifest and chunks
                ensure_topics(
                    ",".join(self.bootstrap),
                    [self.topic],
                    config={"cleanup.policy": "compact"},
                    client=self._client,
                    timeout=5.0,
                )
                self._producer_ = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    max_request_size=4 * self.chunk_bytes,
                    **self._client,
                )
            return self._producer_

    def save(self, key: str, blob: bytes, *, keep: int | None = None) -> None:
        """Compaction keeps the newest version of ``key`` whatever ``keep`` says."""
        snapshot_id = uuid.uuid4().hex
        chunks = [blob[i : i + self.chunk_bytes] for i in range(0, len(blob), self.chunk_bytes)]
        try:
            futures = [
                self._producer.send(
                    self.topic,
                    key=f"{key}#{i}".encode(),
                    value=chunk,
                    headers=[("snapshot", snapshot_id.encode())],
                )
                for i, chunk in enumerate(chunks or [b""])
            ]
            manifest = msgspec.json.encode({"snapshot": snapshot_id, "chunks": len(futures)})
            self._producer.flush(timeout=30)
            for f in futures:
                f.get(timeout=30)
            self._producer.send(self.topic, key=key.encode(), value=manifest).get(timeout=30)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise CheckpointError(f"cannot write checkpoint to topic {self.topic}: {exc}") from exc
        self._chunks[key] = len(futures)

    def delete(self, key: str) -> None:
        """Tombstones for ``key`` and its chunks: compaction then removes them."""
        chunks = self._chunks.pop(key, 1)
        names = [key, *(f"{key}#{i}" for i in range(chunks))]
        try:
            futures = [self._producer.send(self.topic, key=k.encode(), value=None) for k in names]
            self._producer.flush(timeout=30)
            for f in futures:
                f.get(timeout=30)
        except Exception as exc:
            raise CheckpointError(f"cannot delete {key} from topic {self.topic}: {exc}") from exc

    def keys(self, prefix: str) -> list[str]:
        return sorted(
            k.decode()
            for k in self._read_all()
            if b"#" not in k and k.decode("utf-8", "replace").startswith(prefix)
        )

    def load(self, key: str) -> bytes | None:
        latest = self._read_all()
        manifest = latest.get(key.encode())
        if manifest is None:
            return None
        info = msgspec.json.decode(manifest[1])
        parts = []
        for i in range(int(info["chunks"])):
            record = latest.get(f"{key}#{i}".encode())
            if record is None or record[0] != info["snapshot"].encode():
                raise CheckpointError(f"checkpoint {key} in {self.topic} is missing chunk {i}")
            parts.append(record[1])
        return b"".join(parts)

    def load_all(self, key: str) -> list[bytes]:
        """Compaction keeps one checkpoint per key: the newest, or nothing."""
        blob = self.load(key)
        return [] if blob is None else [blob]

    def _read_all(self) -> dict[bytes, tuple[bytes, bytes]]:
        """The newest (snapshot header, value) per record key, read from start to end."""
        try:
            return self._read_topic()
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise CheckpointError(
                f"cannot read checkpoints from topic {self.topic}: {exc}"
            ) from exc

    def _read_topic(self) -> dict[bytes, tuple[bytes, bytes]]:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * self.chunk_bytes,
            **self._client,
        )
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            latest: dict[bytes, tuple[bytes, bytes]] = {}
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for records in consumer.poll(timeout_ms=1000).values():
                    for r in records:
                        if r.value is None:  # a tombstone: deleted
                            latest.pop(r.key, None)
                            continue
                        header = dict(r.headers or []).get("snapshot", b"")
                        latest[r.key] = (header, r.value)
            return latest
        finally:
            consumer.close()

    def close(self) -> None:
        if self._producer_ is not None:
            self._producer_.close(timeout=10)
