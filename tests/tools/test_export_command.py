"""``convbert export``: each format in Optimum's layout from a checkpoint directory; the string-in
SavedModel tokenizes as ConvBertTokenizerFast and serves the Keras logits; the int8 ONNX model of a
classifier fine-tuned with examples/pt_train.py keeps its labels; every refusal of the issue says
what is wrong and writes nothing."""

from __future__ import annotations

import csv
import importlib.util
import json
import pathlib
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime", reason="convbert export needs the export extra (pip install "
                                                "'convbert[export]')")
onnx = pytest.importorskip("onnx", reason="convbert export needs the export extra")
pytest.importorskip("tensorflow_text", reason="--with-tokenizer needs the export extra")

import convbert_pt  # noqa: E402
import convbert_tf  # noqa: E402
from convbert_common.tokenizer import ConvBertTokenizerFast  # noqa: E402
from convbert_tf.export import TOKENIZER_SIGNATURES  # noqa: E402
from convbert_tools import export as ex  # noqa: E402
from convbert_tools.cli import main  # noqa: E402
from tests.conftest import fixture_file, hf_tokenizer_dir  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.tolerances import COMPILED_FP32_ATOL, INT8_LABEL_AGREEMENT, LITERT_FP32_ATOL, ONNX_FP32_ATOL  # noqa: E402

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["export", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_nothing_written(out: pathlib.Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers, leftovers


def corpus_lines(count: int) -> list[str]:
    lines = fixture_file("tokenizer/corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:count]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The tiny sequence classifier of the fixtures with the demo's tokenizer files (max length 64)."""
    from convbert_tools.cli import demo_checkpoint_dir

    src = fixture_file("hf-convbert-tiny/sequence_classification/model.safetensors").parent
    dst = tmp_path_factory.mktemp("src") / "seqcls"
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    for name in TOKENIZER_FILES:
        shutil.copy(pathlib.Path(demo_checkpoint_dir()) / name, dst / name)
    return dst


# ------------------------------------------------------------------------------ refusals
def test_unknown_format_is_refused(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, checkpoint, out, "--format", "tflite")
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown --format 'tflite'; choose one of onnx, saved-model, litert"):
        ex.export(checkpoint, out, format="tflite")
    assert_nothing_written(out)


@pytest.mark.parametrize("argv, message", [
    (("--format", "onnx", "--with-tokenizer"), "--format onnx cannot hold them"),
    (("--format", "litert", "--with-tokenizer"), "--format litert cannot hold them"),
    (("--format", "saved-model", "--quantize", "int8"), "--format saved-model cannot hold it: use --format onnx"),
    (("--format", "litert", "--quantize", "int8"), "--format litert cannot hold it"),
    (("--format", "saved-model", "--opset", "17"), "--opset applies to --format onnx"),
    (("--format", "saved-model", "--no-optimize"), "--no-optimize applies to --format onnx"),
])
def test_flags_the_format_cannot_honour_are_refused(checkpoint, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, checkpoint, out, *argv)
    assert code == 1 and message in err, err
    assert_nothing_written(out)


def test_with_tokenizer_needs_the_tokenizer_files(checkpoint, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, bare / name)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, bare, out, "--format", "saved-model", "--with-tokenizer")
    assert code == 1 and "--with-tokenizer needs the checkpoint's tokenizer files; vocab.txt is missing" in err
    assert str(bare) in err
    assert_nothing_written(out)


@pytest.mark.parametrize("module, argv, feature", [
    ("onnx", ("--format", "onnx"), "--format onnx needs onnx"),
    ("onnxruntime", ("--format", "onnx"), "--format onnx without --no-optimize needs onnxruntime"),
    ("onnxruntime", ("--format", "onnx", "--no-optimize", "--quantize", "int8"), "--quantize int8 needs onnxruntime"),
    ("tensorflow_text", ("--format", "saved-model", "--with-tokenizer"), "--with-tokenizer needs tensorflow-text"),
    ("ai_edge_litert", ("--format", "litert"), "--format litert needs ai-edge-litert"),
])
def test_a_missing_optional_package_names_the_extra(checkpoint, tmp_path, capsys, monkeypatch, module, argv,
                                                    feature):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, checkpoint, out, *argv)
    assert code == 1 and f"{feature} (pip install 'convbert[export]')" in err, err
    assert_nothing_written(out)


def test_an_existing_out_is_kept_without_force(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run_cli(capsys, checkpoint, out, "--format", "onnx")
    assert code == 1 and "already exists (pass --force to overwrite)" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_an_opset_below_what_the_model_needs_names_the_operator(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, checkpoint, out, "--format", "onnx", "--opset", "16")
    assert code == 1 and "--opset 16 is below what the model needs: LayerNormalization (opset 17)" in err, err
    assert_nothing_written(out)


# ------------------------------------------------------------------------------ SavedModel and LiteRT
def test_model_only_saved_model_never_needs_tensorflow_text(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)
    out = tmp_path / "served"
    code, stdout, _ = run_cli(capsys, checkpoint, out, "--format", "saved-model")
    assert code == 0, stdout
    assert {"saved_model.pb", "variables", "config.json", *TOKENIZER_FILES} <= {p.name for p in out.iterdir()}
    loaded = tf.saved_model.load(str(out))
    assert "serving_default" in loaded.signatures and not set(TOKENIZER_SIGNATURES) & set(loaded.signatures)
    model = convbert_tf.ConvBertForSequenceClassification.from_pretrained(checkpoint)
    feed = {"input_ids": np.array([[101, 7592, 102, 0]], "int32"), "attention_mask": np.array([[1, 1, 1, 0]], "int32"),
            "token_type_ids": np.zeros((1, 4), "int32")}
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in feed.items()})["logits"]
    assert_close("saved-model logits", got, model(feed, training=False)["logits"], COMPILED_FP32_ATOL)


