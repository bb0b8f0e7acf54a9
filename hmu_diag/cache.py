"""Per-layer result cache, so an interrupted analysis resumes where it stopped.

Each finished layer's row (a dict of plain scalars) is stored as one JSON file under ``directory``, named by a key that
hashes everything the row depends on:

    key = sha256( {"source": fingerprint of the checkpoint bytes, "layer": layer id,
                   "options": the analysis options, "version": hmu_diag.__version__} as canonical JSON )

so editing the checkpoint, changing an option or upgrading hmu-diag can never return a stale row.  The fingerprint is
the sha256 of the file content (read in 1 MiB chunks, so memory stays flat on multi-GB files); for a directory or a
sharded set it is the sha256 of the sorted (relative name, member fingerprint) list; a ``*.safetensors.index.json``
path also covers the shards its ``weight_map`` names.  In-memory objects (modules, state dicts) have no fingerprint:
they are never cached.

Writes are atomic: the entry is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
the final name with ``os.replace`` (atomic on POSIX and Windows), and the folder is fsync'ed.  A crash at any point
leaves either no entry or the complete old/new one.  Reading never raises: a missing, truncated, corrupt or
foreign entry (JSON that does not parse, a wrong key, a checksum mismatch) reads as ``None``, i.e. "recompute".
Floats round-trip exactly, NaN and ±inf included (Python's JSON extension ``NaN``/``Infinity``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

CHUNK_BYTES = 1 << 20
FORMAT = 1
INDEX_SUFFIX = ".safetensors.index.json"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_members(members: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(sorted(members)).encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest identifying a checkpoint's content (file, directory, or sharded index json).

    A file hashes its bytes; a directory hashes the sorted list of (relative path, file fingerprint) of every regular
    file below it; a ``*.safetensors.index.json`` hashes itself together with the shard files named in its
    ``weight_map`` (so changing any shard changes the fingerprint).  Names and modification times do not matter,
    only content (and, for sets, the member names).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _sha256_members([(p.relative_to(path).as_posix(), _sha256_file(p)) for p in files])
    if path.name.endswith(INDEX_SUFFIX):
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return _sha256_file(path)
        members = [(path.name, _sha256_file(path))]
        members += [(name, _sha256_file(path.parent / name)) for name in shards if (path.parent / name).is_file()]
        return _sha256_members(members)
    return _sha256_file(path)


def source_fingerprint(source: Any) -> str | None:
    """Fingerprint of a checkpoint source, or None when it is not backed by files (in-memory objects are not cached).

    Accepts a path (file, directory, index json), a list/tuple of paths (the shards of one model: the sorted member
    fingerprints), a :class:`hmu_diag.load.ShardedCheckpoint` (its shard files and index json) or a
    :class:`hmu_diag.load.ModelRef` (its source).
    """
    from .load import ModelRef, ShardedCheckpoint

    if isinstance(source, ModelRef):
        return source_fingerprint(source.source)
    if isinstance(source, ShardedCheckpoint):
        return source_fingerprint([*source.files, *([source.index] if source.index is not None else [])])
    if isinstance(source, (str, os.PathLike)):
        return file_fingerprint(source) if Path(source).exists() else None
    if isinstance(source, (list, tuple)) and source and all(isinstance(p, (str, os.PathLike)) for p in source):
        if not all(Path(p).is_file() for p in source):
            return None
        return _sha256_members([(Path(p).name, file_fingerprint(p)) for p in source])
    return None


def _plain(value: Any) -> Any:
    """JSON encoder hook: numpy scalars and arrays to Python numbers/lists, tuples and paths to plain values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"cannot store a {type(value).__name__} in the result cache")


def _canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces; NaN/Infinity allowed) — the basis of every key and checksum."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=True)


def result_key(fingerprint: str, layer: str, options: dict[str, Any], *, version: str = __version__) -> str:
    """Cache key of one layer's row: sha256 of the canonical JSON of (fingerprint, layer, options, version).

    ``options`` is any JSON-able dict (numpy scalars, tuples allowed); its key order does not matter.
    """
    payload = {"source": fingerprint, "layer": layer, "options": options, "version": version}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


class ResultCache:
    """A folder of per-layer result rows keyed by :func:`result_key`; safe to share between processes.

    >>> cache = ResultCache(".hmu-cache")                                  # doctest: +SKIP
    >>> key = result_key(file_fingerprint("model.safetensors"), "fc1", {"conv": "flat"})   # doctest: +SKIP
    >>> cache.get(key) or cache.put(key, analyse("fc1"))                   # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ResultCache({str(self.directory)!r})"

    def path_for(self, key: str) -> Path:
        """File of an entry: ``<directory>/<key[:2]>/<key>.json``."""
        if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key {key!r} is not a hex digest")
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored row, or None when absent or unreadable in any way (the caller recomputes it)."""
        try:
            entry = json.loads(self.path_for(key).read_text(encoding="utf-8"))
            value = entry["value"]
            if entry["format"] != FORMAT or entry["key"] != key or not isinstance(value, dict):
                return None
            if entry["checksum"] != hashlib.sha256(_canonical(value).encode()).hexdigest():
                return None
            return value
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Store ``value`` (a dict of JSON-able scalars) atomically under ``key``; returns ``value``."""
        body = _canonical(value)
        entry = {"format": FORMAT, "key": key, "checksum": hashlib.sha256(body.encode()).hexdigest(),
                 "value": json.loads(body)}
        final = self.path_for(key)
        final.parent.mkdir(exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=final.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(_canonical(entry))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_directory(final.parent)
        return value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        """Number of entry files (readable or not)."""
        return sum(1 for path in self.directory.glob("??/*.json") if not path.name.startswith(".tmp-"))


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

