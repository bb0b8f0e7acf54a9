"""Write a deterministic multi-GB sharded safetensors checkpoint (shards + ``model.safetensors.index.json``).

The tensors are generated and written in row chunks of about 16 MB, so generating a 3 GB checkpoint needs ~16 MB of
memory on top of the interpreter: only the benchmark that reads it should show the checkpoint's size in its RSS.

Presets (``--preset``):

* ``tall`` (default): wide-but-few-column matrices (e.g. 131072 x 512) — gigabytes on disk but cheap eigenproblems
  (cost N·M²), so a memory benchmark finishes in minutes on 2 cores.  The first tensor, ``embed_tokens.weight``, is
  the largest matrix (``--largest-mb``); the others are ``--matrix-mb`` each, with M cycling over 128/256/512; each
  block also has a 1-D bias (which the walker skips).
* ``llama``: Llama-shaped blocks (hidden h, MLP 2.6875·h, vocab 32000; q/k/v/o, gate/up/down, RMSNorm weights) —
  realistic shapes, but each 4096-wide layer costs seconds to minutes on a CPU.

Entries are N(0, 1/cols) (Marchenko-Pastur noise), drawn from ``torch.Generator().manual_seed(seed + tensor index)``
chunk by chunk, so the same arguments always give byte-identical files.

    python benchmarks/make_sharded_checkpoint.py /tmp/ckpt --size-gb 2.5 --shards 4
"""
from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path

import torch

DTYPES = {"float32": (torch.float32, "F32"), "bfloat16": (torch.bfloat16, "BF16"), "float16": (torch.float16, "F16")}
CHUNK_BYTES = 16 << 20
INDEX_NAME = "model.safetensors.index.json"


Layout = list[tuple[str, tuple[int, ...]]]


def tall_layout(total_bytes: int, itemsize: int, matrix_mb: float, largest_mb: float) -> Layout:
    """Names and shapes of the ``tall`` preset: one largest matrix, then blocks of one matrix + one bias."""
    def matrix(mb: float, cols: int) -> tuple[int, int]:
        return (max(cols, int(mb * (1 << 20) / itemsize / cols)), cols)

    layout = [("embed_tokens.weight", matrix(largest_mb, 512))]
    used = math.prod(layout[0][1]) * itemsize
    i = 0
    while used < total_bytes:
        shape = matrix(matrix_mb, (128, 256, 512)[i % 3])
        layout += [(f"layers.{i}.proj.weight", shape), (f"layers.{i}.proj.bias", (shape[0],))]
        used += (math.prod(shape) + shape[0]) * itemsize
        i += 1
    return layout


def llama_layout(total_bytes: int, itemsize: int, hidden: int) -> Layout:
    """Names and shapes of the ``llama`` preset: embeddings, then decoder blocks until the size is reached."""
    inter, vocab = int(hidden * 2.6875) // 64 * 64, 32000
    layout = [("model.embed_tokens.weight", (vocab, hidden))]
    used = vocab * hidden * itemsize
    i = 0
    while used < total_bytes:
        p = f"model.layers.{i}."
        block = [(p + f"self_attn.{x}_proj.weight", (hidden, hidden)) for x in "qkvo"]
        block += [(p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                  (p + "mlp.down_proj.weight", (hidden, inter)), (p + "input_layernorm.weight", (hidden,)),
                  (p + "post_attention_layernorm.weight", (hidden,))]
        layout += block
        used += sum(math.prod(s) for _, s in block) * itemsize
        i += 1
    return layout + [("lm_head.weight", (vocab, hidden))]


def split_shards(layout: Layout, n_shards: int, itemsize: int) -> list[Layout]:
    """Consecutive tensors into ``n_shards`` groups of about equal byte size (no group empty)."""
    sizes = [math.prod(shape) * itemsize for _, shape in layout]
    target = sum(sizes) / n_shards
    shards: list[list] = [[]]
    filled = 0
    for item, size in zip(layout, sizes):
        if filled >= target * len(shards) and len(shards) < n_shards:
            shards.append([])
        shards[-1].append(item)
        filled += size
    return [s for s in shards if s]


def write_tensor(handle, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> None:
    """Stream N(0, 1/cols) entries of ``shape`` to ``handle`` in row chunks (deterministic for ``seed``)."""
    rows, cols = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, shape[0])
    itemsize = torch.finfo(dtype).bits // 8
    step = max(1, CHUNK_BYTES // (cols * itemsize))
    generator = torch.Generator().manual_seed(seed)
    scale = 1.0 / math.sqrt(cols)
    for start in range(0, rows, step):
        chunk = torch.randn(min(step, rows - start), cols, generator=generator) * scale
        handle.write(chunk.to(dtype).view(torch.uint8).numpy().tobytes())


def write_shard(path: Path, tensors: Layout, dtype: torch.dtype, tag: str,
                first_index: int, seed: int) -> int:
    """One safetensors file: 8-byte header length, JSON header (offsets), then the tensors' bytes in order."""
    itemsize = torch.finfo(dtype).bits // 8
    header: dict[str, object] = {"__metadata__": {"format": "pt", "generator": "hmu-diag make_sharded_checkpoint"}}
    offset = 0
    for name, shape in tensors:
        size = math.prod(shape) * itemsize
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the spec allows space padding; 8-byte alignment of the data
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for i, (_, shape) in enumerate(tensors):
            write_tensor(handle, shape, dtype, seed + first_index + i)
    return offset


def make_checkpoint(out: Path, *, size_gb: float = 2.5, shards: int = 4, dtype: str = "float32", preset: str = "tall",
                    matrix_mb: float = 128, largest_mb: float = 512, hidden: int = 2048, seed: int = 0) -> dict:
    """Write the checkpoint into ``out``; return a summary (files, total bytes, largest matrix)."""
    tdtype, tag = DTYPES[dtype]
    itemsize = torch.finfo(tdtype).bits // 8
    total = int(size_gb * (1 << 30))
    layout = (tall_layout(total, itemsize, matrix_mb, largest_mb) if preset == "tall"
              else llama_layout(total, itemsize, hidden))
    groups = split_shards(layout, shards, itemsize)
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    data_bytes = 0
    index = 0
    for number, group in enumerate(groups, start=1):
        name = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        data_bytes += write_shard(out / name, group, tdtype, tag, index, seed)
        weight_map.update({tensor: name for tensor, _ in group})
        index += len(group)
    (out / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": data_bytes}, "weight_map": weight_map},
                                             indent=2, sort_keys=True))
    largest_name, largest_shape = max(layout, key=lambda item: math.prod(item[1]))
    return {"folder": str(out), "shards": len(groups), "tensors": len(layout), "dtype": dtype, "preset": preset,
            "total_bytes": data_bytes, "largest_matrix": largest_name, "largest_shape": list(largest_shape),
            "largest_bytes": math.prod(largest_shape) * itemsize}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the shards and the index json into")
    parser.add_argument("--size-gb", type=float, default=2.5, help="approximate total size (default 2.5)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--preset", choices=("tall", "llama"), default="tall")
    parser.add_argument("--matrix-mb", type=float, default=128, help="tall preset: size of each block matrix")
    parser.add_argument("--largest-mb", type=float, default=512, help="tall preset: size of the largest matrix")
    parser.add_argument("--hidden", type=int, default=2048, help="llama preset: hidden size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = make_checkpoint(args.out, size_gb=args.size_gb, shards=args.shards, dtype=args.dtype,
                              preset=args.preset, matrix_mb=args.matrix_mb, largest_mb=args.largest_mb,
                              hidden=args.hidden, seed=args.seed)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