@pytest.fixture(scope="module")
def string_model(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "served"
    assert main(["export", str(checkpoint), str(out), "--format", "saved-model", "--with-tokenizer"]) == 0
    return tf.saved_model.load(str(out))


def test_string_signatures_tokenize_as_the_fast_tokenizer_truncated_to_max_positions(checkpoint, string_model):
    assert set(string_model.signatures) == {"serving_default", *TOKENIZER_SIGNATURES}
    tok = ConvBertTokenizerFast.from_pretrained(checkpoint)
    texts = corpus_lines(60)
    assert max(len(tok(t)["input_ids"]) for t in texts) > 64  # some rows are truncated
    want = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="np")
    got = string_model.signatures["tokenize"](text=tf.constant(texts))
    for field in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[field].numpy(), want[field], err_msg=field)
    want = tok(texts[:30], texts[30:], truncation=True, max_length=64, padding=True, return_tensors="np")
    got = string_model.signatures["tokenize_pair"](text=tf.constant(texts[:30]), text_pair=tf.constant(texts[30:]))
    for field in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[field].numpy(), want[field], err_msg=f"pair {field}")


def test_serve_text_gives_the_keras_logits_of_the_fast_tokenizers_ids(checkpoint, string_model):
    tok = ConvBertTokenizerFast.from_pretrained(checkpoint)
    model = convbert_tf.ConvBertForSequenceClassification.from_pretrained(checkpoint)
    texts, pairs = ["A short sentence.", "Another, longer one: with punctuation!"], ["first pair", "second pair"]
    for args, enc in (((texts,), tok(texts, padding=True, return_tensors="np")),
                      ((texts, pairs), tok(texts, pairs, padding=True, return_tensors="np"))):
        want = model({k: enc[k].astype("int32") for k in ("input_ids", "attention_mask", "token_type_ids")},
                     training=False)["logits"]
        name = "serve_text" if len(args) == 1 else "serve_text_pair"
        feed = dict(zip(("text", "text_pair"), (tf.constant(a) for a in args), strict=False))
        assert_close(name, string_model.signatures[name](**feed)["logits"], want, COMPILED_FP32_ATOL)


