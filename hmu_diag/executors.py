"""Run one function over many tasks — in-process, on a local process pool, or on a Dask cluster — with one contract.

:func:`run_tasks` applies a picklable top-level function to every task and returns the results **in task order**; the
list is the same whichever executor ran it: bit for bit for deterministic tasks; numeric kernels agree to rounding
(~1e-14 measured with one BLAS thread per task, where MKL picks alignment-dependent kernels in another process; a
different number of BLAS threads sums in another order).
A task that raises does not stop the run: its slot holds a :class:`TaskFailure` (the exception type, message and
formatted traceback), and every other task still runs.  When a local worker process dies (killed, out of memory, a
segfault in native code) the pool breaks and every task in flight is lost; those tasks are rerun one at a time in a
fresh single-worker pool, so only the task that kills its worker again gets
``TaskFailure(error_type="BrokenProcessPool", ...)``, and the rest of the run continues on a new pool.

Executors
---------
``"serial"``  in this process, one task after another (the reference; no pickling).
``"local"``   a ``concurrent.futures.ProcessPoolExecutor`` with a ``forkserver`` (Linux) or ``spawn`` context — never
              ``fork``, which is unsafe once torch has started its thread pools.  Each worker caps its BLAS/OpenMP and
              torch intra-op threads to ``max(1, cores // n_jobs)`` (joblib's rule) so ``n_jobs × threads ≤ cores``
              (no oversubscription; ``threads_per_worker`` overrides it).  At most ``2·n_jobs`` tasks are in flight, so
              a lazy iterator of tasks (e.g. layer matrices streamed from a checkpoint) is consumed as workers free up
              and memory stays bounded.
``"dask"``    an existing Dask distributed cluster: ``scheduler`` is its address (``"tcp://host:8786"``; a client is
              opened and closed here) or a ``distributed.Client`` (left open).  Also at most ``2·n_workers`` tasks in
              flight; results are gathered back into task order.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError

EXECUTORS = ("local", "serial", "dask")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")
IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class TaskFailure:
    """The result slot of a task that raised (or whose worker process died).

    Attributes
    ----------
    index : position of the task in the input.
    error_type : class name of the exception ("ValueError", "BrokenProcessPool", ...).
    message : ``str(exception)``.
    traceback : the formatted traceback from the worker (not part of equality, so failures compare equal across
        executors).
    """

    index: int
    error_type: str
    message: str
    traceback: str = field(default="", repr=False, compare=False)

    def __str__(self) -> str:
        return f"task {self.index}: {self.error_type}: {self.message}"


def is_failure(result: Any) -> bool:
    """True when a :func:`run_tasks` result slot is a :class:`TaskFailure`."""
    return isinstance(result, TaskFailure)


def call_task(fn: Callable[[Any], Any], task: Any, index: int) -> Any:
    """``fn(task)``, or a :class:`TaskFailure` if it raises (what every executor runs for each task)."""
    try:
        return fn(task)
    except Exception as exc:  # noqa: BLE001 -- isolating any task error is the point
        return TaskFailure(index, type(exc).__name__, str(exc), traceback.format_exc())


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def limit_threads(threads: int) -> None:
    """Cap BLAS/OpenMP (env vars, and threadpoolctl when installed) and torch intra-op threads of this process."""
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(threads)
    torch = sys.modules.get("torch")  # torch imported later reads OMP_NUM_THREADS itself
    if torch is not None:
        torch.set_num_threads(threads)


def _check_n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None:
        return available_cores()
    if int(n_jobs) < 1:
        raise OptionError(f"n_jobs={n_jobs}: must be a positive number of worker processes (or None for all cores)")
    return int(n_jobs)


def run_tasks(fn: Callable[[Any], Any], tasks: Iterable[Any], *, executor: str = "local", n_jobs: int | None = None,
              threads_per_worker: int | None = None, scheduler: Any = None, progress: bool = False,
              on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Apply ``fn`` to every task; return the results in task order (a :class:`TaskFailure` where a task raised).

    Parameters
    ----------
    fn : a picklable top-level function of one argument (for "local"/"dask" it is sent to other processes).
    tasks : any iterable of picklable tasks; consumed lazily (at most ``2·workers`` in flight).
    executor : "local" (process pool, default), "serial" (this process) or "dask" (a distributed cluster).
    n_jobs : worker processes for "local" (default: every available core); ignored by the others.
    threads_per_worker : BLAS/OpenMP/torch threads of each "local" worker (default ``max(1, cores // n_jobs)``).
        Numeric results match the serial run most closely when each task runs with as many threads as it would
        there (multi-threaded BLAS reductions sum in a different order).
    scheduler : for "dask", the scheduler address or a ``distributed.Client``; default the current client.
    progress : show a tqdm bar on stderr (only when stderr is a terminal).
    on_result : called in this process as ``on_result(index, result)`` as each task finishes (completion order),
        e.g. to store it in a :class:`hmu_diag.cache.ResultCache` so an interrupted run can resume.

    Returns
    -------
    list with one entry per task, ``results[i]`` belonging to the i-th task, identical for every executor.
    """
    if executor not in EXECUTORS:
        raise OptionError(f"executor={executor!r}: choose one of {', '.join(EXECUTORS)}")
    total = len(tasks) if hasattr(tasks, "__len__") else None  # type: ignore[arg-type]
    results: dict[int, Any] = {}
    bar = _progress_bar(total) if progress else None

    def record(index: int, result: Any) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        if bar is not None:
            bar.update(1)

    try:
        if executor == "serial":
            for index, task in enumerate(tasks):
                record(index, call_task(fn, task, index))
        elif executor == "local":
            jobs = _check_n_jobs(n_jobs)
            threads = max(1, available_cores() // jobs) if threads_per_worker is None else int(threads_per_worker)
            if threads < 1:
                raise OptionError(f"threads_per_worker={threads_per_worker}: must be at least 1")
            _run_local(fn, enumerate(tasks), jobs, threads, record)
        else:
            _run_dask(fn, enumerate(tasks), scheduler, record)
    finally:
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(results))]


