"""analyze(): the whole pipeline on small models, on a real checkpoint against WeightWatcher 0.7.7, and its options."""
import io
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hmu_diag.errors import OptionError
from hmu_diag.fits.powerlaw import fit_power_law
from hmu_diag.cli.analyze import print_table
from hmu_diag.pipeline import IDENTITY_COLUMNS, analyze, compute_spectra
from hmu_diag.summary import summarize
from tests.wheels import wheel_member


@pytest.fixture(scope="module")
def onet_state_dict():
    blob = wheel_member("facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt")
    return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(100, 32), nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64), nn.LayerNorm(64),
                         nn.Linear(64, 3))


def test_one_row_per_tensor_with_reasons():
    df = analyze(small_model(), htmp=False)
    assert list(df.columns[:len(IDENTITY_COLUMNS)]) == IDENTITY_COLUMNS
    by_layer = df.set_index("layer")
    assert by_layer.loc["0", "kind"] == "embedding" and by_layer.loc["0", "status"] == "ok"
    assert by_layer.loc["1", "status"] == "ok" and by_layer.loc["3", "status"] == "ok"
    assert by_layer.loc["5", "status"].startswith("skipped: ") and "3" in by_layer.loc["5", "status"]
    assert all(s.startswith("skipped: ") for s in df.loc[df["layer"].str.endswith("bias"), "status"])
    assert (df["source"] == "weights").all() and (df.loc[df.status == "ok", "dtype"] == "float64").all()


def test_layers_regex_selects_what_is_analysed_and_lists_the_rest():
    everything = analyze(small_model(), htmp=False).set_index("layer")
    chosen = analyze(small_model(), htmp=False, layers=r"^[13]$").set_index("layer")
    assert list(chosen.index) == list(everything.index)                     # every tensor still has its row
    assert chosen.loc["3", "alpha"] == everything.loc["3", "alpha"] and chosen.loc["1", "status"] == "ok"
    assert chosen.loc["0", "status"] == "skipped: not selected (layers='^[13]$')"   # analysable, not chosen
    assert chosen.loc["1.bias", "status"] == "skipped: 1-D tensor"             # its own reason comes first
    assert chosen.loc["5", "status"] == everything.loc["5", "status"]          # (too few eigenvalues)
    with pytest.raises(OptionError, match="not a regular expression"):
        analyze(small_model(), layers="(")


def test_alpha_is_the_fit_of_the_exact_svd_spectrum():
    model = small_model()
    df = analyze(model, htmp=False).set_index("layer")
    w = model[3].weight.detach().double().numpy()
    evals = np.linalg.svd(w, compute_uv=False) ** 2
    ref = fit_power_law(evals)
    assert df.loc["3", "alpha"] == pytest.approx(ref.alpha, rel=1e-9)
    assert df.loc["3", "xmin"] == pytest.approx(ref.xmin, rel=1e-9)
    assert df.loc["3", "lambda_max"] == pytest.approx(evals.max(), rel=1e-10)
    assert df.loc["3", "N"] == 128 and df.loc["3", "M"] == 64


def test_n_boot_adds_the_bootstrap_p_value_of_each_power_law_fit():
    model = small_model()
    df = analyze(model, htmp=False, n_boot=25, seed=3).set_index("layer")
    w = model[3].weight.detach().double().numpy()
    ref = fit_power_law(np.linalg.svd(w, compute_uv=False) ** 2, n_boot=25, seed=3)
    assert 0.0 <= ref.p_value <= 1.0
    assert df.loc["3", "p_value"] == pytest.approx(ref.p_value, abs=1e-12)       # same replicates, same seed
    ok = df["status"].eq("ok")
    assert df.loc[ok, "p_value"].between(0.0, 1.0).all()
    with_htmp = analyze(model, n_boot=25, seed=3).set_index("layer")                 # the lower-tail fit's p too
    smaller_half = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)[:32]               # M = 64 eigenvalues
    lower = fit_power_law(1.0 / smaller_half, n_boot=25, seed=3)
    assert with_htmp.loc["3", "lower_alpha"] == pytest.approx(lower.alpha, rel=1e-9)
    assert with_htmp.loc["3", "lower_p_value"] == pytest.approx(lower.p_value, abs=1e-12)
    assert analyze(model, htmp=False)["p_value"].isna().all()                    # default: not computed
    out = io.StringIO()
    print_table(df.reset_index(), out)                                            # the CLI table shows it too
    assert out.getvalue().splitlines()[0].split()[:6] == ["layer", "kind", "shape", "alpha", "D", "p_value"]
    with pytest.raises(OptionError, match="n_boot"):
        analyze(model, n_boot=-1)


def test_compute_spectra_matches_rows():
    spectra = compute_spectra(small_model())
    df = analyze(small_model(), htmp=False).set_index("layer")
    for (_, layer), spectrum in spectra.items():
        assert spectrum.evals.size == df.loc[layer, "num_evals"]


