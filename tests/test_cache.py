"""ResultCache and fingerprints: exact round trips, atomic writes, keys that change with content/options, corrupt
entries read as misses.  References: hashlib.sha256 of the bytes, float identity (math.isnan / ==) of the stored values."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmu_diag.cache import ResultCache, file_fingerprint, result_key, source_fingerprint

ROW = {"layer": "blocks.0.attn:q", "alpha": 2.718281828459045, "xmin": 1e-300, "D": 0.0, "p_value": math.nan,
       "lambda_max": math.inf, "log_norm": -math.inf, "num_evals": 768, "warning": "", "ok": True, "note": None,
       "unicode": "α ≥ 2 — ü"}


def same(a: dict, b: dict) -> bool:
    """Equal keys and values, NaN equal to NaN, floats compared bit for bit (no tolerance)."""
    def equal(x, y):
        if isinstance(x, float) and math.isnan(x):
            return isinstance(y, float) and math.isnan(y)
        return x == y and type(x) is type(y)
    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


def test_round_trip_is_exact_including_nan_and_inf(tmp_path):
    cache = ResultCache(tmp_path)
    key = result_key("f" * 64, "fc1", {"conv": "flat"})
    assert cache.get(key) is None and key not in cache
    cache.put(key, ROW)
    assert same(cache.get(key), ROW)
    assert key in cache and len(cache) == 1
    # a second cache object on the same folder (a resumed run) sees it
    assert same(ResultCache(tmp_path).get(key), ROW)


def test_numpy_scalars_are_stored_as_plain_numbers(tmp_path):
    cache = ResultCache(tmp_path)
    key = result_key("0" * 64, "fc", {})
    cache.put(key, {"a": np.float64(0.1), "b": np.int64(7), "c": np.float32(0.5), "d": np.bool_(True)})
    assert cache.get(key) == {"a": 0.1, "b": 7, "c": 0.5, "d": True}
    assert type(cache.get(key)["b"]) is int


def test_unstorable_value_raises_and_leaves_nothing(tmp_path):
    cache = ResultCache(tmp_path)
    key = result_key("0" * 64, "fc", {})
    with pytest.raises(TypeError, match="cannot store a object"):
        cache.put(key, {"x": object()})
    assert cache.get(key) is None and not list(tmp_path.rglob(".tmp-*"))


def test_failure_before_replace_leaves_no_entry(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)
    key = result_key("a" * 64, "fc1", {})
    cache.put(key, {"alpha": 1.5})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put(key, {"alpha": 9.9})
    monkeypatch.undo()
    assert cache.get(key) == {"alpha": 1.5}  # the old complete entry, not a partial new one
    assert not list(tmp_path.rglob(".tmp-*"))


def test_process_killed_between_temp_write_and_replace(tmp_path):
    """A real crash (os._exit inside os.replace): the temp file stays behind, the entry does not exist."""
    key = result_key("b" * 64, "fc2", {"seed": 0})
    script = textwrap.dedent(f"""
        import os
        from hmu_diag.cache import ResultCache
        cache = ResultCache({str(tmp_path)!r})
        os.replace = lambda src, dst: os._exit(9)
        cache.put({key!r}, {{"alpha": 3.0}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    leftovers = list(tmp_path.rglob(".tmp-*"))
    assert len(leftovers) == 1 and json.loads(leftovers[0].read_text())["value"] == {"alpha": 3.0}
    cache = ResultCache(tmp_path)
    assert cache.get(key) is None and len(cache) == 0
    cache.put(key, {"alpha": 3.0})  # the resumed run recomputes and stores it
    assert cache.get(key) == {"alpha": 3.0}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bitflip", "wrong_key", "not_a_dict", "empty", "binary"])
def test_corrupt_entry_reads_as_a_miss_and_is_recomputed(tmp_path, damage):
    cache = ResultCache(tmp_path)
    key = result_key("c" * 64, "fc3", {})
    cache.put(key, {"alpha": 2.5, "xmin": 0.125})
    path = cache.path_for(key)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_text("{not json")
    elif damage == "bitflip":  # still valid JSON, a different number: caught by the checksum
        path.write_text(text.replace("2.5", "2.6"))
    elif damage == "wrong_key":  # an entry copied under another key
        other = result_key("d" * 64, "fc3", {})
        path.write_text(text.replace(key, other))
    elif damage == "not_a_dict":
        path.write_text("[1, 2, 3]")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(os.urandom(256))
    assert cache.get(key) is None
    cache.put(key, {"alpha": 2.5, "xmin": 0.125})
    assert cache.get(key) == {"alpha": 2.5, "xmin": 0.125}


def test_unreadable_entry_is_a_miss(tmp_path):
    cache = ResultCache(tmp_path)
    key = result_key("e" * 64, "fc", {})
    cache.path_for(key).parent.mkdir(parents=True)
    cache.path_for(key).mkdir()  # a folder where the file should be
    assert cache.get(key) is None


def test_keys_change_with_every_input_and_ignore_option_order():
    base = result_key("1" * 64, "fc1", {"conv": "flat", "seed": 0})
    assert base == result_key("1" * 64, "fc1", {"seed": 0, "conv": "flat"})
    assert base == hashlib.sha256(json.dumps(
        {"layer": "fc1", "options": {"conv": "flat", "seed": 0}, "source": "1" * 64,
         "version": __import__("hmu_diag").__version__}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    others = {result_key("2" * 64, "fc1", {"conv": "flat", "seed": 0}),
              result_key("1" * 64, "fc2", {"conv": "flat", "seed": 0}),
              result_key("1" * 64, "fc1", {"conv": "slices", "seed": 0}),
              result_key("1" * 64, "fc1", {"conv": "flat", "seed": 1}),
              result_key("1" * 64, "fc1", {"conv": "flat", "seed": 0, "xmax": None}),
              result_key("1" * 64, "fc1", {"conv": "flat", "seed": 0}, version="0.0.0")}
    assert base not in others and len(others) == 6


def test_file_fingerprint_is_sha256_of_content_chunked(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB chunks
    a = tmp_path / "a.bin"
    a.write_bytes(data)
    assert file_fingerprint(a) == hashlib.sha256(data).hexdigest()
    b = tmp_path / "b.bin"
    b.write_bytes(data)
    assert file_fingerprint(b) == file_fingerprint(a)  # content, not name
    b.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert file_fingerprint(b) != file_fingerprint(a)


def test_directory_and_sharded_index_fingerprints_follow_every_member(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model-00001-of-00002.safetensors").write_bytes(b"shard one")
    (model / "model-00002-of-00002.safetensors").write_bytes(b"shard two")
    index = model / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                "b": "model-00002-of-00002.safetensors"}}))
    dir_before, index_before = file_fingerprint(model), file_fingerprint(index)
    assert index_before != hashlib.sha256(index.read_bytes()).hexdigest()  # covers the shards, not just the json
    (model / "model-00002-of-00002.safetensors").write_bytes(b"shard TWO")
    assert file_fingerprint(model) != dir_before
    assert file_fingerprint(index) != index_before
    assert source_fingerprint(model) == file_fingerprint(model)
    shards = sorted(str(p) for p in model.glob("*.safetensors"))
    assert source_fingerprint(shards) == source_fingerprint(list(reversed(shards)))
    from hmu_diag.load import ModelRef, ShardedCheckpoint
    sharded = ShardedCheckpoint("model", tuple(Path(p) for p in shards), index)
    assert source_fingerprint(sharded) == source_fingerprint([*shards, index])
    before = source_fingerprint(sharded)
    assert source_fingerprint(ModelRef("model", sharded)) == before
    (model / "model-00001-of-00002.safetensors").write_bytes(b"shard ONE")
    assert source_fingerprint(sharded) != before  # recomputed from the content


def test_in_memory_and_missing_sources_are_not_cached(tmp_path):
    assert source_fingerprint({"w": np.zeros(3)}) is None
    assert source_fingerprint(object()) is None
    assert source_fingerprint(tmp_path / "missing.pt") is None
    assert source_fingerprint([]) is None


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=30),
                    st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(max_size=20), scalars, max_size=12), st.text(max_size=40))
def test_any_row_of_scalars_round_trips_exactly(tmp_path, row, layer):
    cache = ResultCache(tmp_path)
    key = result_key("9" * 64, layer, {"seed": 0})
    cache.put(key, row)
    assert same(cache.get(key), row)
