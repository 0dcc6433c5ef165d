"""The processes walk-forward windows train in: a spawned pool that exits with its parent, results in job order.

MLflow-free: a spawned worker imports this module and what a window needs (kwx.training.walkforward), never the
runner that logs, so it starts in about half the time the runner's imports take.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context

import optuna
import pandas as pd

from kwx.config import TrainConfig
from kwx.training.search import make_storage
from kwx.training.walkforward import WindowPlan, WindowResult, train_window

PARENT_POLL_SECONDS = 0.5


@contextmanager
def spawn_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes, started now: each imports kwx while the caller prepares work.

    Leaving the block waits for the jobs submitted; leaving it on an error drops them and stops the workers, so
    the error reaches the user now, not after every window the failed run had handed out."""
    # spawn: workers must not inherit the parent's MLflow/SQLAlchemy threads and connections.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    # A spawn pool starts a process per submitted job while none is idle: one no-op each starts them all.
    for _ in range(workers):
        pool.submit(_started)
    try:
        yield pool
    except BaseException:
        # A worker holds nothing to clean up: it is stopped as abruptly when its parent dies (_exit_with_parent).
        # concurrent.futures has no public way to stop them before Python 3.14 (terminate_workers).
        for process in list(pool._processes.values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # its manager thread reaps them, failing what they held
        raise
    pool.shutdown(wait=True)


def _started() -> None:
    """The job that starts a worker: unpickling it imported this module, and with it everything a window needs."""


def _exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: the worker exits once the process that started it is gone.

    A SIGKILLed parent never shuts its pool down, and each worker holds the call queue's write end itself, so
    it would wait for work forever. An orphan is re-parented, which changes ``os.getppid()``: polled from a
    daemon thread this works on Linux and macOS alike, and whatever thread of the parent spawned the worker
    (prctl's PR_SET_PDEATHSIG is Linux-only and fires when that *thread* exits). The pid comes from the
    parent, so a parent that died before this ran is noticed too.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="kwx-exit-with-parent", daemon=True).start()


def results_in_order(fn: Callable, jobs: Sequence[tuple], workers: int, executor: Executor | None = None) -> Iterator:
    """``fn(*job)`` of every job, yielded in job order while up to ``workers`` processes run them.

    Inline (as the results are asked for) with one worker or one job. ``executor`` is a pool the caller started
    (``spawn_pool``), perhaps shared across calls (spawned workers take seconds to import kwx, so a matrix starts
    them once, not per config): every job is submitted to it before this returns, so the workers start on them
    while the caller does other work.
    """
    if workers <= 1 or len(jobs) <= 1:
        return (fn(*job) for job in jobs)
    if executor is None:
        return _in_own_pool(fn, jobs, workers)
    futures = [executor.submit(fn, *job) for job in jobs]
    return (future.result() for future in futures)


def _in_own_pool(fn: Callable, jobs: Sequence[tuple], workers: int) -> Iterator:
    with spawn_pool(min(workers, len(jobs))) as pool:
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
