"""Untrusted and broken files: a real code-executing pickle is refused (nothing runs), loads only when trusted;
corrupt, truncated, empty and wrong-format files give a one-line CheckpointError naming the file."""
from __future__ import annotations

import pickle
import zipfile

import pytest
import safetensors.torch
import torch

from hmu_diag.errors import CheckpointError, UnsafePickleError
from hmu_diag.load import iter_tensors, list_models
from hmu_diag.load.safety import sniff_format

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class MarkerPayload:
    """Unpickling this runs ``exec`` and creates the file ``marker`` (a real arbitrary-code payload)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def malicious_files(folder):
    """The payload next to a real weight, as a torch.save zip, a legacy torch.save, and a raw pickle."""
    marker = folder / "marker"
    obj = {"fc.weight": torch.randn(16, 12), "payload": MarkerPayload(marker)}
    torch.save(obj, folder / "evil.pt")
    torch.save(obj, folder / "evil_legacy.pth", _use_new_zipfile_serialization=False)
    with (folder / "evil.pkl").open("wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return marker, ["evil.pt", "evil_legacy.pth", "evil.pkl"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_malicious_pickle_refused_and_nothing_runs(tmp_path, index):
    marker, names = malicious_files(tmp_path)
    path = tmp_path / names[index]
    with pytest.raises(UnsafePickleError) as err:
        list(iter_tensors(path))
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "exec" in message
    assert "trust_pickle=True" in message and "--trust-pickle" in message
    assert not marker.exists()


@pytest.mark.parametrize("index", [0, 1])
def test_malicious_pickle_with_placeholders_gives_the_weights_and_runs_nothing(tmp_path, index):
    """trust_pickle="stubs": torch's weights-only unpickler with ``builtins.exec`` allowed only as an inert
    placeholder class - the weight loads, the payload is a stored (exec, args) record, no file is written."""
    from hmu_diag.load.torch_pickle import Placeholder, load_object

    marker, names = malicious_files(tmp_path)
    path = tmp_path / names[index]
    with pytest.warns(UserWarning, match=r"1 class\(es\) that need code replaced by inert placeholders \(builtins.exec\)"):
        records = list(iter_tensors(path, trust_pickle="stubs"))
    assert [r.name for r in records] == ["fc.weight"] and records[0].tensor.shape == (16, 12)
    assert not marker.exists()
    with pytest.warns(UserWarning):
        obj = load_object(path, sniff_format(path), trust_pickle="stubs")
    assert isinstance(obj["payload"], Placeholder) and "pwned" in obj["payload"].args[0]


def test_placeholders_are_refused_for_raw_pickles_and_bad_values(tmp_path):
    marker, names = malicious_files(tmp_path)
    with pytest.raises(UnsafePickleError, match="exec"):
        list(iter_tensors(tmp_path / "evil.pkl", trust_pickle="stubs"))    # raw pickle: no restricted unpickler
    from hmu_diag.errors import OptionError
    with pytest.raises(OptionError, match="trust_pickle='yes'"):
        list(iter_tensors(tmp_path / "evil.pt", trust_pickle="yes"))
    assert not marker.exists()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_malicious_pickle_loads_when_trusted(tmp_path, index):
    marker, names = malicious_files(tmp_path)
    with pytest.warns(UserWarning, match="weights_only=False"):
        records = list(iter_tensors(tmp_path / names[index], trust_pickle=True))
    assert marker.read_text() == "pwned"  # the code did run: trust really means trust
    assert [r.name for r in records] == ["fc.weight"] and records[0].tensor.shape == (16, 12)


def test_directory_listing_and_format_sniffing_do_not_unpickle(tmp_path):
    marker, names = malicious_files(tmp_path)
    assert sorted(m.name for m in list_models(tmp_path)) == sorted(names)
    assert [sniff_format(tmp_path / n) for n in names] == ["torch-zip", "torch-legacy", "pickle"]
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 3)), str(tmp_path / "scripted.pt"))
    assert sniff_format(tmp_path / "scripted.pt") == "torchscript"
    assert not marker.exists()


def test_full_model_pickle_names_the_class(tmp_path):
    torch.save(torch.nn.Linear(12, 12), tmp_path / "model.pt")
    with pytest.raises(UnsafePickleError, match=r"model\.pt: .*torch\.nn\.modules\.linear\.Linear"):
        list(iter_tensors(tmp_path / "model.pt"))


def test_import_free_raw_pickle_is_read(tmp_path):
    """A pickle without any import cannot run code; it is read (and has no tensors)."""
    with (tmp_path / "plain.pkl").open("wb") as fh:
        pickle.dump({"epoch": 3, "lr": 0.1}, fh)
    with pytest.raises(CheckpointError, match=r"plain\.pkl: no tensors found"):
        list(iter_tensors(tmp_path / "plain.pkl"))


def good_files(folder):
    sd = {"fc.weight": torch.randn(64, 48), "fc.bias": torch.randn(64)}
    torch.save(sd, folder / "good.pt")
    torch.save(sd, folder / "good_legacy.pt", _use_new_zipfile_serialization=False)
    safetensors.torch.save_file(sd, str(folder / "good.safetensors"))
    with (folder / "good.pkl").open("wb") as fh:
        pickle.dump({"a": 1.5, "b": [1, 2, 3] * 100}, fh)
    return ["good.pt", "good_legacy.pt", "good.safetensors", "good.pkl"]


def assert_one_line_error(path, exc_type=CheckpointError, match=None):
    with pytest.raises(exc_type) as err:
        list(iter_tensors(path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    if match:
        assert match in message, message
    return message


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_files(tmp_path, fraction):
    for name in good_files(tmp_path):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: max(1, int(len(data) * fraction))])
        assert_one_line_error(cut)


def _data_pkl_offset(path) -> int:
    """Byte offset of the pickle stream of ``data.pkl`` inside a torch.save zip (stored uncompressed)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)


