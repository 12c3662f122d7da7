"""The CPU thread policy (napari_segloss.threads) and the --threads options of the CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator

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


def test_cli_threads_option_and_bad_environment(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                tmp_path) -> None:
    missing = str(tmp_path / "missing.png")
    torch.set_num_threads(2)
    assert main(["predict", missing, "--threads", "1", "--out", str(tmp_path / "o")]) == 2  # fails on the file...
    assert torch.get_num_threads() == 1  # ...after setting the threads
    monkeypatch.setenv(THREADS_ENV, "lots")
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "r.zip")]) == 2
    assert THREADS_ENV in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", missing, "--threads", "-1"])
