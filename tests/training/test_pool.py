"""The worker pool windows train in: started up front, MLflow-free, results in job order."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time

import pytest

from kwx.training.pool import WORKER_NICENESS, results_in_order, worker_pool


def test_a_worker_imports_what_a_window_needs_and_not_mlflow():
    """A spawned worker unpickles its job from kwx.training.pool: MLflow's imports would double its start-up."""
    probe = ("import sys, kwx.training.pool; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'sklearn', 'optuna'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['optuna', 'sklearn']"


def test_the_pool_starts_every_worker_before_any_job_is_submitted():
    with worker_pool(2) as pool:
        deadline = time.monotonic() + 30
        while len(pool._processes) < 2 and time.monotonic() < deadline:  # starting while the caller prepares
            time.sleep(0.05)
        assert len(pool._processes) == 2


def test_workers_fork_from_one_server_that_every_pool_shares():
    """The server imported kwx once; a worker forked from it is ready to train, and a later pool's too."""
    with worker_pool(2) as first, worker_pool(2) as second:
        parents = set(results_in_order(os.getppid, [()] * 4, 2, first)) | \
            set(results_in_order(os.getppid, [()] * 4, 2, second))
    assert len(parents) == 1 and parents != {os.getpid()}


def test_workers_run_below_the_caller_s_priority():
    """The run's process (logging, progress) and a live loop on the host come before the search."""
    with worker_pool(2) as pool:
        assert set(results_in_order(os.nice, [(0,)] * 2, 2, pool)) == {min(os.nice(0) + WORKER_NICENESS, 19)}


def test_a_worker_sees_the_caller_s_environment_as_it_is_when_the_pool_starts(monkeypatch):
    with worker_pool(2):
        pass  # the server exists now, started without the variable below
    monkeypatch.setenv("KWX_POOL_PROBE", "set after the server started")
    with worker_pool(2) as pool:
        assert list(results_in_order(os.getenv, [("KWX_POOL_PROBE",)] * 2, 2, pool)) == [
            "set after the server started"] * 2


def test_a_worker_of_the_kwx_command_finds_the_cli_imported_by_the_server(tmp_path):
    """Each worker runs the command's script again as its __mp_main__, and `kwx`'s script imports the CLI (~0.9 s):
    the server imported it once for all of them."""
    imports = tmp_path / "imports.txt"
    script = tmp_path / "command.py"
    script.write_text(textwrap.dedent(f"""
        import os
        import sys

        with open({str(imports)!r}, "a") as out:
            out.write(f"{{os.getpid()}} {{__name__}} {{'kwx.cli' in sys.modules}}\\n")
        import time

        import kwx.cli  # as the `kwx` console script does


        def pid_after(seconds):
            time.sleep(seconds)
            return os.getpid()


        if __name__ == "__main__":
            from kwx.training.pool import results_in_order, worker_pool
            with worker_pool(2) as pool:
                print(sorted(set(results_in_order(pid_after, [(1,)] * 2, 2, pool))))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120)
    workers = ast.literal_eval(out.stdout.strip())
    runs = {int(pid): (name, preloaded == "True") for pid, name, preloaded in map(str.split, imports.open())}
    assert runs.pop(out_pid := min(runs, key=lambda pid: runs[pid][0] != "__main__")) == ("__main__", False)
    assert len(workers) == 2 and out_pid not in workers
    assert {runs[pid] for pid in workers} == {("__mp_main__", True)}


def test_results_come_back_in_job_order_from_the_pool_and_inline():
    jobs = [(n,) for n in (5, 1, 4, 2)]
    assert list(results_in_order(abs, jobs, 2)) == [5, 1, 4, 2]
    assert list(results_in_order(abs, jobs, 1)) == [5, 1, 4, 2]


def test_jobs_given_to_a_started_pool_are_submitted_at_once_and_stopped_when_its_block_fails():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the run's setup failed"), worker_pool(2) as pool:
        results_in_order(time.sleep, [(60,)] * 6, 2, pool)
        futures = [item.future for item in pool._pending_work_items.values() if item.fn is time.sleep]
        assert len(futures) == 6  # handed out before the caller asked for a result
        workers = list(pool._processes.values())
        while not any(f.running() for f in futures):  # a worker is in the middle of a job
            time.sleep(0.05)
        raise RuntimeError("the run's setup failed")
    assert time.monotonic() - started < 30  # not after the minute-long jobs in flight, let alone all six
    assert not any(w.is_alive() for w in workers)
    # each worker runs one, and the executor queues up to workers + 1 more ahead of them: the rest never ran
    assert sum(f.cancelled() for f in futures) >= 1
