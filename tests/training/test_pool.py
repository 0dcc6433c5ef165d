"""The worker pool windows train in: started up front, MLflow-free, results in job order."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kwx.training.pool import results_in_order, spawn_pool


def test_a_worker_imports_what_a_window_needs_and_not_mlflow():
    """A spawned worker unpickles its job from kwx.training.pool: MLflow's imports would double its start-up."""
    probe = ("import sys, kwx.training.pool; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'sklearn', 'optuna'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['optuna', 'sklearn']"


def test_the_pool_starts_every_worker_before_any_job_is_submitted():
    with spawn_pool(2) as pool:
        assert len(pool._processes) == 2  # both importing while the caller prepares its jobs


def test_results_come_back_in_job_order_from_the_pool_and_inline():
    jobs = [(n,) for n in (5, 1, 4, 2)]
    assert list(results_in_order(abs, jobs, 2)) == [5, 1, 4, 2]
    assert list(results_in_order(abs, jobs, 1)) == [5, 1, 4, 2]


def test_jobs_given_to_a_started_pool_are_submitted_at_once_and_stopped_when_its_block_fails():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the run's setup failed"), spawn_pool(2) as pool:
        results_in_order(time.sleep, [(60,)] * 6, 2, pool)
        futures = [item.future for item in pool._pending_work_items.values() if item.fn is time.sleep]
        assert len(futures) == 6  # handed out before the caller asked for a result
        workers = list(pool._processes.values())
        while not any(f.running() for f in futures):  # a worker is in the middle of a job
            time.sleep(0.05)
        raise RuntimeError("the run's setup failed")
    assert time.monotonic() - started < 30  # not after the minute-long jobs in flight, let alone all six
    assert not any(w.is_alive() for w in workers)
    assert sum(f.cancelled() for f in futures) >= 3  # at most one running and one queued to each worker
