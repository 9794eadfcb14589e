"""The local pool engine's stop: nothing of the pool outlives it."""

import time
from concurrent.futures import ProcessPoolExecutor, process
from multiprocessing import get_context

from mtrl_fast.paper.engines import _end_workers


def test_ending_the_workers_waits_for_the_pools_manager_thread(monkeypatch):
    """Before: the manager thread could still be closing its wake-up pipe when the interpreter
    exited, and CPython's exit hook, writing to that pipe, printed a traceback (EBADF) after a run
    stopped by SIGTERM had said so cleanly (seen in CI). A manager slowed down as on a loaded
    machine makes the race certain."""
    closing = process._ExecutorManagerThread.join_executor_internals

    def slow_to_close(self):
        time.sleep(0.5)
        closing(self)

    monkeypatch.setattr(process._ExecutorManagerThread, "join_executor_internals", slow_to_close)
    pool = ProcessPoolExecutor(2, mp_context=get_context("spawn"))
    futures = [pool.submit(time.sleep, 30) for _ in range(3)]
    workers = list(pool._processes.values())
    manager = pool._executor_manager_thread
    _end_workers(pool)
    assert not manager.is_alive()
    assert not any(worker.is_alive() for worker in workers)
    assert all(future.done() for future in futures)
