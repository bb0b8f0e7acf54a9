"""Options shared by the commands that read checkpoints: how far a pickle is trusted, where the per-layer work runs
and where it is cached."""
from __future__ import annotations

import argparse
from typing import Any


def add_pickle_options(p: argparse.ArgumentParser) -> None:
    """--stub-pickle / --trust-pickle, into ``args.trust_pickle`` (False, "stubs" or True)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--stub-pickle", dest="trust_pickle", action="store_const", const="stubs", default=False,
                       help="read the tensors of a checkpoint that also pickles objects needing code (e.g. a Lightning "
                            "checkpoint's OmegaConf hyper-parameters), with those objects replaced by inert "
                            "placeholders: nothing from the file runs")
    group.add_argument("--trust-pickle", dest="trust_pickle", action="store_const", const=True,
                       help="allow pickled checkpoints that run code when loaded (DANGEROUS: trusted files only)")


def add_execution_options(p: argparse.ArgumentParser) -> None:
    """--jobs, --executor, --scheduler, --cache-dir."""
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="analyse N layers in parallel worker processes (default: %(default)s = in this process)")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="where parallel layers run: a local process pool, or a Dask cluster (see --scheduler)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address for --executor dask, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="store each layer's result in DIR as it finishes; rerunning the same command resumes "
                        "from there (keyed by file content and options)")


def execution_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`hmu_diag.analyze` keywords of the execution options."""
    return {"n_jobs": args.jobs, "executor": args.executor, "scheduler": args.scheduler, "cache_dir": args.cache_dir}
