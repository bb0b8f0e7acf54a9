"""safetensors checkpoints, single files and sharded sets, read lazily one tensor at a time.

Tensors are fetched with ``safe_open(...).get_tensor(name)`` as the consumer asks for them (never
``load_file``), so peak memory is one tensor. Order: natural sort of the names (``layers.2`` before
``layers.10``), the same for a single file and for any sharding of it.

Sharded sets (one model):

* ``<stem>.safetensors.index.json`` with a ``weight_map`` {tensor name: shard file} (Hugging Face layout);
* without an index, ``<stem>-00001-of-00003.safetensors`` ... ``<stem>-00003-of-00003.safetensors``;
  every shard must be present.

The same two layouts of ``.bin`` shards (``pytorch_model.bin.index.json``) are loaded shard by shard with
``torch.load`` (one shard in memory at a time).
"""
from __future__ import annotations

from collections import Counter

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from hmu_diag.errors import CheckpointError
from hmu_diag.load.module import clean_name
from hmu_diag.load.records import TensorRecord
from hmu_diag.load.safety import sniff_format
from hmu_diag.load.torch_pickle import iter_pickle

SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d+)-of-(?P<total>\d+)\.(?P<ext>safetensors|bin)$")


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as integers: ``h.2`` < ``h.10``."""
    return tuple(int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class ShardedCheckpoint:
    """A sharded checkpoint: ``files`` (sorted shard paths) and the ``index`` json naming which shard holds each
    tensor (None: every shard's own key list is used)."""

    name: str
    files: tuple[Path, ...]
    index: Path | None = None

    def __repr__(self) -> str:
        where = self.index if self.index else self.files[0].parent
        return f"ShardedCheckpoint({self.name!r}, {len(self.files)} shards in {str(where)!r})"


def _safe_open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # SafetensorError, OSError
        raise CheckpointError(f"{path}: corrupt safetensors file ({str(exc).splitlines()[0][:200]})") from None


def _get(handle, path: Path, name: str):
    try:
        return handle.get_tensor(name)
    except Exception as exc:  # SafetensorError on a truncated data section
        raise CheckpointError(f"{path}: cannot read tensor {name!r} ({str(exc).splitlines()[0][:200]})") from None


def iter_safetensors(path: Path) -> Iterator[TensorRecord]:
    """Stream one safetensors file lazily."""
    with _safe_open(path) as handle:
        for name in sorted(handle.keys(), key=natural_key):
            yield TensorRecord(clean_name(name), _get(handle, path, name), None, False)


def read_index(index: Path) -> dict[str, Path]:
    """The ``weight_map`` of a shard index as {tensor name: shard path}, checking every shard exists."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a shard index with a weight_map ({exc!r})") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{index}: weight_map is empty or not a mapping of tensor names to shard files")
    resolved = {name: index.parent / shard for name, shard in weight_map.items()}
    missing = sorted({str(p.name) for p in resolved.values() if not p.is_file()})
    if missing:
        raise CheckpointError(f"{index}: missing shard file(s) {', '.join(missing)}")
    return resolved


def sharded_from_index(index: Path) -> ShardedCheckpoint:
    """The ShardedCheckpoint described by an ``*.index.json`` file."""
    files = tuple(sorted(set(read_index(index).values())))
    return ShardedCheckpoint(index.name.removesuffix(".index.json"), files, index)


def group_shards(paths: list[Path]) -> tuple[list[ShardedCheckpoint], list[Path]]:
    """Split ``paths`` into complete ``-0000i-of-0000n`` shard sets and the remaining single files."""
    groups: dict[tuple[Path, str, str, int], list[Path]] = {}
    singles = []
    for path in paths:
        match = SHARD_RE.match(path.name)
        if match:
            key = (path.parent, match["stem"], match["ext"], int(match["total"]))
            groups.setdefault(key, []).append(path)
        else:
            singles.append(path)
    sets = []
    for (parent, stem, ext, total), files in sorted(groups.items()):
        present = {int(SHARD_RE.match(f.name)["index"]) for f in files}
        missing = sorted(set(range(1, total + 1)) - present)
        if missing:
            raise CheckpointError(f"{parent / stem}-*-of-{total:05d}.{ext}: missing shard(s) {missing}")
        sets.append(ShardedCheckpoint(f"{stem}.{ext}", tuple(sorted(files))))
    return sets, singles


def iter_sharded(ckpt: ShardedCheckpoint, *, trust_pickle: bool = False) -> Iterator[TensorRecord]:
    """Stream a sharded checkpoint: safetensors lazily across shards in natural name order; ``.bin`` shards
    one shard at a time.  A shard is closed as soon as its last tensor has been read, so memory held through the
    memory-mapped handles stays near one shard's worth for checkpoints whose shards hold contiguous layers."""
    if ckpt.files[0].suffix == ".bin":
        for shard in ckpt.files:
            yield from iter_pickle(shard, sniff_format(shard), trust_pickle=trust_pickle)
        return
    if ckpt.index is not None:
        owner = read_index(ckpt.index)
    else:
        owner = {}
        for shard in ckpt.files:
            with _safe_open(shard) as handle:
                owner.update({name: shard for name in handle.keys()})
    remaining = Counter(owner.values())
    handles: dict[Path, object] = {}
    try:
        for name in sorted(owner, key=natural_key):
            shard = owner[name]
            if shard not in handles:
                handles[shard] = _safe_open(shard).__enter__()
            tensor = _get(handles[shard], shard, name)
            remaining[shard] -= 1
            if remaining[shard] == 0:
                handles.pop(shard).__exit__(None, None, None)
            yield TensorRecord(clean_name(name), tensor, None, False)
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
