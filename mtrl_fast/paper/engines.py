"""Where a run's cells are computed: in this process, in a local pool of processes, or on a Dask
cluster. Each engine is a generator of ``(cell, payload)`` as cells finish, so that the caller
stores results (and shows progress) the same way whatever runs them; closing the generator early
(an error, a signal) stops the engine's work.
"""

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing import get_context

from .store import signals_deferred

#: Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT_S = 10
#: Times a cell is resubmitted after its worker failed or died.
RETRIES = 2


class WorkerDied(RuntimeError):
    """A worker process died (killed by the OS, perhaps for memory) while computing a cell."""


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached or cannot run the cells."""


def in_process(compute, cells):
    """Compute the cells one after another, here."""
    for cell in cells:
        yield cell, compute(cell)


# --- a local pool of processes -------------------------------------------------------------------


def _watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # the run is gone: nobody would store this worker's result


def _init_worker(parent):
    # Ctrl-C reaches the whole process group: the parent stops the workers itself, without a
    # traceback from each. And a worker whose parent died (even by SIGKILL) exits within a second.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _end_workers(pool):
    """Stop the pool now: cancel queued cells and end the running ones' processes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    manager = getattr(pool, "_executor_manager_thread", None)  # and this
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
    # At exit, CPython (3.11) writes to the pool's wake-up pipe without a lock: a manager thread
    # still closing that pipe then prints a traceback (EBADF) after the run has stopped cleanly.
    if manager is not None:
        manager.join(5)


def process_pool(compute, cells, jobs):
    """Compute the cells in ``jobs`` worker processes of this machine (spawned: OpenMP's thread
    pool does not survive a fork). A worker that dies stops the run with :class:`WorkerDied`."""
    pool = ProcessPoolExecutor(
        min(jobs, len(cells)), mp_context=get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
    )
    try:
        # The pool starts its workers as cells are submitted. A stop raised while a worker is being
        # spawned would leave that child half-started and unknown to the pool: it would print a
        # traceback (its start-up data cut short) after the run had stopped. So the stop waits for
        # every worker to start whole, and then ends them all.
        with signals_deferred():
            futures = {pool.submit(compute, cell): cell for cell in cells}
        done = 0
        for future in as_completed(futures):
            yield futures[future], future.result()
            done += 1
    except BrokenProcessPool:
        _end_workers(pool)
        raise WorkerDied(
            f"a worker process died (killed by the operating system, perhaps for lack of memory) "
            f"with {len(cells) - done} cells unfinished"
        ) from None
    except BaseException:  # a signal, an error, or the caller closing the generator
        _end_workers(pool)
        raise
    pool.shutdown()


# --- a Dask cluster ------------------------------------------------------------------------------


def _worker_problem(version):
    """Run on each Dask worker: why it cannot compute cells, or ``None``."""
    try:
        import mtrl_fast
        import mtrl_fast.paper  # noqa: F401  (raises, naming the paper extra, where it is missing)
    except ImportError as error:
        return f"{error} (install mtrl_fast[paper] on every worker)"
    if mtrl_fast.__version__ != version:
        return f"it has mtrl_fast {mtrl_fast.__version__}, this client {version}"
    return None


def connect(scheduler=None, scheduler_file=None, timeout=CONNECT_TIMEOUT_S):
    """A Dask client for the cluster at ``scheduler`` (an address) or described by
    ``scheduler_file``, checked: reachable within ``timeout`` seconds, with workers that can run
    the cells (:class:`ClusterError` otherwise)."""
    try:
        from distributed import Client
    except ImportError as error:
        raise ImportError(f"{error}: running on a Dask cluster needs pip install 'mtrl_fast[distributed]'") from None
    from .. import __version__

    where = scheduler or f"the scheduler in {scheduler_file}"
    try:
        client = Client(address=scheduler, scheduler_file=scheduler_file, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {where} within {timeout} s ({type(error).__name__}: {error})"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError):
            raise ClusterError(f"the Dask cluster at {where} has no workers") from None
        try:
            problems = client.run(_worker_problem, __version__)
        except Exception as error:  # noqa: BLE001 - a worker that cannot even unpickle the check
            raise ClusterError(
                f"a Dask worker cannot run the cells ({type(error).__name__}: {error}); install "
                "mtrl_fast[paper] on every worker"
            ) from None
        bad = {worker: problem for worker, problem in problems.items() if problem}
        if bad:
            worker, problem = next(iter(bad.items()))
            raise ClusterError(f"Dask worker {worker} cannot run the cells: {problem}")
    except BaseException:
        client.close()
        raise
    return client


def _with_threads(threads, function, *arguments):
    from .. import num_threads

    with num_threads(threads):
        return function(*arguments)


def on_cluster(client, compute, cells, sharded=(), threads=1):
    """Compute the cells on the Dask cluster behind ``client``, each resubmitted up to
    :data:`RETRIES` times if its worker dies; results stream back as they finish.

    The cells in ``sharded`` (too large for one worker's memory budget) are computed by
    ``compute(cell, map_shards=...)`` here, in the client, while their rounds' shards run on the
    cluster's workers with ``threads`` threads each; the other cells are sent whole.
    """
    from distributed import as_completed as dask_completed

    def map_shards(function, argument_lists):
        argument_lists = list(argument_lists)
        stamp = f"{os.getpid()}-{time.time_ns()}"
        futures = client.map(
            partial(_with_threads, threads, function),
            *zip(*argument_lists),
            pure=False,
            retries=RETRIES,
            key=[f"mtrl-fast-shard-{stamp}-{i}" for i in range(len(argument_lists))],
        )
        try:
            # In shard order, one at a time: the client holds one shard's gradients, and the sums
            # do not depend on which worker ran what.
            for future in futures:
                yield future.result()
                future.release()
        finally:
            client.cancel([future for future in futures if not future.done()])

    whole = [cell for cell in cells if cell not in sharded]
    futures = {
        client.submit(
            compute, cell, key=f"mtrl-fast-{cell.name}-{os.getpid()}-{time.time_ns()}", retries=RETRIES, pure=False
        ): cell
        for cell in whole
    }
    try:
        for cell in cells:
            if cell in sharded:
                yield cell, compute(cell, map_shards=map_shards)
        for future in dask_completed(futures, loop=client.loop):
            cell = futures[future]
            try:
                payload = future.result()
            except Exception as error:  # noqa: BLE001 - the cell's own error, raised on a worker
                raise ClusterError(
                    f"cell {cell.name} failed on the cluster ({type(error).__name__}: {error})"
                ) from None
            yield cell, payload
    finally:
        client.cancel([future for future in futures if not future.done()])
