"""Identify a checkpoint file's format from its bytes, without executing anything, and turn loader failures into
one-line :class:`~hmu_diag.errors.CheckpointError` / :class:`~hmu_diag.errors.UnsafePickleError` messages.

Formats recognised (by content, never by extension):

=================  =====================================================================================
``"safetensors"``  8-byte little-endian header length ``n`` (``0 < n <= size - 8``), then ``{`` (JSON header)
``"torchscript"``  a zip archive with a ``<root>/code/`` folder or ``<root>/constants.pkl`` (``torch.jit.save``)
``"torch-zip"``    any other zip archive with a ``<root>/data.pkl`` (``torch.save``, PyTorch >= 1.6)
``"torch-legacy"`` a pickle starting with torch's magic number 0x1950a86a20f9469cfc6c (old ``torch.save``)
``"pickle"``       any other pickle (first byte ``0x80``, protocol 2-5): a raw ``pickle.dump``
=================  =====================================================================================
"""
from __future__ import annotations

import pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path

from hmu_diag.errors import CheckpointError, UnsafePickleError

#: ``pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)`` without the STOP opcode: how every legacy torch file starts.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

TRUST_HINT = ("pass trust_pickle='stubs' (CLI: --stub-pickle) to read its tensors with those objects replaced by "
              "inert placeholders (nothing runs), or trust_pickle=True (--trust-pickle) only if you trust this file")


def sniff_format(path: Path) -> str:
    """Return the format of the checkpoint at ``path`` (see the module table); raise CheckpointError otherwise.

    Reads at most the first 16 bytes and, for zip archives, the central directory; nothing is unpickled.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes)")
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK"):
        return _zip_format(path)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{":
            if header_len > size - 8:
                raise CheckpointError(
                    f"{path}: truncated safetensors file (header says {header_len} bytes, file has {size - 8})")
            return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if path.suffix.lower() in (".onnx", ".h5", ".keras", ".gguf", ".tflite"):
        raise CheckpointError(f"{path}: {path.suffix.lstrip('.').upper()} files are not read; hmu-diag reads PyTorch "
                              "checkpoints (torch.save, TorchScript, safetensors): analyse the PyTorch original, or save "
                              "its weights as a state dict")
    raise CheckpointError(f"{path}: not a recognised checkpoint format (starts with {head[:8]!r}); "
                          "expected a torch.save / TorchScript / safetensors / pickle file")


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:     # ValueError: e.g. a damaged UTF-8 member name
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({type(exc).__name__}: {exc})") from None
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch-zip"
    raise CheckpointError(f"{path}: zip archive without data.pkl: not a torch checkpoint")


_GLOBAL_RE = re.compile(r"(?:Unsupported global: GLOBAL|Trying to load unsupported GLOBAL) (\S+)")


def refused_global(exc: BaseException) -> str | None:
    """The ``module.name`` that ``torch.load(weights_only=True)`` refused to import, from its error, or None."""
    match = _GLOBAL_RE.search(str(exc))
    if not match:
        return None
    return match.group(1) if "." in match.group(1) else f"builtins.{match.group(1)}"


def checkpoint_error(path: Path, exc: BaseException) -> CheckpointError:
    """Map an exception raised while reading ``path`` to a one-line CheckpointError (UnsafePickleError when
    ``torch.load(weights_only=True)`` refused a global)."""
    text = str(exc)
    name = refused_global(exc)
    if name is not None:
        return UnsafePickleError(f"{path}: refusing to unpickle: it needs code ({name}) to load; {TRUST_HINT}")
    if "WeightsUnpickler error:" in text:  # a broken opcode stream, not a forbidden import
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        return CheckpointError(f"{path}: corrupt or unsupported pickle ({detail})")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {first[:200]})")


def pickle_globals(path: Path) -> list[str]:
    """Every ``module.name`` a raw pickle imports (GLOBAL / STACK_GLOBAL / INST opcodes), found by scanning the
    opcode stream with :func:`pickletools.genops` — nothing is executed."""
    found: list[str] = []
    strings: list[str] = []
    try:
        with path.open("rb") as fh:
            for opcode, arg, _ in pickletools.genops(fh):
                if opcode.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except (ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({exc})") from None
    return found


def refuse_raw_pickle(path: Path) -> None:
    """Raise UnsafePickleError when the raw pickle at ``path`` imports anything (an import means code runs on
    load); a pickle without imports can only build plain containers and numbers and is let through."""
    names = pickle_globals(path)
    if names:
        plain = ("torch.", "collections.")
        offender = next((n for n in names if not n.startswith(plain)), names[0])
        raise UnsafePickleError(
            f"{path}: refusing to unpickle a raw pickle: it needs code ({offender}) to load; {TRUST_HINT}")