def test_per_layer_alpha_agrees_with_weightwatcher_on_real_onet(onet_state_dict):
    """MTCNN ONet (facenet-pytorch 2.6.0): our alpha equals WeightWatcher 0.7.7's to 1e-9 relative on every layer
    with at least 20 eigenvalues, in WW's own conv mode (pooled kernel slices).  WW fits layers with 8-19
    eigenvalues with a different small-N estimator, so dense6_3 (10 eigenvalues) is not compared.  WW also scales
    pooled conv eigenvalues by 1/2 (conv2d_norm), which leaves alpha unchanged and halves xmin."""
    import weightwatcher as ww
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    theirs = ww.WeightWatcher(model=onet_state_dict).analyze().set_index("name")
    ours = analyze(onet_state_dict, conv="slices", htmp=False).set_index("layer")
    compared = 0
    for name, row in theirs.iterrows():
        if row["num_evals"] < 20:
            continue
        mine = ours.loc[name]
        assert mine["num_evals"] == row["num_evals"]
        assert mine["alpha"] == pytest.approx(row["alpha"], rel=1e-9), name
        assert mine["D"] == pytest.approx(row["D"], rel=1e-9), name
        assert mine["num_pl_spikes"] == row["num_pl_spikes"], name
        scale = 0.5 if name.startswith("conv") else 1.0
        assert mine["xmin"] * scale == pytest.approx(row["xmin"], rel=1e-9), name
        compared += 1
    assert compared == 5


def test_float32_mode_is_labelled_and_close(onet_state_dict):
    d64 = analyze(onet_state_dict, htmp=False).set_index("layer")
    d32 = analyze(onet_state_dict, htmp=False, dtype="float32").set_index("layer")
    ok = d64.index[d64.status == "ok"]
    assert (d32.loc[ok, "dtype"] == "float32").all()
    np.testing.assert_allclose(d32.loc[ok, "lambda_max"], d64.loc[ok, "lambda_max"], rtol=1e-5)


def test_summary_excludes_embeddings_and_counts_skips():
    df = analyze(small_model(), htmp=False)
    s = summarize(df)
    ok = df[(df.status == "ok") & (df.kind != "embedding")]
    row = s.iloc[0]
    assert row["alpha"] == pytest.approx(ok["alpha"].mean())
    assert row["n_excluded"] == 1 and row["n_skipped"] == (df.status.str.startswith("skipped")).sum()


@pytest.mark.parametrize("bad", [{"conv": "fft"}, {"dtype": "float16"}, {"min_evals": 0},
                                 {"fix_fingers": "yes"}])
def test_bad_options_are_one_line_errors(bad):
    with pytest.raises(OptionError):
        analyze(small_model(), **bad)


def test_directory_of_checkpoints_gives_one_model_each(tmp_path):
    from safetensors.torch import save_file
    for seed in (1, 2):
        torch.manual_seed(seed)
        save_file({"fc.weight": torch.randn(40, 30)}, str(tmp_path / f"m{seed}.safetensors"))
    df = analyze(tmp_path, htmp=False)
    assert sorted(df["model"].unique()) == ["m1.safetensors", "m2.safetensors"]
    assert isinstance(summarize(df), pd.DataFrame) and len(summarize(df)) == 2


DEMO = "models_zoo/demo/digits_mlp.safetensors"


