"""Issue 15, security and data loss (items 3 and 4): what ``convert`` may replace, races, interrupts.

Each test builds the situation in a temporary directory, asserts the exact refusal, and that
nothing outside the destination changed (the source above all).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from convbert_common import checkpoint as ck
from convbert_common import fileio
from convbert_tools import convert as conv
from convbert_tools.cli import main
from tests.conftest import TESTS, fixture_file
from tests.hostile import one_line_error, snapshot

REPO = TESTS.parent


# ------------------------------------------------------------------ destination vs source (item 3)
def test_converting_a_checkpoint_onto_itself_is_refused_and_the_source_is_untouched(seqcls, tmp_path, capsys):
    (seqcls / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    assert main(["convert", str(seqcls), str(seqcls), "--force", "-q"]) == 1
    line = one_line_error(capsys, "convert")
    assert line.endswith(f"error: {seqcls} is the source {seqcls}: converting in place would destroy it; "
                         "choose another destination")
    assert snapshot(tmp_path) == before


def test_a_symlink_to_the_source_is_the_source(seqcls, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(seqcls)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="link is the source .*seqcls: converting in place would destroy it"):
        conv.convert(str(seqcls), str(link), force=True, progress=False)
    assert snapshot(tmp_path) == before


def test_the_current_directory_holding_the_source_is_refused(seqcls, tmp_path, monkeypatch, capsys):
    (tmp_path / "unrelated.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(["convert", "seqcls", ".", "--force", "-q"]) == 1
    assert one_line_error(capsys, "convert").endswith(
        "error: . contains the source seqcls: replacing it would delete the source; choose another destination")
    assert snapshot(tmp_path) == before


def test_the_current_directory_is_never_replaced_even_without_the_source_in_it(seqcls, tmp_path, monkeypatch):
    work = tmp_path / "projects" / "work"
    work.mkdir(parents=True)
    (work / "config.json").write_text("{}")  # would look like a previous output
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"^\. is the current directory: choose a new destination"):
        conv.convert(str(seqcls), ".", force=True, progress=False)
    with pytest.raises(ValueError, match=r"^\.\. is a parent of the current directory"):
        conv.convert(str(seqcls), "..", force=True, progress=False)
    assert snapshot(tmp_path) == before


def test_a_destination_containing_the_source_is_refused(seqcls, tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=f"^{tmp_path} contains the source .*: replacing it would delete the source"):
        conv.convert(str(seqcls), str(tmp_path), force=True, progress=False)
    assert snapshot(tmp_path) == before


def test_a_destination_inside_the_source_directory_is_refused(seqcls, tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="out is inside the source directory .*seqcls: the conversion would change"):
        conv.convert(str(seqcls), str(seqcls / "out"), progress=False)
    assert snapshot(tmp_path) == before


def test_a_destination_holding_the_config_file_is_refused(seqcls, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(seqcls / "config.json", other / "config.json")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="other contains the source .*config.json"):
        conv.convert(str(seqcls), str(other), force=True, config_path=str(other / "config.json"), progress=False)
    assert snapshot(tmp_path) == before


def test_a_tf1_prefix_source_is_its_files(tmp_path):
    pytest.importorskip("tensorflow")
    src = tmp_path / "tf1"
    shutil.copytree(fixture_file("tf1-original/model.ckpt.index").parent, src)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="tf1 contains the source .*model.ckpt"):
        conv.convert(str(src / "model.ckpt"), str(src), force=True, progress=False)
    assert snapshot(tmp_path) == before
    # Beside the prefix files is fine: the source is the files, not their folder.
    conv.convert(str(src / "model.ckpt"), str(src / "converted"), progress=False)
    assert (src / "converted" / "model.safetensors").exists()
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("tf1/converted")} == before


# ------------------------------------------------------------------ what --force may replace (item 3)
def test_force_refuses_a_directory_with_other_files_and_lists_what_would_be_lost(seqcls, tmp_path, capsys):
    dst = tmp_path / "dst"
    conv.convert(str(seqcls), str(dst), progress=False)
    for i in range(12):
        (dst / f"photo{i:02d}.jpg").write_bytes(b"\xff\xd8")
    (dst / "notes").mkdir()
    (dst / "notes" / "todo.md").write_text("x")
    before = snapshot(tmp_path)
    assert main(["convert", str(seqcls), str(dst), "--force", "--to", "pytorch-bin", "-q"]) == 1
    line = one_line_error(capsys, "convert")
    assert (f"{dst} holds 13 entries that are not checkpoint files, which --force would delete: "
            "notes/todo.md, photo00.jpg, photo01.jpg, photo02.jpg, photo03.jpg, photo04.jpg, photo05.jpg, "
            "photo06.jpg, photo07.jpg, photo08.jpg and 3 more; nothing was written") in line
    assert snapshot(tmp_path) == before


def test_force_replaces_a_previous_output_including_checkpoint_subdirectories(seqcls, tmp_path):
    dst = tmp_path / "dst"
    conv.convert(str(seqcls), str(dst), to="pytorch-bin", progress=False)
    conv.convert(str(seqcls), str(dst / "generator"), progress=False)  # a pretraining layout's sub-checkpoint
    outside = snapshot(tmp_path, skip=(dst,))
    conv.convert(str(seqcls), str(dst), force=True, progress=False)
    assert sorted(os.listdir(dst)) == sorted(["config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
                                              "tokenizer_config.json", "special_tokens_map.json"])
    assert snapshot(tmp_path, skip=(dst,)) == outside


def test_force_never_turns_a_file_into_a_directory_or_back(seqcls, tmp_path):
    a_file = tmp_path / "out"
    a_file.write_text("important")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="out exists and is not a directory; --force replaces a previous "
                                              "checkpoint directory only"):
        conv.convert(str(seqcls), str(a_file), force=True, progress=False)
    assert snapshot(tmp_path) == before
    folder = tmp_path / "model.keras"
    folder.mkdir()
    with pytest.raises(FileExistsError, match="model.keras exists and is not a file"):
        conv.check_replaceable(str(folder), "file")
    conv.check_replaceable(str(a_file), "file")  # a single file is a previous output of a file format


def test_without_force_an_existing_destination_is_refused_before_reading(seqcls, tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    dst.mkdir()
    monkeypatch.setattr(conv, "read_source", lambda *a, **k: pytest.fail("read the source"))
    with pytest.raises(FileExistsError, match="dst already exists .pass --force to overwrite."):
        conv.convert(str(seqcls), str(dst), progress=False)


# ------------------------------------------------------------------ races and interrupts (item 4)
def _write_then_race(racing, original):
    """A safetensors writer that lets ``racing()`` create the destination while it writes."""
    def write(path, tensors):
        original(path, tensors)
        racing()
    return write


def test_a_destination_that_appears_during_the_write_is_not_replaced(seqcls, tmp_path, monkeypatch, capsys):
    dst = tmp_path / "dst"

    def other_run():
        dst.mkdir()
        (dst / "config.json").write_text('{"the": "other run"}')

    monkeypatch.setattr(ck, "write_safetensors", _write_then_race(other_run, ck.write_safetensors))
    assert main(["convert", str(seqcls), str(dst), "-q"]) == 1
    assert one_line_error(capsys, "convert").endswith(
        f"error: {dst} appeared while this conversion was writing it (another run?); it was left as it is "
        "(pass --force to replace it)")
    assert (dst / "config.json").read_text() == '{"the": "other run"}'
    assert sorted(os.listdir(tmp_path)) == ["dst", "seqcls"]  # no temporaries left


def test_an_empty_directory_that_appears_during_the_write_is_not_replaced_either(seqcls, tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    monkeypatch.setattr(ck, "write_safetensors", _write_then_race(dst.mkdir, ck.write_safetensors))
    with pytest.raises(FileExistsError, match="appeared while this conversion was writing it"):
        conv.convert(str(seqcls), str(dst), progress=False)
    assert os.listdir(dst) == []
    assert sorted(os.listdir(tmp_path)) == ["dst", "seqcls"]


def test_with_force_what_appeared_meanwhile_is_checked_again_before_it_is_replaced(seqcls, tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    conv.convert(str(seqcls), str(dst), progress=False)
    monkeypatch.setattr(ck, "write_safetensors",
                        _write_then_race(lambda: (dst / "thesis.tex").write_text("x"), ck.write_safetensors))
    with pytest.raises(FileExistsError, match="1 entry that is not a checkpoint file, which --force would delete: "
                                              "thesis.tex"):
        conv.convert(str(seqcls), str(dst), force=True, progress=False)
    assert (dst / "thesis.tex").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["dst", "seqcls"]


def test_the_final_rename_never_replaces_a_file_either(tmp_path):
    target = tmp_path / "model.keras"
    with pytest.raises(FileExistsError):
        with fileio.atomic_path(target, overwrite=False) as tmp:
            with open(tmp, "w") as fh:
                fh.write("new")
            target.write_text("the other run")
    assert target.read_text() == "the other run"
    assert os.listdir(tmp_path) == ["model.keras"]


_SLOW_CONVERT = textwrap.dedent("""
    import sys, time
    from convbert_common import checkpoint as ck
    from convbert_tools.cli import main

    def slow(path, tensors):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        print("writing", flush=True)
        time.sleep(60)

    ck.write_safetensors = slow
    sys.exit(main(["convert", sys.argv[1], sys.argv[2], "-q"]))
