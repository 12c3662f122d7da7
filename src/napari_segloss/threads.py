"""How many CPU threads torch uses: one policy for the command line, the widget and the tools.

torch's default (one intra-op thread per core) is right on an idle machine. It is wrong when
something else competes for the cores: on a 2-core machine whose other core was busy, inference
and training with 2 threads were measured 5-15x slower than with 1 (OpenMP threads wait for each
other), see ``benchmarks/README.md``. The policy:

1. ``NAPARI_SEGLOSS_THREADS`` (a positive integer), when set, wins everywhere;
2. otherwise a headless command keeps torch's default (``--threads N`` on ``predict``/``batch``/``train``
   overrides it for one run);
3. the napari widget leaves one core to the GUI: ``cpu_count - 1`` threads, at least 1.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: environment variable that fixes torch's CPU thread count for every napari-segloss entry point
THREADS_ENV = "NAPARI_SEGLOSS_THREADS"


def configured_threads() -> int | None:
    """The thread count from :data:`THREADS_ENV`, or None when it is unset or empty.

    Raises:
        ValueError: the variable is set but not a positive integer.
    """
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {text!r}")
    return value


def threads_for(*, interactive: bool) -> int:
    """Threads the policy gives: the environment variable, else all cores headless, else one fewer."""
    chosen = configured_threads()
    if chosen is not None:
        return chosen
    cores = os.cpu_count() or 1
    return max(1, cores - 1) if interactive else torch.get_num_threads()


def apply_thread_policy(threads: int | None = None, *, interactive: bool = False) -> int:
    """Set torch's intra-op thread count (process-wide) and return it. Call it from the main
    thread (see :func:`torch_threads`).

    Args:
        threads: an explicit count (``None`` or 0: follow the policy).
        interactive: True in the napari widget (leave a core to the GUI).
    """
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    count = threads or threads_for(interactive=interactive)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` CPU threads inside the block, restoring the previous count after.

    Only in the main thread. torch's setting is process-wide (``torch.set_num_threads`` also sets
    the count every new thread starts with), but each thread reads its own copy: a worker thread
    that set and "restored" it would leave the process with its stale copy, and two overlapping
    workers would restore each other's temporary value. So in any other thread the block runs
    with the process's count, unchanged. Threads started inside a main-thread block start with
    ``count``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
