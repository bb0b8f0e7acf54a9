"""Find the models in a directory: every checkpoint file is one model, a sharded set is one model.

Checkpoint files are recognised by extension (``.pt .pth .bin .ckpt .safetensors .jit .torchscript .pkl
.pickle``), searched recursively, in natural path order; hidden folders and files are ignored. Shards listed by
an ``*.index.json`` and ``-0000i-of-0000n`` file sets are grouped (see
:mod:`hmu_diag.load.safetensors_io`). A model's name is its path relative to the directory (for a sharded set,
the index name without ``.index.json`` or ``<stem>.<ext>``).

Hugging Face folders often hold the same weights twice, ``model.safetensors`` and ``pytorch_model.bin`` (each
possibly sharded).  Like ``transformers``, only the safetensors copy is read; the other is listed as a
:class:`~hmu_diag.load.records.DuplicateCheckpoint`, so it still gets a row saying why it was not analysed.
"""
from __future__ import annotations

from pathlib import Path

from hmu_diag.errors import CheckpointError
from hmu_diag.load.records import DuplicateCheckpoint, ModelRef
from hmu_diag.load.safetensors_io import ShardedCheckpoint, group_shards, natural_key, read_index

CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".jit", ".torchscript", ".pkl",
                                 ".pickle"})


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def discover(directory: Path) -> list[ModelRef]:
    """One ModelRef per checkpoint (or sharded set) under ``directory``; CheckpointError if there is none."""
    files = sorted((p for p in directory.rglob("*") if p.is_file() and _visible(p, directory)),
                   key=lambda p: natural_key(str(p)))
    refs: list[ModelRef] = []
    claimed: set[Path] = set()
    for index in (p for p in files if p.name.endswith(".index.json")):
        shard_set = ShardedCheckpoint(_relative(index, directory).removesuffix(".index.json"),
                                      tuple(sorted(set(read_index(index).values()))), index)
        claimed.update(shard_set.files)
        refs.append(ModelRef(shard_set.name, shard_set))
    candidates = [p for p in files if p.suffix in CHECKPOINT_SUFFIXES and p not in claimed]
    shard_sets, singles = group_shards(candidates)
    for shard_set in shard_sets:
        name = _relative(shard_set.files[0].parent / shard_set.name, directory)
        refs.append(ModelRef(name, ShardedCheckpoint(name, shard_set.files)))
    refs.extend(ModelRef(_relative(p, directory), p) for p in singles)
    if not refs:
        raise CheckpointError(f"{directory}: no checkpoint files found (looked for "
                              f"{' '.join(sorted(CHECKPOINT_SUFFIXES))})")
    return sorted(_hugging_face_duplicates(refs), key=lambda r: natural_key(r.name))


def _hugging_face_duplicates(refs: list[ModelRef]) -> list[ModelRef]:
    """``<dir>/pytorch_model.bin`` (single or sharded) beside ``<dir>/model.safetensors``: the former becomes a
    :class:`DuplicateCheckpoint` of the latter (module docstring)."""
    names = {r.name for r in refs}
    out = []
    for ref in refs:
        parent, _, base = ref.name.rpartition("/")
        twin = f"{parent}/model.safetensors" if parent else "model.safetensors"
        if base == "pytorch_model.bin" and twin in names:
            ref = ModelRef(ref.name, DuplicateCheckpoint(ref.source, f"{ref.name}: the same weights as {twin} "
                                                         "(Hugging Face saves both; like transformers, hmu-diag reads "
                                                         "the safetensors copy)"))
        out.append(ref)
    return out


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