""")


def test_sigterm_removes_the_temporaries_as_ctrl_c_does(seqcls, tmp_path):
    dst = tmp_path / "dst"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, str(seqcls), str(dst)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert [n for n in os.listdir(tmp_path) if ".convbert-" in n]  # the temporary is there now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip() == "convbert convert: interrupted (SIGTERM); nothing was left half-written"
    assert sorted(os.listdir(tmp_path)) == ["seqcls"]


# ------------------------------------------------------------------ leftovers of killed runs (item 4)
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_runs_are_named_warned_about_and_cleaned(seqcls, tmp_path, caplog, capsys):
    dead = _dead_pid()
    stale = tmp_path / f".dst.convbert-{dead}-abc123.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    live = tmp_path / f".other.convbert-{os.getpid()}-xyz.tmp"  # a run that is still going
    live.write_text("busy")
    with caplog.at_level("WARNING", logger="convbert_tools.convert"):
        conv.convert(str(seqcls), str(tmp_path / "dst"), progress=False)
    assert f"holds 1 temporary of interrupted runs (.dst.convbert-{dead}-abc123.tmp; 0.0 MB): remove it with " \
           f"`convbert clean {tmp_path}`" in caplog.text
    assert main(["clean", str(tmp_path), "--dry-run"]) == 0
    assert f"would remove {stale} (0.0 MB, from process {dead})" in capsys.readouterr().out
    assert stale.exists()
    assert main(["clean", str(tmp_path)]) == 0
    assert f"removed {stale}" in capsys.readouterr().out
    assert not stale.exists() and live.exists() and (tmp_path / "dst" / "model.safetensors").exists()
    assert main(["clean", str(tmp_path)]) == 0
    assert "no temporaries of interrupted runs" in capsys.readouterr().out


def test_clean_puts_back_an_output_parked_by_a_run_killed_while_replacing_it(tmp_path):
    dead = _dead_pid()
    parked = tmp_path / f".dst.convbert-{dead}-q1.old"
    parked.mkdir()
    (parked / "config.json").write_text("{}")
    new = tmp_path / f".dst.convbert-{dead}-q2.tmp"
    new.mkdir()
    done = fileio.remove_leftovers(tmp_path)
    assert sorted(what for _, what in done) == ["removed", "restored"]
    assert os.listdir(tmp_path) == ["dst"] and (tmp_path / "dst" / "config.json").exists()


def test_temporaries_carry_the_pid_of_their_run(tmp_path):
    with fileio.atomic_directory(tmp_path / "out") as tmp:
        assert os.path.basename(tmp).startswith(f".out.convbert-{os.getpid()}-") and tmp.endswith(".tmp")
        assert fileio.leftovers(tmp_path) == []  # this run is alive
    time.sleep(0)
    assert os.listdir(tmp_path) == ["out"]
