"""``convbert predict``: texts and files through a pipeline, as a table or JSON, in either framework."""

from __future__ import annotations

import json

import pytest

from convbert_tools import cli
from tests.pipeline_cases import make_checkpoints, to_json


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("predict"))


def _json(capsys, argv) -> list:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_json_is_the_pipeline_output_per_input(folders, capsys):
    import convbert_pt

    folder = str(folders["text-classification"])
    texts = ["a good film", "a much longer and rather bad film"]
    data = _json(capsys, ["predict", folder, "--task", "text-classification", *texts, "--top-k", "2", "--json"])
    expected = to_json(convbert_pt.pipeline("text-classification", folder)(texts, top_k=2))
    assert [d["input"] for d in data] == texts and [d["output"] for d in data] == expected


def test_predict_reads_files_and_jsonl_and_runs_in_keras_too(folders, tmp_path, capsys):
    import convbert_tf

    folder = str(folders["question-answering"])
    lines = tmp_path / "qa.jsonl"
    rows = [{"question": "Who?", "context": "Julien lives in Versailles."},
            {"question": "Where?", "context": "Lysandre works in Paris."}]
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = _json(capsys, ["predict", folder, "--task", "question-answering", str(lines), "--framework", "tf",
                          "--json"])
    expected = to_json(convbert_tf.pipeline("question-answering", folder)(rows))
    assert [d["output"] for d in data] == expected
    contexts = tmp_path / "contexts.txt"
    contexts.write_text("Julien lives in Versailles.\n\nLysandre works in Paris.\n")
    table = cli.main(["predict", folder, "--task", "question-answering", str(contexts), "--question", "Who?"])
    assert table == 0
    out = capsys.readouterr().out
    assert out.count("> Who? | ") == 2 and "Versailles" in out


def test_predict_table_for_entities_and_masks(folders, capsys):
    assert cli.main(["predict", str(folders["token-classification"]), "--task", "token-classification",
                     "Sylvain Gugger works in Brooklyn.", "--aggregation-strategy", "first"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("> Sylvain Gugger works in Brooklyn.") and "brooklyn" in out
    assert cli.main(["predict", str(folders["fill-mask"]), "--task", "fill-mask", "The [MASK] was [MASK].",
                     "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "mask 1" in out and "mask 2" in out and len(out.splitlines()) == 1 + 2 * 3


def test_question_answering_without_a_question_is_refused_by_name(folders, capsys):
    assert cli.main(["predict", str(folders["question-answering"]), "--task", "question-answering", "text"]) == 1
    assert "--question" in capsys.readouterr().err
