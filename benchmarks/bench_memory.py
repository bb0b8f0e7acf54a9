"""Peak memory of ``hmu_diag.analyze`` on a multi-GB sharded safetensors checkpoint, against its largest matrix.

Each measurement runs in a fresh subprocess that samples its own /proc/self/status every 10 ms (VmRSS, RssAnon,
RssFile) and reports ru_maxrss at exit:

* ``baseline``  — ``import hmu_diag`` and torch, nothing loaded (the interpreter's fixed cost);
* ``largest``   — load only the largest matrix with safetensors and compute its exact ESD
                  (``weight_spectrum``): the least any tool that analyses that matrix must hold;
* ``analyze``   — ``hmu_diag.analyze(index_json, **options)`` on the whole checkpoint.

The claims checked (WeightWatcher research §6 item 6, target "≤ 2× the largest matrix"): the memory ``analyze`` adds on
top of the baseline grows with the largest matrix (or shard), not with the checkpoint:

    peak_anon(analyze) − peak_anon(baseline)  ≤  2 × bytes(largest matrix as stored)            (anonymous memory)
    ru_maxrss(analyze) − ru_maxrss(baseline)  ≤  bytes(largest shard) + 2 × bytes(largest matrix)   (`time -v`)

Anonymous memory (RssAnon: tensors, numpy arrays, heap) is what can exhaust RAM; file-backed pages of memory-mapped
shards (RssFile) are clean page cache the kernel can drop, but they count in ru_maxrss (and in a container's memory
accounting) for as long as a shard stays mapped, so both are reported.  WeightWatcher is not run here: it skips
matrices with more than 50,000 rows, i.e. most of this checkpoint (§3 of the research notes has its measured 5×
per-matrix footprint).

Measured (2,570 MiB in 4 shards, largest shard 769 MiB, largest matrix 262144 x 512 float32 = 512 MiB; 2-core VM,
htmp=False): baseline ru_maxrss 377 MiB; ``largest`` +68 MiB anonymous (safetensors tensors are mmap-backed; the
Gram is built in row blocks); ``analyze`` +92 MiB anonymous (0.18x the largest matrix) and ru_maxrss +839 MiB
(<= largest shard + 2x largest matrix = 1,793 MiB), in 11 s.  Before the pipeline stopped holding finished layers'
tensors (it kept every LayerMatrix for the final table) the same run peaked at +123 MiB anonymous but ru_maxrss
+2,640 MiB: every shard stayed mapped to the end.  Earlier still, a float64 NaN check cost +1,024 MiB anonymous.
With ``htmp=True`` (default): 25 s (with the test suite running alongside), +117 MiB anonymous, ru_maxrss +865 MiB;
it took 1,403 s before one 262144 x 128 layer (gamma = 4.9e-4, delta ~ 5e4) stopped waiting on mpmath: fits now give
up on such evaluations within milliseconds (that layer's htmp_D is NaN, its kappa and CI are reported).

    python benchmarks/bench_memory.py                    # makes /tmp/hmu_bench/ckpt-2.5gb once (~2.5 GB), then runs
    python benchmarks/bench_memory.py --folder DIR --option htmp=false
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INDEX_NAME = "model.safetensors.index.json"


# ----------------------------------------------------------------------------------------- in the child

class MemorySampler(threading.Thread):
    """Peak VmRSS / RssAnon / RssFile of this process, sampled every ``interval`` seconds (Linux /proc)."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self.running = True

    def sample(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(value.split()[0]) * 1024)

    def run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(self.interval)

    def stop(self) -> dict[str, int]:
        self.running = False
        self.join()
        self.sample()
        return dict(self.peak)


