"""The command line never loses user data and every error is one line with a documented status
(issue #20, classes 1 and 4): ``--overwrite`` replaces only a previous result, a result that
appears while a run works is never replaced, an output overlapping an input is refused, write
failures (ENOSPC, EROFS, EACCES), bad environment values, missing checkpoints and bugs are one
line, and SIGTERM cleans up like Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_segloss import cli, outputs, predict_cli
from napari_segloss.cli import EXIT_STATUSES, main
from napari_segloss.io.writers import write_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((64, 64), bool)
    truth[20:44, 16:40] = True
    return np.clip(60 + 120 * truth + rng.normal(0, 25, truth.shape), 0, 255).astype(np.uint8), truth


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    image, truth = _image()
    write_array(folder / "case.png", image)
    write_array(folder / "case_mask.png", truth)
    return folder / "case.png"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _one_error_line(capsys: pytest.CaptureFixture, command: str = "predict") -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"napari-segloss {command}: "), err
    assert "Traceback" not in err
    return err


def _predict(scan: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(scan), "--checkpoint", "tiny_bce", "--out", str(out), "--device", "cpu", *extra])


# --- no user data lost ----------------------------------------------------------------------


def test_overwrite_refuses_a_folder_of_unrelated_files(tiny_registry, scan, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_bytes(b"years of work")
    (out / "metrics.json").write_text(json.dumps({"napari_segloss_version": "0"}))  # looks like ours, is not
    before = _tree(out)
    assert _predict(scan, out, "--overwrite") == 4
    assert "not a previous napari-segloss result" in _one_error_line(capsys)
    assert _tree(out) == before and _hidden(tmp_path) == []


def test_overwrite_refuses_a_previous_result_the_user_added_files_to(tiny_registry, scan, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(scan, out) == 0
    (out / "tiny_bce" / "my_notes.txt").write_text("keep me")
    assert _predict(scan, out, "--overwrite") == 4
    assert "tiny_bce/my_notes.txt" in _one_error_line(capsys)
    assert (out / "tiny_bce" / "my_notes.txt").read_text() == "keep me"
    (out / "tiny_bce" / "my_notes.txt").unlink()
    assert _predict(scan, out, "--overwrite") == 0  # an untouched previous result is replaced
    marker = json.loads((out / outputs.MARKER).read_text())
    assert sorted(marker["files"]) == sorted(_tree(out).keys() - {outputs.MARKER})


def test_a_result_that_appears_meanwhile_is_never_replaced(tiny_registry, scan, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real = predict_cli._write_outputs

    def other_run_finishes_first(*args, **kwargs):
        out.mkdir()
        (out / "other_run.txt").write_text("a finished result of another run")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_cli, "_write_outputs", other_run_finishes_first)
    assert _predict(scan, out) == 4
    assert "appeared" in _one_error_line(capsys)
    assert _tree(out) == {"other_run.txt": b"a finished result of another run"} and _hidden(tmp_path) == []


def test_overwrite_does_not_replace_a_result_that_changed_meanwhile(tiny_registry, scan, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _predict(scan, out) == 0
    real = predict_cli._write_outputs

    def another_overwrite_finishes_first(*args, **kwargs):
        monkeypatch.setattr(predict_cli, "_write_outputs", real)
        assert _predict(scan, out, "--overwrite", "--threshold", "0.25") == 0  # the other run
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_cli, "_write_outputs", another_overwrite_finishes_first)
    assert _predict(scan, out, "--overwrite") == 4
    assert "changed while this run was working" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["threshold"] == 0.25  # the other run's result kept
    assert _hidden(tmp_path) == []


def test_a_failed_overwrite_puts_the_previous_result_back(tiny_registry, scan, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _predict(scan, out) == 0
    before = _tree(out)

    def rename_fails(_tmp, _target):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(outputs, "_place", rename_fails)
    assert _predict(scan, out, "--overwrite") == 4
    assert os.strerror(errno.EIO) in _one_error_line(capsys)
    assert _tree(out) == before and _hidden(tmp_path) == []


def test_output_overlapping_an_input_is_refused(tiny_registry, scan, tmp_path, capsys):
    before = _tree(scan.parent)
    assert _predict(scan, scan.parent, "--overwrite") == 4  # the folder holding the image
    assert "overlap" in _one_error_line(capsys)
    assert main(["predict", str(scan), "--mask", str(scan.with_name("case_mask.png")), "--checkpoint", "tiny_bce",
                 "--out", str(scan.with_name("case_mask.png")), "--overwrite"]) == 4
    _one_error_line(capsys)
    cohort = tmp_path / "cohort.zip"
    with zipfile.ZipFile(cohort, "w") as archive:
        archive.write(scan, "case.png")
    zipped = cohort.read_bytes()
    for out in (cohort, scan.parent / "results.zip"):  # the input itself, or inside the input folder
        source = cohort if out == cohort else scan.parent
        assert main(["batch", str(source), "--out", str(out), "--overwrite", "--quiet", "--checkpoint", "tiny_bce"]) == 4
        assert "overlap" in _one_error_line(capsys, "batch")
    assert cohort.read_bytes() == zipped and _tree(scan.parent) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_failures_are_one_line_and_leave_nothing(tiny_registry, scan, tmp_path, monkeypatch, capsys, code):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))

    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("napari_segloss.io.writers._write_png", fail)
    out = tmp_path / "results" / "out"
    assert _predict(scan, out) == 4
    assert os.strerror(code) in _one_error_line(capsys)
    assert not out.exists() and _hidden(out.parent) == []

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail)
    cohort = tmp_path / "cohort.zip"
    with zipfile.ZipFile(cohort, "w") as archive:
        archive.write(scan, "case.png")
    result = tmp_path / "results" / "r.zip"
    assert main(["batch", str(cohort), "--out", str(result), "--quiet", "--checkpoint", "tiny_bce"]) == 4
    assert os.strerror(code) in _one_error_line(capsys, "batch")
    assert not result.exists() and _hidden(result.parent) == [] and list(scratch.iterdir()) == []  # cohort removed


def test_unwritable_output_folder_is_one_line(tiny_registry, scan, tmp_path, monkeypatch, capsys):
    def denied(self, *_args, **_kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert _predict(scan, tmp_path / "new" / "out") == 4
    assert "cannot write" in _one_error_line(capsys)


# --- every error is one line with its documented status ----------------------------------


@pytest.mark.parametrize(
    "variable, value",
    [("NAPARI_SEGLOSS_THREADS", "many"), ("NAPARI_SEGLOSS_THREADS", "-1"), ("NAPARI_SEGLOSS_CACHE_MB", "lots")],
)
def test_bad_environment_value_is_a_usage_error(tiny_registry, scan, tmp_path, monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)
    assert _predict(scan, tmp_path / "out") == 2
    assert variable in _one_error_line(capsys)
    assert main(["batch", str(scan.parent), "--out", str(tmp_path / "r.zip"), "--quiet"]) == 2
    assert variable in _one_error_line(capsys, "batch")
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.zip").exists()


def test_missing_inputs_and_checkpoints(tiny_registry, scan, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "absent.png"), "--out", str(tmp_path / "o")]) == 3
    _one_error_line(capsys)
    assert main(["predict", str(scan), "--checkpoint", str(tmp_path / "gone.json"), "--out", str(tmp_path / "o")]) == 5
    _one_error_line(capsys)
    assert main(["batch", str(scan.parent), "--checkpoint", str(tmp_path / "gone.json"), "--out",
                 str(tmp_path / "r.zip"), "--quiet"]) == 5
    _one_error_line(capsys, "batch")
    fifo = tmp_path / "cohort.zip"
    os.mkfifo(fifo)  # opening it would block forever
    assert main(["batch", str(fifo), "--out", str(tmp_path / "r.zip"), "--quiet"]) == 3
    assert "not a regular file" in _one_error_line(capsys, "batch")
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.zip").exists()


def test_bad_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "x.png", "--threads", "two"])
    assert exc.value.code == 2
    assert "--threads" in _one_error_line(capsys)


def test_an_unexpected_error_is_one_line_and_debug_shows_it(tiny_registry, scan, tmp_path, monkeypatch, capsys):
    class Panic(BaseException):  # what pyo3 raises for a Rust panic
        pass

    def boom(*_args, **_kwargs):
        raise Panic("decoder panicked")

    monkeypatch.setattr(predict_cli, "_write_outputs", boom)
    assert _predict(scan, tmp_path / "out") == 70
    assert "internal error: Panic: decoder panicked" in _one_error_line(capsys)
    assert _hidden(tmp_path) == []
    with pytest.raises(Panic):
        main(["--debug", "predict", str(scan), "--checkpoint", "tiny_bce", "--out", str(tmp_path / "out")])
    with pytest.raises(Panic):  # after the sub-command too, as users type it
        main(["predict", str(scan), "--checkpoint", "tiny_bce", "--out", str(tmp_path / "out"), "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(Panic):
        _predict(scan, tmp_path / "out")


def test_debug_is_accepted_on_either_side_of_the_sub_command():
    parse = cli.build_parser().parse_args
    assert parse(["--debug", "train", "--loss", "dice", "--data", "d", "--out", "o"]).debug
    assert parse(["train", "--loss", "dice", "--data", "d", "--out", "o", "--debug"]).debug
    assert parse(["data", "figshare", "src", "--out", "o", "--debug"]).debug
    assert not parse(["train", "--loss", "dice", "--data", "d", "--out", "o"]).debug


def test_exit_statuses_are_documented(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for status, meaning in EXIT_STATUSES.items():
        assert f"{status:>3}  {meaning.split()[0]}" in shown
        assert f"| {status} |" in readme


def test_non_utf8_file_name_survives_predict(tiny_registry, tmp_path, capsys):
    folder = tmp_path / os.fsdecode(b"scans_\xff")
    image, _ = _image()
    scan = write_array(folder / os.fsdecode(b"case_\xfe.png"), image)
    out = tmp_path / os.fsdecode(b"out_\xfd")
    assert _predict(scan, out) == 0
    printed = capsys.readouterr().out
    printed.encode("utf-8")  # printable: no surrogate escapes left
    assert "out_\\xfd" in printed
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["image"].endswith("case_\\xfe.png")
    (out / "metrics.csv").read_text(encoding="utf-8")


def test_scans_whose_names_sanitise_alike_get_distinct_folders(tiny_registry, tmp_path, monkeypatch):
    from napari_segloss.io import Scan

    scans = [Scan(_image(s)[0], (1.0, 1.0), (0.0, 0.0), name) for s, name in enumerate(["T1 post", "T1_post", "t1-post"])]
    monkeypatch.setattr("napari_segloss.io.read_scans", lambda path: scans)
    out = tmp_path / "multi"
    assert main(["predict", "series_folder", "--checkpoint", "tiny_bce", "--out", str(out)]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["T1_post", "T1_post_2", "t1-post"]
    record = json.loads((out / "metrics.json").read_text())
    assert sorted(r["files"][0].split("/")[0] for r in record["results"]) == folders


# --- SIGTERM ---------------------------------------------------------------------------------

_SLOW_BATCH = """
import sys, time
from pathlib import Path
import napari_segloss.batch.process as process
real = process.process_chunk
def slow(*args, **kwargs):
    Path(sys.argv[1]).write_text("started")
    time.sleep(60)
    return real(*args, **kwargs)
process.process_chunk = slow
import napari_segloss.batch.executors as executors
executors.process_chunk = slow
from napari_segloss.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_cleans_up_like_ctrl_c(tiny_registry, scan, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cohort = tmp_path / "cohort.zip"
    with zipfile.ZipFile(cohort, "w") as archive:
        archive.write(scan, "case.png")
    started, out = tmp_path / "started", tmp_path / "results" / "r.zip"
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _SLOW_BATCH, str(started), "batch", str(cohort), "--out", str(out),
               "--checkpoint", "tiny_bce", "--device", "cpu", "--quiet"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), process.stderr.read() if process.poll() is not None else "did not start"
        assert list(scratch.iterdir()) and _hidden(out.parent)  # the extracted cohort and the temporary ZIP
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 143
    finally:
        if process.poll() is None:
            process.kill()
    err = process.stderr.read().strip()
    assert err == "napari-segloss batch: terminated"
    assert list(scratch.iterdir()) == [] and list(out.parent.iterdir()) == []
