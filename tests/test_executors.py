"""run_tasks: the same ordered results from every executor, failures isolated per task, bounded in-flight tasks.

References: the serial executor (plain in-process calls) and direct calls of the task function.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

from hmu_diag.errors import OptionError
from hmu_diag.executors import TaskFailure, available_cores, call_task, is_failure, run_tasks


def spectrum_task(task: tuple[int, int]) -> tuple[float, ...]:
    """Largest eigenvalues of a seeded random Gram matrix (deterministic numerics); raises on a negative size."""
    seed, size = task
    if size < 0:
        raise ValueError(f"negative size {size}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((size + 5, size))
    return tuple(float(x) for x in np.linalg.eigvalsh(w.T @ w)[-3:])


def index_after_flag(task: tuple[int, str | None]) -> int:
    """Return the task's index, after waiting (up to 60 s) until folder ``wait_for`` holds a file."""
    index, wait_for = task
    deadline = time.monotonic() + 60
    while wait_for is not None and not os.listdir(wait_for) and time.monotonic() < deadline:
        time.sleep(0.01)
    return index


def die_on_negative(x: int) -> int:
    """Kill the worker process on a negative input (a segfault / OOM kill stand-in), else square."""
    if x < 0:
        os._exit(3)
    return x * x


def thread_settings(_: object) -> tuple[str | None, int]:
    """OMP_NUM_THREADS and torch's intra-op thread count inside the worker."""
    import torch
    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


TASKS = [(seed, 4 + seed % 7) for seed in range(10)] + [(99, -1)] + [(11, 3)]


def expected() -> list:
    """Reference: direct calls, with the failure slot built from the exception the call raises."""
    out = []
    for index, task in enumerate(TASKS):
        try:
            out.append(spectrum_task(task))
        except ValueError as exc:
            out.append(TaskFailure(index, "ValueError", str(exc)))
    return out


def test_serial_matches_direct_calls_and_isolates_the_failure():
    results = run_tasks(spectrum_task, TASKS, executor="serial")
    assert results == expected()
    failure = results[10]
    assert is_failure(failure) and not is_failure(results[9])
    assert failure.index == 10 and failure.message == "negative size -1"
    assert "spectrum_task" in failure.traceback and "raise ValueError" in failure.traceback
    assert str(failure) == "task 10: ValueError: negative size -1"


def test_local_pool_gives_identical_results_in_task_order():
    assert run_tasks(spectrum_task, TASKS, executor="local", n_jobs=2) == expected()


def test_order_kept_when_tasks_finish_out_of_order(tmp_path):
    # task 0 returns only after this process has received another task's result (the callback leaves a file), so
    # it cannot finish first whichever worker runs what and however the results race back
    tasks = [(0, str(tmp_path))] + [(i, None) for i in range(1, 6)]
    finished: list[int] = []

    def record(i: int, _result: int) -> None:
        finished.append(i)
        (tmp_path / f"received-{i}").touch()

    results = run_tasks(index_after_flag, tasks, executor="local", n_jobs=2, on_result=record)
    assert results == list(range(6))
    assert sorted(finished) == list(range(6))
    assert finished[0] != 0  # completion order differed, yet the list is in task order


def test_lazy_iterator_is_consumed_with_bounded_in_flight_tasks():
    yielded: list[int] = []

    def stream():
        for x in range(20):
            yielded.append(x)
            yield x

    seen_at_first_result: list[int] = []
    results = run_tasks(die_on_negative, stream(), executor="local", n_jobs=2,
                        on_result=lambda i, r: seen_at_first_result.append(len(yielded)))
    assert results == [x * x for x in range(20)]
    assert seen_at_first_result[0] <= 4  # 2 tasks per worker in flight, never the whole stream


def test_a_worker_that_dies_fails_only_its_own_task():
    tasks = [1, 2, -1, 3, 4, 5]
    results = run_tasks(die_on_negative, tasks, executor="local", n_jobs=2)
    assert [r for i, r in enumerate(results) if i != 2] == [1, 4, 9, 16, 25]
    assert is_failure(results[2]) and results[2].error_type == "BrokenProcessPool" and results[2].index == 2


def test_workers_cap_threads_so_jobs_times_threads_fit_the_cores():
    n_jobs = 2
    settings = run_tasks(thread_settings, range(2), executor="local", n_jobs=n_jobs)
    per_worker = max(1, available_cores() // n_jobs)
    assert settings == [(str(per_worker), per_worker)] * 2
    assert run_tasks(os.getenv, ["OMP_NUM_THREADS"], executor="local", n_jobs=1, threads_per_worker=1) == ["1"]


def test_call_task_wraps_exceptions_only():
    assert call_task(math.sqrt, 16.0, 0) == 4.0
    failure = call_task(math.sqrt, -1.0, 7)
    assert failure == TaskFailure(7, "ValueError", "math domain error")


def test_bad_options_raise_option_errors():
    with pytest.raises(OptionError, match="executor='threads'"):
        run_tasks(math.sqrt, [1.0], executor="threads")
    with pytest.raises(OptionError, match="n_jobs=0"):
        run_tasks(math.sqrt, [1.0], executor="local", n_jobs=0)
    with pytest.raises(OptionError, match="threads_per_worker=0"):
        run_tasks(math.sqrt, [1.0], executor="local", threads_per_worker=0)


def test_empty_task_list():
    assert run_tasks(math.sqrt, [], executor="serial") == []
    assert run_tasks(math.sqrt, [], executor="local", n_jobs=2) == []


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    run_tasks(math.sqrt, [1.0, 4.0], executor="serial", progress=True)
    assert capsys.readouterr().err == ""
    import sys
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run_tasks(math.sqrt, [1.0, 4.0], executor="serial", progress=True) == [1.0, 2.0]
    assert "tasks:" in capsys.readouterr().err  # a tqdm bar drawn on the (pretend) terminal


@pytest.mark.dask
def test_dask_cluster_gives_identical_results():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert run_tasks(spectrum_task, TASKS, executor="dask", scheduler=client) == expected()
        # by address: run_tasks opens and closes its own client
        assert run_tasks(spectrum_task, TASKS, executor="dask", scheduler=cluster.scheduler_address) == expected()


@pytest.mark.dask
def test_dask_without_a_scheduler_is_an_option_error():
    pytest.importorskip("distributed")
    with pytest.raises(OptionError, match="scheduler="):
        run_tasks(math.sqrt, [1.0], executor="dask")
