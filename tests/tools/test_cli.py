"""The scriptable command line: --version, --json, Hub ids, help on every argument, TensorFlow kept quiet."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import pytest

from convbert_tools import cli, quiet
from convbert_tools.demo import checkpoint_dir
from tests.hub_cache import add_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
TF_LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796161156.929365    3853 port.cc:153] oneDNN custom operations are on. You may see ...\n",
    b"I0000 00:00:1796161156.929688    3853 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n",
    b"W0000 00:00:1796161156.929688    3853 gpu_device.cc:2342] Cannot dlopen some GPU libraries.\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.\n",
]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"convbert": parser, **sub.choices}


def test_every_argument_of_every_command_has_a_help_string():
    missing = [f"{name} {action.option_strings or action.dest}" for name, p in _subcommands().items()
               for action in p._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help]
    assert not missing


def test_info_json_is_one_object_with_the_table_fields(capsys):
    assert cli.main(["info", checkpoint_dir(), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["class"] == "ConvBertForSequenceClassification" and data["tensors"] == 57
    assert data["weights_file"] == "model.safetensors" and data["parameters"] == 259_873


def test_info_takes_a_hub_id_from_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    add_checkpoint(tmp_path, "org/demo", pathlib.Path(checkpoint_dir()))
    assert cli.main(["info", "org/demo", "--cache-dir", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checkpoint"] == "org/demo" and data["tensors"] == 57
    assert cli.main(["info", "org/nothing", "--cache-dir", str(tmp_path)]) == 1
    assert "org/nothing" in capsys.readouterr().err


def test_convert_json_reports_what_was_written(tmp_path, capsys):
    dst = tmp_path / "out"
    assert cli.main(["convert", checkpoint_dir(), str(dst), "--to", "safetensors", "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"class": "ConvBertForSequenceClassification", "destination": str(dst), "dtype": None,
                    "format": "safetensors", "skipped": {}, "source": checkpoint_dir(), "tensors": 57}


@pytest.mark.slow
def test_verify_json_lists_every_output_with_its_difference(capsys):
    assert cli.main(["verify", checkpoint_dir(), "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["path"] == checkpoint_dir()
    assert {r["output"] for r in data["rows"]} >= {"logits", "loss", "hidden_states[0]"}
    assert all(r["ok"] and r["max_abs_diff"] <= data["atol"] for r in data["rows"])


def test_tensorflow_log_lines_are_recognised_and_nothing_else():
    assert all(quiet.is_chatter(line) for line in TF_LINES)
    for line in (b"E0000 00:00:1796161156.9 3853 op.cc:1] a real error\n", b"Traceback (most recent call last):\n",
                 b"ValueError: bad\n", b"I am not a log line\n"):
        assert not quiet.is_chatter(line), line


def test_filtered_stderr_drops_the_chatter_and_keeps_real_errors(capfd):
    with quiet.native_stderr_filtered():
        for line in TF_LINES:
            os.write(2, line)
        os.write(2, b"E0000 00:00:1796161156.9 3853 op.cc:1] a real error\n")
        sys.stderr.write("a Python warning\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "a Python warning" in err
    assert "oneDNN" not in err and "InitializeLog" not in err and "dlopen" not in err


@pytest.mark.slow
def test_commands_that_import_tensorflow_print_no_tensorflow_log_unless_verbose(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    runs = {}
    for flag in ([], ["-v"]):
        out = subprocess.run([sys.executable, "-m", "convbert_tools.cli", *flag, "convert", checkpoint_dir(),
                              str(tmp_path / f"m{len(flag)}.keras"), "--to", "keras", "-q"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[bool(flag)] = out.stderr
    # TensorFlow's C++ log names its source file (port.cc: the oneDNN notice) in every release's format
    assert "I0000" not in runs[False] and "port.cc:" not in runs[False], runs[False]
    assert "port.cc:" in runs[True], runs[True]
