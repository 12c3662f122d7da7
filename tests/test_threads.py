"""The CPU thread policy (napari_segloss.threads) and the --threads options of the CLI."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
import torch

from napari_segloss.cli import main
from napari_segloss.threads import THREADS_ENV, apply_thread_policy, configured_threads, threads_for, torch_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert configured_threads() == 3
    assert threads_for(interactive=True) == 3
    assert threads_for(interactive=False) == 3
    assert apply_thread_policy() == 3 and torch.get_num_threads() == 3


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5"])
def test_bad_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(THREADS_ENV, text)
    with pytest.raises(ValueError, match=THREADS_ENV):
        configured_threads()


def test_interactive_leaves_a_core_to_the_gui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert threads_for(interactive=True) == 7
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert threads_for(interactive=True) == 1
    torch.set_num_threads(2)
    assert threads_for(interactive=False) == 2  # headless: torch's current default is kept


def test_explicit_count_and_restoring_context() -> None:
    assert apply_thread_policy(1) == 1 and torch.get_num_threads() == 1
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        apply_thread_policy(-1)


def _in_thread(call: Callable[[], object]) -> object:
    """``call()`` run in a new thread; its result."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    thread.join()
    return out[0]


def test_overlapping_worker_blocks_leave_the_process_count_alone() -> None:
    torch.set_num_threads(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def worker_a() -> None:
        with torch_threads(1):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def worker_b() -> None:
        a_in.wait(10)
        with torch_threads(1):  # entered while A's block is on: A's temporary count looks like "before"
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert torch.get_num_threads() == 2
    assert _in_thread(torch.get_num_threads) == 2  # what every new (worker) thread starts with


def test_a_worker_with_a_stale_count_does_not_reset_the_process() -> None:
    torch.set_num_threads(2)
    started, policy_set, done = threading.Event(), threading.Event(), threading.Event()

    def long_lived_worker() -> None:  # a pool thread that read the count before the policy changed
        torch.get_num_threads()
        started.set()
        policy_set.wait(10)
        with torch_threads(1):
            pass
        done.set()

    thread = threading.Thread(target=long_lived_worker)
    thread.start()
    started.wait(10)
    apply_thread_policy(1)
    policy_set.set()
    thread.join(20)
    assert done.is_set()
    assert torch.get_num_threads() == 1 and _in_thread(torch.get_num_threads) == 1


def test_cli_threads_option_and_bad_environment(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                tmp_path) -> None:
    missing = str(tmp_path / "missing.png")
    torch.set_num_threads(2)
    assert main(["predict", missing, "--threads", "1", "--out", str(tmp_path / "o")]) == 3  # fails on the file (exit 3)...
    assert torch.get_num_threads() == 1  # ...after setting the threads
    monkeypatch.setenv(THREADS_ENV, "lots")
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "r.zip")]) == 2
    assert THREADS_ENV in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", missing, "--threads", "-1"])