def test_resumed_run_reuses_cached_rows_and_gives_the_same_table(tmp_path, monkeypatch):
    first = analyze(DEMO, cache_dir=tmp_path)
    import hmu_diag.pipeline as pipeline

    def must_not_run(*args):
        raise AssertionError("a cached layer was recomputed")
    monkeypatch.setattr(pipeline, "analyze_layers", must_not_run)
    again = analyze(DEMO, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(first, again, check_dtype=False)
    changed = analyze(DEMO, cache_dir=tmp_path / "other", htmp=False)  # other options: other keys, recomputed...
    analysed = ~changed["status"].str.startswith("skipped")   # (skipped tensors never reach analyze_layers)
    assert analysed.sum() == first["status"].eq("ok").sum() > 0
    assert changed.loc[analysed, "status"].str.startswith("failed: AssertionError").all()  # ...so it ran


def test_parallel_run_equals_serial_run():
    serial = analyze(DEMO, htmp=False)
    parallel = analyze(DEMO, htmp=False, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel, check_exact=False, rtol=1e-9)


def test_a_layer_that_raises_is_reported_not_fatal(monkeypatch):
    import hmu_diag.pipeline as pipeline
    real = pipeline.weight_spectrum

    def flaky(matrices, **kw):
        if matrices.shape[-1] == 64:
            raise FloatingPointError("eigensolver did not converge")
        return real(matrices, **kw)
    monkeypatch.setattr(pipeline, "weight_spectrum", flaky)
    df = analyze(DEMO, htmp=False).set_index("layer")
    assert df.loc["fc1", "status"] == "failed: FloatingPointError: eigensolver did not converge"
    assert df.loc["fc2", "status"] == "ok"


@pytest.mark.dask
def test_dask_cluster_run_equals_serial_run():
    distributed = pytest.importorskip("distributed")
    serial = analyze(DEMO, htmp=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        on_dask = analyze(DEMO, htmp=False, executor="dask", scheduler=cluster.scheduler_address, n_jobs=2)
    pd.testing.assert_frame_equal(serial, on_dask, check_exact=False, rtol=1e-9)


def test_finished_layers_are_released_while_later_layers_run(tmp_path, monkeypatch):
    """Memory bounded by the layers in flight, not the model: when a batch of layers is analysed, the matrices of
    every layer finished before it are no longer referenced (the table keeps only identities)."""
    import gc
    import weakref

    from safetensors.torch import save_file

    from hmu_diag import pipeline

    path = tmp_path / "m.safetensors"
    save_file({f"l{i}.weight": torch.randn(40, 30, generator=torch.Generator().manual_seed(i)) for i in range(5)},
              str(path))
    seen: list[weakref.ref] = []
    alive_at_each_batch: list[int] = []
    analyze_layers = pipeline.analyze_layers

    def spying(layers, options):
        gc.collect()
        alive_at_each_batch.append(sum(r() is not None for r in seen))
        seen.extend(weakref.ref(lm.matrices) for _, lm in layers)
        return analyze_layers(layers, options)

    monkeypatch.setattr(pipeline, "analyze_layers", spying)
    monkeypatch.setattr(pipeline, "BATCH_LAYERS", 2)
    frame = analyze(str(path), htmp=False)
    assert frame["status"].eq("ok").sum() == 5
    assert alive_at_each_batch == [0, 0, 0]                  # batches of 2, 2 and 1 layers


def test_batched_layers_give_the_rows_each_layer_gets_alone(monkeypatch):
    """A serial run fits its layers' MP/HTMP columns as one batch; every row equals the row of that layer analysed
    alone (MobileNetV2-style small conv layers, all columns), and a layer whose fit raises fails alone."""
    from hmu_diag import pipeline

    batched = analyze(DEMO)
    monkeypatch.setattr(pipeline, "BATCH_LAYERS", 1)
    alone = analyze(DEMO)
    pd.testing.assert_frame_equal(batched, alone, check_exact=True)
    monkeypatch.undo()
    real = pipeline.esd_rows

    def fails_on_fc2(spectra, **kw):
        if any(s.M == s.N == 256 for s in spectra):
            raise FloatingPointError("fit blew up")
        return real(spectra, **kw)
    monkeypatch.setattr(pipeline, "esd_rows", fails_on_fc2)
    df = analyze(DEMO).set_index("layer")
    assert df.loc["fc2", "status"] == "failed: FloatingPointError: fit blew up"
    others = df.drop(index="fc2")["status"]
    assert (others.eq("ok") | others.str.startswith("skipped")).all()


def test_torch_spectra_are_computed_before_lapack_ones(monkeypatch):
    """A batch mixing small layers (torch.linalg.eigvalsh) and large ones (scipy's syrk + syevd) computes the torch
    ones first (OpenBLAS's threads spin after a large syevd and would slow torch's down), and the table keeps the
    layer order and the numbers of the plain order."""
    from hmu_diag import pipeline
    from hmu_diag.spectra.weights import _SCIPY_MIN_M, lapack_path

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2 * _SCIPY_MIN_M, _SCIPY_MIN_M), nn.Linear(64, 32), nn.Linear(_SCIPY_MIN_M, 64))
    computed = []
    real = pipeline.layer_spectrum

    def recording(lm, options):
        computed.append((lm.layer, lapack_path(lm.matrices)))
        return real(lm, options)
    monkeypatch.setattr(pipeline, "layer_spectrum", recording)
    df = analyze(model, htmp=False)
    assert computed == [("1", False), ("2", False), ("0", True)]
    assert df.loc[df["status"].eq("ok"), "layer"].tolist() == ["0", "1", "2"]
    ref = fit_power_law(np.linalg.svd(model[0].weight.detach().double().numpy(), compute_uv=False) ** 2)
    assert df.set_index("layer").loc["0", "alpha"] == pytest.approx(ref.alpha, rel=1e-9)


