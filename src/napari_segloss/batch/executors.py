"""Where chunks run: inline, on a local thread pool, or on a dask.distributed cluster.

All three take the chunks lazily and keep at most a few in flight (``2 x`` the workers), so
memory stays bounded however large the input. The function they run is always
:func:`napari_segloss.batch.process.process_chunk`. A chunk that raises anything but a
:data:`~napari_segloss.batch.errors.FATAL` exception (``BaseException`` panics included) is
yielded with that exception and the run goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator

from napari_segloss.batch.errors import FATAL, BatchCancelled, BatchError
from napari_segloss.batch.process import ItemOutput, Job, process_chunk
from napari_segloss.batch.samples import Failure, Sample
from napari_segloss.inference import InferenceCancelled

Chunk = list[Sample] | Failure
#: what :func:`run_chunks` yields: the chunk and its outputs, or the exception that stopped it
Done = tuple[Chunk, list[ItemOutput] | BaseException | None]


def _cancelled(cancel: Callable[[], bool] | None) -> bool:
    return cancel is not None and bool(cancel())


def _refill(
    source: Iterator[Chunk], pending: dict, window: int, submit: Callable[[list[Sample]], object],
    cancel: Callable[[], bool] | None,
) -> Iterator[Done]:
    """Submit chunks from ``source`` until ``window`` are in flight (``pending``: future -> chunk),
    the source is empty or ``cancel()`` says stop; read failures are yielded straight through."""
    while len(pending) < window and not _cancelled(cancel):
        chunk = next(source, None)
        if chunk is None:
            return
        if isinstance(chunk, Failure):
            yield chunk, None
            continue
        pending[submit(chunk)] = chunk


def _inline(chunks: Iterable[Chunk], job: Job, cancel: Callable[[], bool] | None) -> Iterator[Done]:
    for chunk in chunks:
        if _cancelled(cancel):
            raise BatchCancelled("cancelled")
        if isinstance(chunk, Failure):
            yield chunk, None
            continue
        try:
            yield chunk, process_chunk(chunk, job, cancel)
        except InferenceCancelled:
            raise BatchCancelled("cancelled") from None
        except FATAL:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported per item, the batch goes on
            yield chunk, exc


def _threads(chunks: Iterable[Chunk], job: Job, workers: int, cancel: Callable[[], bool] | None) -> Iterator[Done]:
    pending: dict[cf.Future, Chunk] = {}
    source = iter(chunks)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segloss-batch") as pool:
        try:
            while True:
                yield from _refill(source, pending, 2 * workers,
                                   lambda chunk: pool.submit(process_chunk, chunk, job, cancel), cancel)
                if _cancelled(cancel):
                    raise BatchCancelled("cancelled")
                if not pending:
                    return
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    chunk = pending.pop(future)
                    exc = future.exception()
                    if isinstance(exc, InferenceCancelled):
                        raise BatchCancelled("cancelled")
                    if isinstance(exc, FATAL):
                        raise exc
                    yield chunk, exc if exc is not None else future.result()
        finally:
            for future in pending:
                future.cancel()


def _dask(chunks: Iterable[Chunk], job: Job, scheduler: str, cancel: Callable[[], bool] | None) -> Iterator[Done]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise BatchError("--scheduler needs dask.distributed: pip install 'napari-segloss[dask]'") from exc
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise BatchError(f"cannot connect to the dask scheduler at {scheduler}: {exc}") from None
    pending: dict = {}
    finished = as_completed(loop=client.loop)
    source = iter(chunks)

    def submit(chunk: list[Sample]) -> object:
        future = client.submit(process_chunk, chunk, job, pure=False)
        finished.add(future)
        return future

    try:
        window = 2 * max(1, sum(client.nthreads().values()))
        while True:
            yield from _refill(source, pending, window, submit, cancel)
            if _cancelled(cancel):
                raise BatchCancelled("cancelled")
            if not pending:
                return
            future = next(finished)
            chunk = pending.pop(future)
            try:
                result = future.result()
            except FATAL:
                raise
            except BaseException as exc:  # noqa: BLE001 - a chunk failing on a worker is reported per item
                result = exc
            yield chunk, result
    finally:
        if pending:
            client.cancel(list(pending))
        client.close()


def run_chunks(
    chunks: Iterable[Chunk],
    job: Job,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[Done]:
    """Run :func:`process_chunk` over ``chunks``; yield ``(chunk, outputs | exception | None)`` as
    chunks finish (failures from reading are passed through with None).

    ``scheduler`` (a dask.distributed address such as ``tcp://host:8786``) wins over ``workers``;
    ``workers > 1`` uses that many local threads; otherwise chunks run in the calling thread.
    ``cancel()`` is checked before each submission and after each completion; raises
    :class:`BatchCancelled` (chunks in flight on local threads finish or stop at their next
    slice batch first).
    """
    if scheduler:
        return _dask(chunks, job, scheduler, cancel)
    if workers > 1:
        return _threads(chunks, job, workers, cancel)
    return _inline(chunks, job, cancel)
