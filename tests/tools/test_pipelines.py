"""Pipelines in both frameworks give Hugging Face's pipeline outputs on our saved checkpoints.

The expected outputs come from transformers 4.x (``tests/fixtures/pipelines/make_hf_expected.py``);
``CONVBERT_TEST_HF=1`` also runs HF's pipelines live on the same cases.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import pytest

from tests.pipeline_cases import CASES, make_checkpoints, split_kwargs, to_json
from tests.tolerances import PIPELINE_FP32_ATOL

EXPECTED = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "hf_expected.json"


def assert_same_output(path: str, ours, theirs) -> None:
    """Equal structure, strings and integers; floats within PIPELINE_FP32_ATOL. Names the first difference."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs), f"{path}: keys {ours!r} vs {theirs!r}"
        for key in theirs:
            assert_same_output(f"{path}.{key}", ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{path}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_output(f"{path}[{i}]", a, b)
    elif isinstance(theirs, float) and not isinstance(ours, str):
        assert math.isclose(float(ours), theirs, rel_tol=0.0, abs_tol=PIPELINE_FP32_ATOL), \
            f"{path}: {ours} vs {theirs} (|diff| {abs(float(ours) - theirs):.2e})"
    else:
        assert ours == theirs and type(ours) is type(theirs), f"{path}: {ours!r} vs {theirs!r}"


def test_the_comparison_fails_on_a_changed_score_label_or_shape():
    base = [{"label": "a", "score": 0.5, "start": 1}]
    assert_same_output("x", [{"label": "a", "score": 0.5 + PIPELINE_FP32_ATOL / 2, "start": 1}], base)
    for wrong in ([{"label": "a", "score": 0.5 + 3 * PIPELINE_FP32_ATOL, "start": 1}],
                  [{"label": "b", "score": 0.5, "start": 1}], [{"label": "a", "score": 0.5, "start": 2}],
                  [], [{"label": "a", "score": 0.5}]):
        with pytest.raises(AssertionError, match="x"):
            assert_same_output("x", wrong, base)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("pipelines"))


@pytest.fixture(scope="module")
def expected():
    return json.loads(EXPECTED.read_text())["cases"]


def _run(module, folders, cache, task, args, kwargs):
    options, batch = split_kwargs(kwargs)
    key = (task, batch.get("batch_size", 1))
    if key not in cache:
        cache[key] = module.pipeline(task, str(folders[task]), **batch)
    return to_json(cache[key](*args, **options))


@pytest.fixture(scope="module")
def pt_pipes():
    return {}


@pytest.fixture(scope="module")
def tf_pipes():
    return {}


@pytest.mark.parametrize("case_id, task, args, kwargs", CASES, ids=[c[0] for c in CASES])
def test_pytorch_pipeline_gives_hf_outputs(case_id, task, args, kwargs, folders, expected, pt_pipes):
    import convbert_pt

    assert_same_output(case_id, _run(convbert_pt, folders, pt_pipes, task, args, kwargs), expected[case_id])


@pytest.mark.parametrize("case_id, task, args, kwargs", CASES, ids=[c[0] for c in CASES])
def test_keras_pipeline_gives_hf_outputs(case_id, task, args, kwargs, folders, expected, tf_pipes):
    import convbert_tf

    assert_same_output(case_id, _run(convbert_tf, folders, tf_pipes, task, args, kwargs), expected[case_id])


@pytest.mark.skipif(os.environ.get("CONVBERT_TEST_HF") != "1",
                    reason="opt-in: set CONVBERT_TEST_HF=1 with transformers installed (pip install 'convbert[bench]')")
@pytest.mark.parametrize("case_id, task, args, kwargs", CASES, ids=[c[0] for c in CASES])
def test_hf_pipelines_live_match_ours(case_id, task, args, kwargs, folders, pt_pipes):
    import transformers

    import convbert_pt

    options, batch = split_kwargs(kwargs)
    theirs = to_json(transformers.pipeline(task, model=str(folders[task]), framework="pt", **batch)(*args, **options))
    assert_same_output(case_id, _run(convbert_pt, folders, pt_pipes, task, args, kwargs), theirs)


def test_bad_tasks_options_and_inputs_are_refused_by_name(folders):
    import convbert_pt
    from convbert_common.tokenizer import ConvBertTokenizer

    with pytest.raises(ValueError, match="unknown pipeline task 'summarization'"):
        convbert_pt.pipeline("summarization", str(folders["fill-mask"]))
    ner = convbert_pt.pipeline("ner", str(folders["token-classification"]))
    with pytest.raises(TypeError, match="unexpected option.*top_k"):
        ner("Paris", top_k=3)
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        ner("Paris", aggregation_strategy="longest")
    with pytest.raises(ValueError, match='stride needs an aggregation_strategy other than "none"'):
        ner("Paris", stride=4)
    with pytest.raises(ValueError, match=r"no mask token \(\[MASK\]\)"):
        convbert_pt.pipeline("fill-mask", str(folders["fill-mask"]))("no mask here")
    model = convbert_pt.ConvBertForQuestionAnswering.from_pretrained(folders["question-answering"])
    slow = ConvBertTokenizer.from_pretrained(folders["question-answering"])
    with pytest.raises(ValueError, match="ConvBertTokenizerFast"):
        convbert_pt.pipeline("question-answering", model, tokenizer=slow)(question="a?", context="b")
    with pytest.raises(ValueError, match="pass tokenizer="):
        convbert_pt.pipeline("question-answering", model)


def test_pipeline_runs_on_the_models_device_and_dtype(folders):
    import torch

    import convbert_pt

    pipe = convbert_pt.pipeline("text-classification", str(folders["text-classification"]), dtype=torch.bfloat16,
                                device="cpu")
    assert pipe.model.dtype == torch.bfloat16 and pipe.model.device.type == "cpu"
    assert pipe("fine")[0]["label"] in pipe.model.config.id2label.values()