def test_cli_piped_into_a_reader_that_stops_early_prints_no_traceback(tmp_path):
    """``hmu-diag analyze ... | head -1``: the table is cut short, the files are written, stderr stays empty."""
    import subprocess
    import sys

    code = ("import sys; from hmu_diag.cli import main; "
            f"sys.exit(main(['analyze', 'models_zoo/demo/digits_mlp.safetensors', '-o', {str(tmp_path)!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                                  # the reader stops, like head -1
    stderr = proc.stderr.read().decode()
    # 141 (broken pipe) when it writes after the close; 0 when a loaded machine let it finish writing first
    assert proc.wait(timeout=120) in (141, 0) and stderr == ""
    assert (tmp_path / "layers.csv").is_file()


def test_cli_help_answers_without_loading_torch_pandas_or_scipy():
    """``hmu-diag --help`` and ``hmu-diag <command> --help`` parse in a fresh interpreter without importing the heavy
    libraries (seconds of start-up); the option choices come from :mod:`hmu_diag.choices`, the same constants the API
    checks against."""
    import subprocess
    import sys

    code = ("import contextlib, io, sys\n"
            "from hmu_diag.cli import COMMANDS, main\n"
            "for argv in [['--help']] + [[c, '--help'] for c in COMMANDS]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "    assert 'usage: hmu-diag' in out.getvalue(), argv\n"
            "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'numpy', 'matplotlib') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_analyze_loads_no_optional_scipy_subpackage():
    """scipy.stats, scipy.optimize and scipy.integrate (~1 s of start-up on a 2-core machine) serve only optional
    paths (likelihood-ratio tests, ML/KS refinement, the HTMP ODE fallback): a default analysis never imports them."""
    import subprocess
    import sys

    code = ("import sys; from hmu_diag import analyze; "
            "analyze('models_zoo/demo/digits_mlp.safetensors'); "
            "print(sorted(m for m in ('scipy.stats', 'scipy.optimize', 'scipy.integrate') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_cli_choices_are_the_ones_the_api_checks():
    import importlib

    from hmu_diag import choices, data, output, pipeline
    from hmu_diag.spectra import hessian

    rank = importlib.import_module("hmu_diag.rank")        # the package attribute ``rank`` is the function
    assert pipeline.CONV_MODES is choices.CONV_MODES and output.FORMATS is choices.FORMATS
    assert rank.METRICS is choices.METRICS and rank.TABLE_SUFFIXES is choices.TABLE_SUFFIXES
    assert data.BUILTINS is choices.BUILTINS and hessian.LOSSES is choices.LOSSES
    with pytest.raises(OptionError, match="conv='sideways'"):
        analyze("models_zoo/demo/digits_mlp.safetensors", conv="sideways")


def test_cli_table_names_why_htmp_columns_are_missing():
    import io

    layers = pd.DataFrame({"model": "m", "layer": ["a", "b", "c", "bias"], "kind": "linear", "shape": "8x8",
                           "alpha": [2.0, 3.0, 4.0, np.nan], "htmp_kappa": [1.0, np.nan, np.nan, np.nan],
                           "status": ["ok", "ok", "ok", "skipped: 1-D tensor"],
                           "htmp_status": ["ok", "failed: fewer than 10 positive eigenvalues (4)",
                                           "failed: fewer than 10 positive eigenvalues (4)", np.nan]})
    out = io.StringIO()
    print_table(layers, out)
    lines = out.getvalue().splitlines()
    assert "  1 tensor(s) skipped: 1-D tensor" in lines
    assert "  2 layer(s) HTMP failed: fewer than 10 positive eigenvalues (4)" in lines
    assert not any("HTMP ok" in line for line in lines)


def test_a_folder_with_files_that_are_not_models_still_analyses_the_models(tmp_path):
    """A training run's folder: a checkpoint beside a config-like pickle without tensors, a truncated file and a text
    file.  Each unreadable file is one row saying why; the model is analysed; a single unreadable file still raises."""
    from hmu_diag.errors import CheckpointError

    torch.save({"fc.weight": torch.randn(40, 30)}, tmp_path / "model.pt")
    torch.save({"step": 10, "lr": 0.1}, tmp_path / "training_args.bin")
    good = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "broken.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.pt").write_text("hello")
    df = analyze(tmp_path, htmp=False).set_index("model")
    assert df.loc["model.pt", "status"] == "ok"
    files = df[df["kind"].eq("file")]
    assert sorted(files.index) == ["broken.pt", "notes.pt", "training_args.bin"]
    assert files.loc["training_args.bin", "status"].startswith("skipped: not read as a model: ")
    assert "no tensors found" in files.loc["training_args.bin", "status"]
    assert "truncated or corrupt" in files.loc["broken.pt", "status"]
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        analyze(tmp_path / "broken.pt")
    import importlib
    ranking = importlib.import_module("hmu_diag.rank").rank(tmp_path, htmp=False, baseline=False)
    assert ranking.models.loc["model.pt", "rank"] == 1 and ranking.models["rank"].notna().sum() == 1
    assert not any("architectures" in w for w in ranking.warnings)        # unread files have no architecture