def child(mode: str, index: Path, options: dict) -> None:
    """Run one measurement in this process and print its peaks as JSON."""
    sampler = MemorySampler()
    sampler.start()
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import hmu_diag  # noqa: F401
    from hmu_diag.pipeline import analyze
    start = time.perf_counter()
    info: dict[str, object] = {}
    if mode == "largest":
        from safetensors import safe_open
        from hmu_diag.spectra.weights import weight_spectrum
        _, _, name, shard, _ = checkpoint_sizes(index)
        with safe_open(str(index.parent / shard), framework="pt") as handle:
            w = handle.get_tensor(name)
        info["evals"] = int(weight_spectrum(w, dtype=options.get("dtype", "float64")).evals.size)
        del w
    elif mode == "analyze":
        frame = analyze(index, **options)
        info["rows"] = len(frame)
        info["status"] = frame["status"].str.split(":").str[0].value_counts().to_dict()
    peaks = sampler.stop()
    peaks["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "seconds": time.perf_counter() - start, **peaks, **info}))


# ---------------------------------------------------------------------------------------- in the parent

def checkpoint_sizes(index: Path) -> tuple[int, int, str, str, int]:
    """(bytes of all shard files, bytes of the largest 2-D tensor, its name, its shard, bytes of the largest shard),
    from the headers only."""
    import struct
    total, largest, name, where, biggest_shard = 0, 0, "", "", 0
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        size = (index.parent / shard).stat().st_size
        total += size
        biggest_shard = max(biggest_shard, size)
        with open(index.parent / shard, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for tensor, meta in header.items():
            if tensor != "__metadata__" and len(meta["shape"]) == 2:
                size = meta["data_offsets"][1] - meta["data_offsets"][0]
                if size > largest:
                    largest, name, where = size, tensor, shard
    return total, largest, name, where, biggest_shard


def measure(mode: str, index: Path, options: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--folder", str(index.parent),
                           "--options-json", json.dumps(options)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/hmu_bench/ckpt-2.5gb"),
                        help="sharded checkpoint folder (made with make_sharded_checkpoint.py if missing)")
    parser.add_argument("--size-gb", type=float, default=2.5, help="size when the checkpoint has to be made")
    parser.add_argument("--option", action="append", default=[], type=parse_option, metavar="KEY=VALUE",
                        help="an analyze() option (JSON value), e.g. htmp=false, dtype='\"float32\"'")
    parser.add_argument("--child", choices=("baseline", "largest", "analyze"), help=argparse.SUPPRESS)
    parser.add_argument("--options-json", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    index = args.folder / INDEX_NAME
    if args.child:
        child(args.child, index, json.loads(args.options_json))
        return 0
    options = dict(args.option)
    if not index.exists():
        print(f"making {args.folder} ({args.size_gb} GB) ...", flush=True)
        subprocess.run([sys.executable, str(HERE / "make_sharded_checkpoint.py"), str(args.folder),
                        "--size-gb", str(args.size_gb)], check=True, stdout=subprocess.DEVNULL)
    total, largest, largest_name, _, shard = checkpoint_sizes(index)
    results = {mode: measure(mode, index, options) for mode in ("baseline", "largest", "analyze")}
    mib = 1 << 20
    base = results["baseline"]
    print(f"checkpoint {index}: {total / mib:,.0f} MiB in shards (largest shard {shard / mib:,.0f} MiB); largest "
          f"matrix {largest_name} {largest / mib:,.0f} MiB; analyze options {options}")
    print(f"{'run':10s} {'seconds':>8s} {'ru_maxrss':>10s} {'peak anon':>10s} {'peak file':>10s} "
          f"{'anon-base':>10s} {'/largest':>9s} {'/total':>7s}   (MiB)")
    for mode, r in results.items():
        extra = r["RssAnon"] - base["RssAnon"]
        print(f"{mode:10s} {r['seconds']:8.1f} {r['ru_maxrss'] / mib:10.0f} {r['RssAnon'] / mib:10.0f} "
              f"{r['RssFile'] / mib:10.0f} {extra / mib:10.0f} {extra / largest:9.2f} {extra / total:7.3f}")
    anon = results["analyze"]["RssAnon"] - base["RssAnon"]
    rss = results["analyze"]["ru_maxrss"] - base["ru_maxrss"]
    print(f"analyze: {results['analyze'].get('rows')} rows, status {results['analyze'].get('status')}")
    bounds = [("peak anon - baseline", anon, 2 * largest, "2 x largest matrix"),
              ("ru_maxrss - baseline", rss, shard + 2 * largest, "largest shard + 2 x largest matrix")]
    for label, value, bound, name in bounds:
        verdict = "holds" if value <= bound else "VIOLATED"
        print(f"{label:22s} {value / mib:8,.0f} MiB <= {name} ({bound / mib:,.0f} MiB): {verdict}; "
              f"{value / total:.1%} of the checkpoint")
    return 0 if all(value <= bound for _, value, bound, _ in bounds) else 1


if __name__ == "__main__":
    sys.exit(main())