def test_litert_in_the_optimum_layout(checkpoint, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "lite"
    code, _, _ = run_cli(capsys, checkpoint, out, "--format", "litert")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.tflite", "config.json", *TOKENIZER_FILES])
    model = convbert_tf.ConvBertForSequenceClassification.from_pretrained(checkpoint)
    runner = Interpreter(model_path=str(out / "model.tflite")).get_signature_runner("serving_default")
    feed = ConvBertTokenizerFast.from_pretrained(checkpoint)(corpus_lines(3), padding=True, truncation=True,
                                                             max_length=64, return_tensors="np")
    feed = {k: feed[k].astype("int32") for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert_close("litert logits", runner(**feed)["logits"], model(feed, training=False)["logits"], LITERT_FP32_ATOL)


# ------------------------------------------------------------------------------ ONNX and int8
def test_no_optimize_writes_the_standard_operator_graph(checkpoint, tmp_path, capsys):
    out = tmp_path / "onnx"
    code, stdout, _ = run_cli(capsys, checkpoint, out, "--format", "onnx", "--no-optimize")
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.onnx", "config.json", *TOKENIZER_FILES])
    proto = onnx.load(str(out / "model.onnx"))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert "LayerNormalization" in {n.op_type for n in proto.graph.node}  # not fused into SkipLayerNormalization


def _tokenizer_fixture() -> pathlib.Path:
    return hf_tokenizer_dir()


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """examples/pt_train.py's classifier on its toy sentiment data (4 epochs, ~60 steps), with its
    tokenizer files, and the evaluation split tokenized as the script does."""
    spec = importlib.util.spec_from_file_location("pt_train_for_export", REPO / "examples" / "pt_train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = tmp_path_factory.mktemp("pt_train")
    tokenizer = _tokenizer_fixture()
    history = script.main(["--threads", "1", "--no-progress", "--max-length", "32", "--epochs", "4",
                           "--output-dir", str(run), "--tokenizer", str(tokenizer)])
    assert history["eval_accuracy"][-1] >= 0.9  # it learnt the task: labels mean something
    checkpoint = run / "checkpoint"
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer / name, checkpoint / name)
    with open(script.DEFAULT_DATA, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[script.TRAIN_ROWS:]
    enc = ConvBertTokenizerFast.from_pretrained(tokenizer)([r["text"] for r in rows], padding="max_length",
                                                           truncation=True, max_length=32, return_tensors="np")
    return checkpoint, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_int8_model_keeps_the_fine_tuned_labels(fine_tuned, tmp_path, capsys):
    checkpoint, feed = fine_tuned
    out = tmp_path / "onnx"
    code, stdout, _ = run_cli(capsys, checkpoint, out, "--format", "onnx", "--quantize", "int8")
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.onnx", "model_quantized.onnx", "config.json", *TOKENIZER_FILES])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ConvBertForSequenceClassification"]
    model = convbert_pt.ConvBertForSequenceClassification.from_pretrained(checkpoint)
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    fp32 = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    int8 = ort.InferenceSession(str(out / "model_quantized.onnx"), providers=["CPUExecutionProvider"]).run(
        None, feed)[0]
    assert_close("onnx fp32 logits", fp32, reference, ONNX_FP32_ATOL)
    agreement = float(np.mean(int8.argmax(-1) == fp32.argmax(-1)))
    largest = float(np.abs(int8 - fp32).max())
    sys.stderr.write(f"int8 vs fp32 on {len(int8)} evaluation rows: labels agree {agreement:.3f}, "
                     f"max |logit diff| {largest:.2e}\n")
    assert agreement >= INT8_LABEL_AGREEMENT
    assert largest > 0.0  # the weights really are int8
    # The weights really are int8: the only float matrices left are the embedding tables (Gather's).
    proto = onnx.load(str(out / "model_quantized.onnx"))
    gathered = {n.input[0] for n in proto.graph.node if n.op_type == "Gather"}
    assert not [t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                and t.name not in gathered]