@pytest.mark.parametrize("where", [20, 40])
def test_corrupt_pickle_inside_zip(tmp_path, where):
    good_files(tmp_path)
    data = bytearray((tmp_path / "good.pt").read_bytes())
    start = _data_pkl_offset(tmp_path / "good.pt") + where
    data[start: start + 8] = b"\xfe" * 8
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    message = assert_one_line_error(tmp_path / "bad.pt")
    assert "trust" not in message  # corruption is not a safety refusal


@pytest.mark.parametrize("where", [30, 100])
def test_corrupt_legacy_pickle(tmp_path, where):
    good_files(tmp_path)
    data = bytearray((tmp_path / "good_legacy.pt").read_bytes())
    data[where: where + 8] = b"\xfe" * 8
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    assert_one_line_error(tmp_path / "bad.pt")


def test_zip_member_name_that_is_not_utf8(tmp_path):
    """A damaged central directory whose member name is flagged UTF-8 but is not (zipfile raises UnicodeDecodeError;
    found by the hypothesis test of damaged checkpoints)."""
    good_files(tmp_path)
    data = bytearray((tmp_path / "good.pt").read_bytes())
    entry = data.index(b"PK\x01\x02")                              # the first central-directory record
    data[entry + 9] |= 0x08                                          # general-purpose flag bit 11: the name is UTF-8
    data[entry + 46] = 0xB7                                          # its first byte: not valid UTF-8
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    assert_one_line_error(tmp_path / "bad.pt", match="corrupt zip archive (UnicodeDecodeError")


def test_corrupt_safetensors_offsets(tmp_path):
    """Header offsets that point past the data section."""
    good_files(tmp_path)
    data = (tmp_path / "good.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8: 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[9,')
    assert header != data[8: 8 + n]
    (tmp_path / "bad.safetensors").write_bytes(data[:8] + header + data[8 + n:])
    assert_one_line_error(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file (0 bytes)"),
    (b"hello world, this is text\n", "not a recognised checkpoint format"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "not a recognised checkpoint format"),
    (b"PK\x03\x04garbage", "zip archive"),
    (b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}', "truncated safetensors"),
])
def test_empty_and_wrong_format(tmp_path, content, expected):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    assert_one_line_error(path, match=expected)


@pytest.mark.parametrize("name", ["model.onnx", "model.gguf"])
def test_other_frameworks_files_say_so(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x08\x08\x12\x04spox" + b"\0" * 64)        # the start of a real ONNX file
    message = assert_one_line_error(path, match=f"{name.split('.')[1].upper()} files are not read")
    assert "PyTorch checkpoints" in message


def test_missing_and_directory_without_checkpoints(tmp_path):
    assert_one_line_error(tmp_path / "nope.pt", match="no such file")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint files found"):
        list_models(tmp_path / "empty_dir")


def test_zip_without_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as zf:
        zf.writestr("archive/readme.txt", "not a checkpoint")
    assert_one_line_error(tmp_path / "x.pt", match="without data.pkl")


def test_safetensors_bad_header(tmp_path):
    header = b'{"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]'  # unterminated JSON
    (tmp_path / "bad.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    assert_one_line_error(tmp_path / "bad.safetensors", match="corrupt safetensors")
