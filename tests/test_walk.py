"""Walker rules (hmu_diag/walk.py table), one test or more per rule.

References: slices of the original tensors; torch's own LSTM/GRU/MultiheadAttention forward passes (the split
parts, used as separate gate/projection matrices, must reproduce them); GPT-2/timm fused-QKV semantics
(``x @ W`` then split); WeightWatcher 0.7.7's pooled conv2d ESD.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmu_diag.errors import OptionError
from hmu_diag.load import TensorRecord, iter_tensors
from hmu_diag.walk import LayerMatrix, layer_name, walk


def rec(name: str, tensor: torch.Tensor, module_type: str | None = None, is_buffer: bool = False) -> TensorRecord:
    return TensorRecord(name, tensor, module_type, is_buffer)


def one(record: TensorRecord, **options) -> LayerMatrix:
    out = list(walk([record], **options))
    assert len(out) == 1, out
    return out[0]


def parts(records, **options) -> dict[str, LayerMatrix]:
    return {m.layer: m for m in walk(records, **options)}


# --- rules 1-6: skip records, never silently dropped ------------------------------------------------------

@pytest.mark.parametrize("tensor, module_type, is_buffer, reason", [
    (torch.tensor(3.0), None, False, "scalar"),
    (torch.ones(20, 20, dtype=torch.int64), None, False, "integer dtype (torch.int64)"),
    (torch.ones(20, 20, dtype=torch.bool), None, False, "bool dtype"),
    (torch.ones(20, 20, dtype=torch.complex64), None, False, "complex dtype (torch.complex64)"),
    *[(torch.randn(20, 20).to(dtype), "Linear", False,
       f"quantised float dtype ({dtype}): its scales are stored separately; dequantise the checkpoint first")
      for dtype in (torch.float8_e4m3fn, torch.float8_e5m2)],
    (torch.randn(258, 1, 256), "STFT", True, "buffer"),
    (torch.randn(32), "LayerNorm", False, "normalisation layer"),
    (torch.randn(32), None, False, "1-D tensor"),
    (torch.randn(32), "PReLU", False, "1-D tensor"),
    (torch.randn(20, 20).index_put_((torch.tensor([3]), torch.tensor([4])), torch.tensor(float("nan"))),
     "Linear", False, "contains NaN/Inf"),
    (torch.full((20, 20), float("inf")), None, False, "contains NaN/Inf"),
    (torch.empty(20, 20, device="meta"), None, False, "meta tensor (no data)"),
])
def test_skip_records(tensor, module_type, is_buffer, reason):
    m = one(rec("block.x.weight", tensor, module_type, is_buffer))
    assert m.skip_reason == reason and m.matrices is None
    assert m.layer == "block.x" and m.param == "block.x.weight" and m.shape == tuple(tensor.shape)
    assert m.kind == "other"


def test_a_tensor_torch_cannot_process_is_a_skip_record_not_an_exception(monkeypatch):
    """A dtype without CPU kernels (as float8 had for ``sum``) must not stop the walk: the tensor is reported with the
    reason and the next tensors are walked."""
    import hmu_diag.walk as walk_module

    def no_kernel(t):
        raise NotImplementedError("\"sum_cpu\" not implemented for 'Float8_e4m3fn'\nmore detail")

    monkeypatch.setattr(walk_module, "_has_nonfinite", no_kernel)
    first, second = walk([rec("a.weight", torch.randn(20, 20)), rec("b.weight", torch.randn(30, 20))])
    assert first.matrices is None and first.skip_reason == (
        "cannot be read as a matrix (NotImplementedError: \"sum_cpu\" not implemented for 'Float8_e4m3fn')")
    assert second.layer == "b" and second.skip_reason is not None          # walked too, with its own reason


def test_huge_finite_values_are_not_nonfinite():
    """Entries near the float64 limit overflow the quick sum test; the exact check must still pass them."""
    w = torch.full((20, 20), 1e308, dtype=torch.float64)
    assert one(rec("fc.weight", w)).skip_reason is None


def test_every_tensor_gives_a_record():
    net = nn.Sequential(nn.Linear(20, 30), nn.BatchNorm1d(30), nn.PReLU(30), nn.Linear(30, 5))
    out = list(walk(iter_tensors(net)))
    assert {m.param for m in out} == set(net.state_dict())
    analysed = [m.layer for m in out if m.skip_reason is None]
    assert analysed == ["0"]  # "3" is 5 x 30: 5 eigenvalues < 10
    assert {m.layer: m.skip_reason for m in out}["3"] == "fewer than 10 eigenvalues (5)"


# --- rule 12: linear, and views are views -----------------------------------------------------------------

@pytest.mark.parametrize("module_type", ["Linear", None, "Conv1D", "MyCustomBlock"])
def test_linear_as_stored(module_type):
    w = torch.randn(30, 20)
    m = one(rec("fc.weight", w, module_type))
    assert (m.kind, m.part, m.layer, m.view) == ("linear", "", "fc", "30 x 20 (as stored)")
    assert m.matrices.shape == (1, 30, 20) and torch.equal(m.matrices[0], w)
    assert m.matrices.data_ptr() == w.data_ptr()  # a view, no copy


# --- rule 11: convolutions --------------------------------------------------------------------------------

@pytest.mark.parametrize("module_type", ["Conv2d", None])
def test_conv2d_flat_and_slices(module_type):
    w = torch.randn(16, 8, 3, 5)
    flat = one(rec("c.weight", w, module_type))
    assert flat.kind == "conv2d" and flat.view == "16 x 120 (out x in*kh*kw)"
    assert torch.equal(flat.matrices[0], w.reshape(16, 120))
    sl = one(rec("c.weight", w, module_type), conv="slices")
    assert sl.kind == "conv2d" and sl.view == "15 slices of 16 x 8 (out x in)" and sl.matrices.shape == (15, 16, 8)
    for i in range(3):
        for j in range(5):
            assert torch.equal(sl.matrices[i * 5 + j], w[:, :, i, j])


@pytest.mark.parametrize("shape, kind", [((16, 8, 3), "conv1d"), ((12, 4, 2, 3, 3), "conv3d")])
def test_conv1d_conv3d(shape, kind):
    w = torch.randn(*shape)
    flat = one(rec("c.weight", w))
    assert flat.kind == kind and torch.equal(flat.matrices[0], w.reshape(shape[0], -1))
    sl = one(rec("c.weight", w), conv="slices")
    k = int(np.prod(shape[2:]))
    assert sl.matrices.shape == (k, shape[0], shape[1])
    positions = [idx for idx in np.ndindex(*shape[2:])]
    for b, idx in enumerate(positions):
        assert torch.equal(sl.matrices[b], w[(slice(None), slice(None), *idx)])


def test_conv_transpose_keeps_stored_order():
    conv = nn.ConvTranspose2d(12, 16, 3)
    m = one(rec("up.weight", conv.weight.detach(), "ConvTranspose2d"))
    assert m.kind == "conv2d" and m.view == "12 x 144 (in x out*kh*kw)"
    assert torch.equal(m.matrices[0], conv.weight.detach().reshape(12, 144))


def test_conv_slices_count_for_min_evals():
    """Depthwise conv (32, 1, 3, 3): flat 32 x 9 -> 9 eigenvalues, slices 9 x (32 x 1) -> 9: both skipped."""
    w = torch.randn(32, 1, 3, 3)
    assert one(rec("dw.weight", w, "Conv2d")).skip_reason == "fewer than 10 eigenvalues (9)"
    assert one(rec("dw.weight", w, "Conv2d"), conv="slices").skip_reason == "fewer than 10 eigenvalues (9)"
    assert one(rec("dw.weight", w, "Conv2d"), min_evals=9).skip_reason is None


def test_conv_slices_match_weightwatcher_pooled_esd_without_its_half_scaling():
    """WW 0.7.7 pools the k*k slice ESDs of a Conv2d (its get_ESD equals ours) but analyze() reports them after
    multiplying W by sqrt(0.5) (conv2d_norm): its lambda_max is half ours, log norms lower by log10(2)."""
    weightwatcher = pytest.importorskip("weightwatcher")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(24, 40, 3), nn.ReLU(), nn.Flatten(), nn.Linear(40, 30))
    m = one(rec("0.weight", net[0].weight.detach(), "Conv2d"), conv="slices")
    ours = np.sort(np.concatenate([np.linalg.svd(s.double().numpy(), compute_uv=False) ** 2 for s in m.matrices]))
    ww = weightwatcher.WeightWatcher(model=net)
    ww_evals = np.sort(np.asarray(ww.get_ESD(layer=1), dtype=float))  # WW layer ids start at 1
    assert ww_evals.shape == ours.shape == (9 * 24,)
    np.testing.assert_allclose(ww_evals, ours, rtol=1e-5, atol=1e-10)
    row = ww.analyze(layers=[1], pool=True).iloc[0]
    assert row["lambda_max"] == pytest.approx(0.5 * ours[-1], rel=1e-5)
    assert row["log_spectral_norm"] == pytest.approx(np.log10(ours[-1]) + np.log10(0.5), abs=1e-6)


# --- rule 13: other shapes --------------------------------------------------------------------------------

def test_bilinear_and_high_rank_are_other():
    w = torch.randn(20, 6, 7)
    m = one(rec("bil.weight", w, "Bilinear"))
    assert m.kind == "other" and m.view == "20 x 42 (dim0 x rest)" and torch.equal(m.matrices[0], w.reshape(20, 42))
    m6 = one(rec("t.weight", torch.randn(12, 2, 2, 2, 2, 2)))
    assert m6.kind == "other" and m6.matrices.shape == (1, 12, 32)


# --- rule 10: embeddings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, module_type", [
    ("emb.weight", "Embedding"), ("bag.weight", "EmbeddingBag"), ("model.embed_tokens.weight", None),
    ("transformer.wte.weight", None), ("transformer.wpe.weight", None), ("tok_embeddings.weight", None),
    ("bert.embeddings.word_embeddings.weight", None), ("blk.Embedder.weight", "Embedder"),
])
def test_embeddings(name, module_type):
    w = torch.randn(50, 16)
    m = one(rec(name, w, module_type))
    assert m.kind == "embedding" and torch.equal(m.matrices[0], w) and m.layer == name.removesuffix(".weight")


def test_vit_pos_embed_is_squeezed_and_typed_linear_is_not_an_embedding():
    w = torch.randn(1, 197, 32)
    m = one(rec("pos_embed", w, "VisionTransformer"))
    assert m.kind == "embedding" and m.view == "197 x 32 (tokens x dim)" and torch.equal(m.matrices[0], w[0])
    assert one(rec("cls_token", torch.randn(1, 1, 32))).skip_reason == "fewer than 10 eigenvalues (1)"
    assert one(rec("time_embed.0.weight", torch.randn(64, 32))).kind == "linear"  # owner "0", not "*embed*"
    assert one(rec("embed_proj.weight", torch.randn(64, 32), "Linear")).kind == "linear"  # the type decides


# --- rules 8-9: attention ---------------------------------------------------------------------------------

@pytest.mark.parametrize("typed", [True, False])
def test_multihead_attention_in_proj_split_reproduces_torch(typed):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(24, 4, bias=False).eval()
    records = [r if typed else TensorRecord(r.name, r.tensor, None) for r in iter_tensors(mha)]
    got = parts(records)
    w = mha.in_proj_weight.detach()
    for k, p in enumerate("qkv"):
        m = got[f"in_proj:{p}"]
        assert (m.kind, m.part, m.param, m.shape) == ("attention", p, "in_proj_weight", (72, 24))
        assert torch.equal(m.matrices[0], w[24 * k: 24 * (k + 1)])
    # the q/k/v parts used as three separate projections reproduce torch's attention
    x = torch.randn(5, 2, 24)
    q, k, v = (F.linear(x, got[f"in_proj:{p}"].matrices[0]) for p in "qkv")
    mine = _attention(q, k, v, 4, got["out_proj"].matrices[0])
    ref, _ = mha(x, x, x, need_weights=False)
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def _attention(q, k, v, heads, w_out):
    t, b, e = q.shape
    split = lambda z: z.reshape(t, b * heads, e // heads).transpose(0, 1)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(1, 2) / (e // heads) ** 0.5, dim=-1) @ split(v)
    return F.linear(att.transpose(0, 1).reshape(t, b, e), w_out)


def test_multihead_attention_separate_kdim_vdim():
    mha = nn.MultiheadAttention(24, 4, kdim=10, vdim=12)
    got = parts(iter_tensors(mha))
    for p, cols in zip("qkv", (24, 10, 12)):
        m = got[f"{p}_proj"]
        assert (m.kind, m.part, m.matrices.shape) == ("attention", p, (1, 24, cols))


@pytest.mark.parametrize("module_type", ["Conv1D", None])
def test_gpt2_c_attn_split_by_columns(module_type):
    """HF Conv1D stores (in, out); GPT-2 computes x @ W + b and splits the output into q, k, v."""
    e = 16
    w = torch.randn(e, 3 * e)
    got = parts([rec("h.0.attn.c_attn.weight", w, module_type)])
    x = torch.randn(4, e)
    full = x @ w
    for k, p in enumerate("qkv"):
        m = got[f"h.0.attn.c_attn:{p}"]
        assert m.kind == "attention" and m.matrices.shape == (1, e, e)
        torch.testing.assert_close(x @ m.matrices[0], full[:, k * e:(k + 1) * e])


@pytest.mark.parametrize("name, module_type", [("blocks.0.attn.qkv.weight", "Linear"), ("layers.0.Wqkv.weight", None),
                                               ("attn.qkv_proj.weight", None)])
def test_fused_qkv_linear_split_by_rows(name, module_type):
    """timm ViT: qkv(x).reshape(B, N, 3, heads, hd) -> q is the first E outputs."""
    e = 16
    w = torch.randn(3 * e, e)
    got = parts([rec(name, w, module_type)])
    x = torch.randn(4, e)
    for k, p in enumerate("qkv"):
        m = got[f"{layer_name(name)}:{p}"]
        assert m.kind == "attention" and m.part == p
        torch.testing.assert_close(F.linear(x, m.matrices[0]), F.linear(x, w)[:, k * e:(k + 1) * e])


def test_neox_query_key_value_and_non_square_qkv_not_split():
    assert one(rec("gpt_neox.layers.0.attention.query_key_value.weight", torch.randn(48, 16))).kind == "linear"
    gqa = one(rec("attn.qkv.weight", torch.randn(32, 16)))  # q 16 + k 8 + v 8: not thirds
    assert gqa.kind == "linear" and gqa.part == ""


# --- rule 7: recurrent layers -----------------------------------------------------------------------------

def _lstm_step(x, parts_ih, parts_hh, b_ih, b_hh):
    """One LSTM step from zero state with per-gate matrices (torch docs: i, f, g, o)."""
    h = torch.zeros(x.shape[0], parts_hh["i"].shape[1])
    c = torch.zeros_like(h)
    bi, bh = b_ih.chunk(4), b_hh.chunk(4)
    gate = {p: F.linear(x, parts_ih[p], bi[k]) + F.linear(h, parts_hh[p], bh[k]) for k, p in enumerate("ifgo")}
    c = torch.sigmoid(gate["f"]) * c + torch.sigmoid(gate["i"]) * torch.tanh(gate["g"])
    return torch.sigmoid(gate["o"]) * torch.tanh(c)


def _gru_step(x, h, parts_ih, parts_hh, b_ih, b_hh):
    bi, bh = b_ih.chunk(3), b_hh.chunk(3)
    a = {p: F.linear(x, parts_ih[p], bi[k]) for k, p in enumerate("rzn")}
    b = {p: F.linear(h, parts_hh[p], bh[k]) for k, p in enumerate("rzn")}
    r, z = torch.sigmoid(a["r"] + b["r"]), torch.sigmoid(a["z"] + b["z"])
    n = torch.tanh(a["n"] + r * b["n"])
    return (1 - z) * n + z * h


@pytest.mark.parametrize("typed", [True, False])
def test_lstm_gate_split_reproduces_torch(typed):
    torch.manual_seed(2)
    lstm = nn.LSTM(12, 16, num_layers=2, bidirectional=True)
    records = [r if typed else TensorRecord(r.name, r.tensor, None) for r in iter_tensors(lstm)]
    got = parts(records)
    sd = lstm.state_dict()
    for suffix in ("_l0", "_l1", "_l0_reverse", "_l1_reverse"):
        for which in ("ih", "hh"):
            w = sd[f"weight_{which}{suffix}"]
            for k, p in enumerate("ifgo"):
                m = got[f"weight_{which}{suffix}:{p}"]
                assert (m.kind, m.part) == ("lstm", p)
                assert torch.equal(m.matrices[0], w[16 * k: 16 * (k + 1)])
    x = torch.randn(3, 12)
    mine = _lstm_step(x, {p: got[f"weight_ih_l0:{p}"].matrices[0] for p in "ifgo"},
                      {p: got[f"weight_hh_l0:{p}"].matrices[0] for p in "ifgo"}, sd["bias_ih_l0"], sd["bias_hh_l0"])
    ref = nn.LSTMCell(12, 16)
    ref.load_state_dict({"weight_ih": sd["weight_ih_l0"], "weight_hh": sd["weight_hh_l0"],
                         "bias_ih": sd["bias_ih_l0"], "bias_hh": sd["bias_hh_l0"]})
    torch.testing.assert_close(mine, ref(x)[0])


@pytest.mark.parametrize("typed", [True, False])
def test_gru_gate_split_reproduces_torch(typed):
    torch.manual_seed(3)
    gru = nn.GRUCell(12, 16)
    records = [r if typed else TensorRecord(r.name, r.tensor, None) for r in iter_tensors(gru)]
    got = parts(records)
    assert {got[f"weight_ih:{p}"].kind for p in "rzn"} == {"gru"}
    x, h = torch.randn(3, 12), torch.randn(3, 16)
    mine = _gru_step(x, h, {p: got[f"weight_ih:{p}"].matrices[0] for p in "rzn"},
                     {p: got[f"weight_hh:{p}"].matrices[0] for p in "rzn"}, gru.bias_ih.detach(), gru.bias_hh.detach())
    torch.testing.assert_close(mine, gru(x, h))


@pytest.mark.parametrize("typed", [True, False])
def test_plain_rnn_not_split(typed):
    rnn = nn.RNN(12, 16)
    records = [r if typed else TensorRecord(r.name, r.tensor, None) for r in iter_tensors(rnn)]
    got = parts(records)
    assert got["weight_ih_l0"].kind == "rnn" and got["weight_ih_l0"].part == ""
    assert torch.equal(got["weight_hh_l0"].matrices[0], rnn.weight_hh_l0.detach())


def test_bare_rnn_order_kept_whichever_comes_first():
    """weight_ih before weight_hh (state_dict order) or after (sorted order): same rows, original order."""
    lstm = nn.LSTM(12, 16)
    recs = [TensorRecord(r.name, r.tensor, None) for r in iter_tensors(lstm)]
    forward = [m.layer for m in walk(recs)]
    assert forward[:8] == [f"weight_{w}_l0:{p}" for w in ("ih", "hh") for p in "ifgo"]
    backward = [m.layer for m in walk(sorted(recs, key=lambda r: r.name))]
    assert backward[2:10] == [f"weight_{w}_l0:{p}" for w in ("hh", "ih") for p in "ifgo"]
    assert sorted(forward) == sorted(backward)


def test_bare_weight_ih_without_weight_hh_is_emitted_unsplit():
    out = list(walk([rec("enc.weight_ih_l0", torch.randn(64, 12)), rec("fc.weight", torch.randn(20, 20))]))
    assert [m.layer for m in out] == ["fc", "enc.weight_ih_l0"]
    assert out[1].kind == "rnn" and out[1].matrices.shape == (1, 64, 12)


def test_lstm_with_projection():
    lstm = nn.LSTM(12, 32, proj_size=16)
    typed = parts(iter_tensors(lstm))
    assert typed["weight_hh_l0:o"].matrices.shape == (1, 32, 16)
    assert typed["weight_hr_l0"].kind == "lstm" and typed["weight_hr_l0"].matrices.shape == (1, 16, 32)
    bare = parts(TensorRecord(r.name, r.tensor, None) for r in iter_tensors(lstm))
    assert bare["weight_hh_l0"].kind == "rnn" and bare["weight_hh_l0"].part == ""  # 128/16 = 8 gates: unknown


# --- rule 14: min_evals, per part ---------------------------------------------------------------------------

def test_min_evals_per_part():
    lstm = nn.LSTM(4, 3)  # gates 3 x 4 (3 eigenvalues), 3 x 3
    out = [m for m in walk(iter_tensors(lstm)) if m.param == "weight_ih_l0"]
    assert [m.layer for m in out] == [f"weight_ih_l0:{p}" for p in "ifgo"]
    assert {m.skip_reason for m in out} == {"fewer than 10 eigenvalues (3)"}
    assert all(m.part in "ifgo" and m.kind == "lstm" for m in out)
    assert one(rec("fc.weight", torch.randn(6, 40)), min_evals=6).skip_reason is None
    assert one(rec("fc.weight", torch.randn(6, 40)), min_evals=7).skip_reason == "fewer than 7 eigenvalues (6)"


@pytest.mark.parametrize("options", [{"conv": "unfold"}, {"min_evals": 0}, {"min_evals": 2.5}])
def test_bad_options(options):
    with pytest.raises(OptionError):
        list(walk([], **options))


def test_layer_names():
    assert layer_name("a.b.weight") == "a.b"
    assert layer_name("attn.in_proj_weight") == "attn.in_proj"
    assert layer_name("lstm.weight_hh_l0") == "lstm.weight_hh_l0"
    assert layer_name("fc.bias") == "fc.bias"


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(200, 32)
        self.h = nn.Linear(32, 32)
        self.lm_head = nn.Linear(32, 200, bias=False)
        self.lm_head.weight = self.wte.weight                 # GPT-2-style tying


@pytest.mark.parametrize("as_file", [False, True])
def test_tied_weights_are_analysed_once(tmp_path, as_file):
    from hmu_diag import analyze, summarize

    model = _TiedLM()
    source = model
    if as_file:                                               # torch.save keeps the sharing
        torch.save(model.state_dict(), tmp_path / "tied.pt")
        source = tmp_path / "tied.pt"
    df = analyze(source, htmp=False).set_index("layer")
    assert df.loc["wte", "status"] == "ok" and df.loc["wte", "kind"] == "embedding"
    assert df.loc["lm_head", "status"] == "skipped: tied to wte.weight (the same tensor)"
    summary = summarize(df.reset_index()).iloc[0]            # the tied matrix counts once, as the embedding it is
    assert summary["n_ok"] == 2 and summary["n_excluded"] == 1 and summary["alpha"] == df.loc["h", "alpha"]


def test_a_streamed_tensor_reusing_a_freed_address_is_not_tied():
    """A streaming loader frees each tensor after use, and the allocator hands the address to a later tensor of the same
    shape: same data_ptr, offset, shape and strides, but a different (new) storage - not the same matrix."""
    pointers = []

    def stream():
        for i in range(6):
            t = torch.randn(30, 20)
            pointers.append(t.data_ptr())
            yield rec(f"l{i}.weight", t)
            del t

    reasons = [m.skip_reason for m in walk(stream())]
    assert len(set(pointers)) < len(pointers), "the allocator reused no address: this test saw nothing"
    assert reasons == [None] * 6


def test_sparse_weights_are_analysed_as_their_dense_matrix():
    """Pruned checkpoints may store COO or CSR weights: same ESD as the dense tensor (no crash in the tie check)."""
    from hmu_diag import analyze

    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(8))
    w[w.abs() < 1] = 0
    df = analyze({"coo.weight": w.to_sparse(), "csr.weight": w.to_sparse_csr(), "dense.weight": w},
                 htmp=False).set_index("layer")
    assert df["status"].eq("ok").all()
    assert df.loc["coo", "alpha"] == df.loc["dense", "alpha"] == df.loc["csr", "alpha"]
    assert df.loc["coo", "lambda_max"] == df.loc["dense", "lambda_max"]


@pytest.mark.parametrize("quantise", [
    lambda w: torch.quantize_per_tensor(w, 0.02, 0, torch.qint8),
    lambda w: torch.quantize_per_channel(w, torch.full((w.shape[0],), 0.02, dtype=torch.float64),
                                         torch.zeros(w.shape[0], dtype=torch.int64), 0, torch.qint8),
])
def test_torch_quantised_weights_are_analysed_dequantised(quantise):
    """qint8 tensors carry their scales: the layer's matrix is ``dequantize()``, exactly."""
    from hmu_diag import analyze

    q = quantise(torch.randn(60, 40, generator=torch.Generator().manual_seed(9)))
    m = one(rec("fc.weight", q, "Linear"))
    assert m.skip_reason is None and m.view == "dequantised qint8, 60 x 40 (as stored)"
    torch.testing.assert_close(m.matrices[0], q.dequantize(), rtol=0, atol=0)
    ours = analyze({"fc.weight": q}, htmp=False)
    assert ours["alpha"].iloc[0] == analyze({"fc.weight": q.dequantize()}, htmp=False)["alpha"].iloc[0]