def _progress_bar(total: int | None) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc="tasks", unit="task", leave=False, file=sys.stderr)


#: modules the forkserver imports once, before any worker: workers are forked from it with torch, scipy and the
#: pipeline already imported, so a pool starts in milliseconds instead of ~3 s of imports per worker
FORKSERVER_PRELOAD = ["hmu_diag.pipeline"]


def _pool_context(fn: Callable[[Any], Any]) -> Any:
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    module = getattr(fn, "__module__", None)
    # effective until the server starts (the first pool of this process); __main__ cannot be preloaded by name
    context.set_forkserver_preload(FORKSERVER_PRELOAD + ([module] if module and module != "__main__" else []))
    return context


def _run_local(fn: Callable[[Any], Any], tasks: Iterator[tuple[int, Any]], n_jobs: int, threads: int,
               record: Callable[[int, Any], None]) -> None:
    """Run on process pools; after a worker dies, rerun each task it may have held alone to find the culprit."""
    while True:
        suspects = _run_pool(fn, tasks, n_jobs, threads, record)
        if not suspects:
            return
        for index, task in suspects:
            if _run_pool(fn, iter([(index, task)]), 1, threads, record):
                record(index, TaskFailure(index, "BrokenProcessPool",
                                          "the worker process died while running this task (killed, out of memory "
                                          "or a crash in native code)"))


def _run_pool(fn: Callable[[Any], Any], tasks: Iterator[tuple[int, Any]], n_jobs: int, threads: int,
              record: Callable[[int, Any], None]) -> list[tuple[int, Any]]:
    """Feed ``tasks`` to one pool with at most ``2·n_jobs`` in flight until they run out (returns []) or a worker dies
    (returns the tasks that were in flight then: any of them may have killed it; the rest of ``tasks`` is left)."""
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=_pool_context(fn), initializer=limit_threads,
                               initargs=(threads,))
    pending: dict[Future, tuple[int, Any]] = {}
    suspects: list[tuple[int, Any]] = []
    finished = False
    try:
        exhausted = False
        while True:
            while not exhausted and not suspects and len(pending) < IN_FLIGHT_PER_WORKER * n_jobs:
                item = next(tasks, None)
                if item is None:
                    exhausted = True
                else:
                    pending[pool.submit(call_task, fn, item[1], item[0])] = item
            if not pending:
                finished = True
                return suspects
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index, task = pending.pop(future)
                try:
                    record(index, future.result())
                except BrokenProcessPool:
                    suspects.append((index, task))
                except Exception as exc:  # noqa: BLE001 -- e.g. a result or task that cannot be pickled
                    record(index, TaskFailure(index, type(exc).__name__, str(exc)))
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)  # interrupted: do not wait for running tasks


def _run_dask(fn: Callable[[Any], Any], tasks: Iterator[tuple[int, Any]], scheduler: Any,
              record: Callable[[int, Any], None]) -> None:
    """Submit to a Dask cluster with at most ``2·workers`` tasks in flight; failures come back as TaskFailure."""
    try:
        from distributed import Client, as_completed, get_client
    except ImportError as exc:
        raise OptionError("executor='dask' needs dask.distributed: pip install 'hmu-diag[dask]'") from exc
    if isinstance(scheduler, Client):
        client, owned = scheduler, False
    elif scheduler is None:
        try:
            client, owned = get_client(), False
        except ValueError as exc:
            raise OptionError("executor='dask' needs scheduler='tcp://host:port' or a distributed.Client") from exc
    else:
        try:
            client, owned = Client(scheduler, timeout="20s"), True
        except (OSError, TimeoutError) as exc:
            raise OptionError(f"scheduler={scheduler!r}: cannot connect to the Dask scheduler ({exc})") from exc
    try:
        limit = IN_FLIGHT_PER_WORKER * max(1, len(client.scheduler_info().get("workers", {})))
        indexes: dict[Any, int] = {}
        queue = as_completed()

        def submit_next() -> bool:
            item = next(tasks, None)
            if item is None:
                return False
            future = client.submit(call_task, fn, item[1], item[0], pure=False)
            indexes[future.key] = item[0]
            queue.add(future)
            return True

        for _ in range(limit):
            if not submit_next():
                break
        for future in queue:
            index = indexes.pop(future.key)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 -- a worker lost, or a (de)serialisation error
                result = TaskFailure(index, type(exc).__name__, str(exc))
            future.release()
            record(index, result)
            submit_next()
    finally:
        if owned:
            client.close()
