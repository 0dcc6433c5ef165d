"""The processes walk-forward windows train in: forked from one server that imported kwx once, exiting with
their parent, results in job order.

MLflow-free: the server imports this module and what a window needs (kwx.training.walkforward), never the runner
that logs, and each worker forks from it ready to train. Spawned workers each imported all of it themselves: two
imports of ~1.7 CPU-s competing with the caller's dataset build on a 2-core machine.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager

import optuna
import pandas as pd

from kwx.config import TrainConfig
from kwx.training.search import make_storage
from kwx.training.walkforward import WindowPlan, WindowResult, train_window

PARENT_POLL_SECONDS = 0.5
# Workers run below their caller's priority: with a worker per core, the run's own process (logging each window
# to MLflow, the progress bar) and anything else on the host, such as a live loop, get a core when they need one
# instead of queueing behind the search (measured: a 2-worker run's logging took 2.2 s of wall for ~1.0 s of
# CPU). On an idle machine this changes nothing.
WORKER_NICENESS = 10
# The CLI, imported by the server when the caller is the `kwx` command: each worker runs the command's script
# again as its __mp_main__ (the server itself cannot: Python 3.11's forkserver never hands it the script's path),
# and the script imports the CLI, ~0.9 s a worker.
CLI_MODULE = "kwx.cli"


def worker_context() -> multiprocessing.context.BaseContext:
    """Fork server where the platform has one (Linux, macOS), else spawn: never a plain fork, whose workers would
    inherit the caller's MLflow/SQLAlchemy threads and connections. The server is the caller's, started with its
    first pool and reused by every later one (a matrix of configs, a test session)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, *([CLI_MODULE] if CLI_MODULE in sys.modules else [])])
    return context


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` processes, starting now: in the background, so the caller prepares work meanwhile
    (starting the first pool waits for the fork server's imports).

    Leaving the block waits for the jobs submitted; leaving it on an error drops them and stops the workers, so
    the error reaches the user now, not after every window the failed run had handed out."""
    # A worker gets the caller's environment as it is now, as a spawned one would: the fork server's is the
    # caller's as it was when the server started (a storage URL's credentials may have come since).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=_worker_setup,
                               initargs=(os.getpid(), dict(os.environ)))
    starter = ThreadPoolExecutor(1, thread_name_prefix="kwx-pool-start")
    started = starter.submit(_start_workers, pool, workers)
    starter.shutdown(wait=False)  # its one job goes on; the thread ends with it
    try:
        yield pool
        started.result()  # a pool that could not start says so, not a thread's traceback
    except BaseException:
        started.exception()  # every worker started so far is known
        # A worker holds nothing to clean up: it is stopped as abruptly when its parent dies (_worker_setup).
        # concurrent.futures has no public way to stop them before Python 3.14 (terminate_workers).
        for process in list(pool._processes.values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # its manager thread reaps them, failing what they held
        raise
    pool.shutdown(wait=True)


def _start_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Every worker of ``pool``, now. A pool starts a process per submitted job only while none is idle, and a
    forked worker is idle a moment after it starts, so no-op jobs alone started one worker, sometimes two. The
    pool has no public call for this (``_spawn_process`` is what ``submit`` calls); the no-op then starts the
    thread that hands out jobs and, at shutdown, tells the workers to exit."""
    with pool._shutdown_lock:
        while len(pool._processes) < workers:
            pool._spawn_process()
    pool.submit(_started)


def _started() -> None:
    """The job that starts the pool's manager thread once its workers are running."""


def _worker_setup(parent_pid: int, environment: Mapping[str, str]) -> None:
    """Pool initializer: the caller's environment, a lower priority (``WORKER_NICENESS``), and the worker exits
    once the process that started it is gone.

    A SIGKILLed parent never shuts its pool down, and each worker holds the call queue's write end itself, so
    it would wait for work forever. The fork server exits with its parent, so a worker is re-parented when
    either is gone, which changes ``os.getppid()``: polled from a daemon thread this works on Linux and macOS
    alike, and whatever thread of the parent started the worker (prctl's PR_SET_PDEATHSIG is Linux-only and
    fires when that *thread* exits). The parent's pid comes from the parent, so a parent that died before this
    ran (its worker already re-parented) is noticed too.
    """
    if hasattr(os, "nice"):  # POSIX
        os.nice(WORKER_NICENESS)
    os.environ.clear()
    os.environ.update(environment)
    first_parent = os.getppid()  # the fork server, or the caller itself for a spawned worker

    def watch() -> None:
        while os.getppid() == first_parent and _alive(parent_pid):
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="kwx-exit-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # no such process, or someone else's under the parent's pid
        return False
    return True


def results_in_order(fn: Callable, jobs: Sequence[tuple], workers: int, executor: Executor | None = None) -> Iterator:
    """``fn(*job)`` of every job, yielded in job order while up to ``workers`` processes run them.

    Inline (as the results are asked for) with one worker or one job. ``executor`` is a pool the caller started
    (``worker_pool``), perhaps shared across calls (a matrix starts its workers once, not per config): every job
    is submitted to it before this returns, so the workers start on them while the caller does other work.
    """
    if workers <= 1 or len(jobs) <= 1:
        return (fn(*job) for job in jobs)
    if executor is None:
        return _in_own_pool(fn, jobs, workers)
    futures = [executor.submit(fn, *job) for job in jobs]
    return (future.result() for future in futures)


def _in_own_pool(fn: Callable, jobs: Sequence[tuple], workers: int) -> Iterator:
    with worker_pool(min(workers, len(jobs))) as pool:
        yield from results_in_order(fn, jobs, workers, pool)


def window_slice(frame: pd.DataFrame, window_plan: WindowPlan) -> pd.DataFrame:
    """The rows of ``frame`` a window trains and tests on: all a worker needs of them."""
    w = window_plan.window
    return frame[(frame["event_date"] >= w.train_start) & (frame["event_date"] <= w.test_end)]


def train_in_worker(frame: pd.DataFrame, features: list[str], config: TrainConfig, window_plan: WindowPlan,
                    storage_spec: str | None, study_prefix: str) -> WindowResult:
    """One window, as a pool's job: searched with the run's Optuna storage (its spec: a storage does not pickle)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return train_window(frame, features, config, window_plan, optuna_storage=make_storage(storage_spec),
                        study_prefix=study_prefix)
