"""Moving weights between frameworks and formats: bit-identical round trips, reference outputs
after importing the authors' TF1 checkpoint (discriminator and generator) in both frameworks,
and the ``verify`` / ``demo`` commands."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import convbert_pt  # noqa: E402
import convbert_tf  # noqa: E402
from convbert_common import checkpoint as ck  # noqa: E402
from convbert_common.config import ConvBertConfig  # noqa: E402
from convbert_common.formats import head_from_config  # noqa: E402
from convbert_tools import convert as conv  # noqa: E402
from convbert_tools import demo, verify  # noqa: E402
from convbert_tools.cli import demo_checkpoint_dir, main  # noqa: E402
from tests.conftest import fixture_file  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.tolerances import REFERENCE_FP32_ATOL  # noqa: E402


def canonical(folder) -> dict[str, np.ndarray]:
    config = ConvBertConfig.from_pretrained(folder)
    return ck.load_for_model(config, head_from_config(config), folder).tensors


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_pt_to_keras_to_pt_is_bit_identical(seqcls, tmp_path):
    pt = convbert_pt.ConvBertForSequenceClassification.from_pretrained(seqcls)
    pt.save_pretrained(tmp_path / "pt")
    conv.convert(str(tmp_path / "pt"), str(tmp_path / "m.keras"), to="keras", progress=False)
    conv.convert(str(tmp_path / "m.keras"), str(tmp_path / "back"), to="safetensors", progress=False)
    assert_bit_identical(canonical(tmp_path / "pt"), canonical(tmp_path / "back"))
    again = convbert_pt.ConvBertForSequenceClassification.from_pretrained(tmp_path / "back")
    for (n, p), (_, q) in zip(pt.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(p, q), n


def test_converted_keras_file_loads_in_keras_with_the_weights_and_logits_of_the_source(seqcls, tmp_path):
    conv.convert(str(seqcls), str(tmp_path / "m.keras"), to="keras", progress=False)
    model = keras.saving.load_model(tmp_path / "m.keras")  # the config's classes are registered by convbert_tf
    assert type(model) is convbert_tf.ConvBertForSequenceClassification
    source = canonical(seqcls)
    assert_bit_identical(convbert_tf.io.canonical_arrays(model), source)
    reference = convbert_tf.ConvBertForSequenceClassification.from_pretrained(seqcls)
    inputs = dict(np.load(fixture_file("hf-convbert-tiny/inputs.npz")))
    np.testing.assert_array_equal(np.asarray(model(inputs, training=False)["logits"]),
                                  np.asarray(reference(inputs, training=False)["logits"]))
    conv.convert(str(seqcls), str(tmp_path / "m.weights.h5"), to="keras-weights", progress=False)
    fresh = convbert_tf.ConvBertForSequenceClassification(reference.config)
    fresh.load_weights(tmp_path / "m.weights.h5")
    assert_bit_identical(convbert_tf.io.canonical_arrays(fresh), source)


def test_keras_conversion_failing_midway_leaves_the_destination_as_it_was(seqcls, tmp_path, monkeypatch):
    from convbert_tf import keras_file

    conv.convert(str(seqcls), str(tmp_path / "m.keras"), to="keras", progress=False)
    before = (tmp_path / "m.keras").read_bytes()

    def broken(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(keras_file, "_crc32", broken)
    with pytest.raises(OSError, match="No space left"):
        conv.convert(str(seqcls), str(tmp_path / "m.keras"), to="keras", force=True, progress=False)
    with pytest.raises(OSError, match="No space left"):
        conv.convert(str(seqcls), str(tmp_path / "new.keras"), to="keras", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "seqcls"]
    assert (tmp_path / "m.keras").read_bytes() == before
    with pytest.raises(FileExistsError, match="already exists"):
        conv.convert(str(seqcls), str(tmp_path / "m.keras"), to="keras", progress=False)


def test_pt_to_hf_tf_h5_to_pt_is_bit_identical(seqcls, tmp_path):
    conv.convert(str(seqcls), str(tmp_path / "h5"), to="hf-tf-h5", progress=False)
    conv.convert(str(tmp_path / "h5"), str(tmp_path / "back"), to="safetensors", progress=False)
    assert_bit_identical(canonical(seqcls), canonical(tmp_path / "back"))


def test_keras_save_pretrained_loads_in_pytorch_with_the_same_logits(seqcls, tmp_path):
    km = convbert_tf.ConvBertForSequenceClassification.from_pretrained(seqcls)
    km.save_pretrained(tmp_path / "k", tf_h5=True)
    pt = convbert_pt.ConvBertForSequenceClassification.from_pretrained(tmp_path / "k")
    inputs = dict(np.load(fixture_file("hf-convbert-tiny/inputs.npz")))
    with torch.no_grad():
        a = pt(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    b = np.asarray(km(inputs, training=False)["logits"])
    assert_close("logits", b, a, REFERENCE_FP32_ATOL)


def _tf1_dir():
    return fixture_file("tf1-original/model.ckpt.index").parent


def _run_pt(cls, folder, expected):
    model = cls.from_pretrained(folder)
    feed = {k: torch.from_numpy(expected[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        out = model(**feed, output_hidden_states=True, output_attentions=True)
    return {k: (np.stack([t.numpy() for t in v]) if isinstance(v, tuple) else v.numpy())
            for k, v in out.items() if v is not None}


def _run_tf(cls, folder, expected):
    model = cls.from_pretrained(folder)
    feed = {k: expected[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out = model(feed, output_hidden_states=True, output_attentions=True, training=False)
    return {k: (np.stack([np.asarray(t) for t in v]) if isinstance(v, (tuple, list)) else np.asarray(v))
            for k, v in out.items() if v is not None}


@pytest.mark.parametrize("framework", ["pt", "keras"])
@pytest.mark.parametrize("generator", [False, True], ids=["discriminator", "generator"])
def test_tf1_original_checkpoint_reproduces_reference_outputs(tmp_path, framework, generator):
    conv.convert(str(_tf1_dir()), str(tmp_path / "ckpt"), generator=generator, progress=False)
    expected = dict(np.load(_tf1_dir() / ("expected_generator.npz" if generator else "expected.npz")))
    name = "ConvBertForMaskedLM" if generator else "ConvBertModel"
    if framework == "pt":
        out = _run_pt(getattr(convbert_pt, name), tmp_path / "ckpt", expected)
    else:
        out = _run_tf(getattr(convbert_tf, name), tmp_path / "ckpt", expected)
    keys = ["logits", "hidden_states", "attentions"] if generator else ["last_hidden_state", "hidden_states",
                                                                        "attentions"]
    for key in keys:
        assert_close(f"{framework}/{key}", out[key], expected[key], REFERENCE_FP32_ATOL)


def test_verify_passes_on_a_good_checkpoint_and_fails_on_a_tampered_keras_side(seqcls, monkeypatch, capsys):
    report = verify.verify(str(seqcls))
    assert report.ok and {r.output for r in report.rows} >= {"logits", "loss", "hidden_states[2]", "attentions[1]"}
    assert main(["verify", str(seqcls)]) == 0
    assert "OK:" in capsys.readouterr().out
    real = verify.run_keras

    def tampered(*args, **kwargs):
        out = real(*args, **kwargs)
        out["logits"] = out["logits"] + 1e-3
        return out

    monkeypatch.setattr(verify, "run_keras", tampered)
    assert main(["verify", str(seqcls)]) == 3
    assert "logits" in capsys.readouterr().out


def test_demo_runs_both_frameworks_and_reports_their_difference():
    buf = io.StringIO()
    assert demo.run(demo_checkpoint_dir(), text="A good movie.", text_pair="Really.", out=buf) == 0
    text = buf.getvalue()
    assert "[CLS] a good movie . [SEP] really . [SEP]" in text
    assert "PyTorch" in text and "Keras" in text and "identical within 1e-05" in text
