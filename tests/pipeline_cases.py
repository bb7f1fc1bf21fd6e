"""The pipeline cases: checkpoints built from the tiny fixtures, and inputs with options for every task.

Shared by ``tests/fixtures/pipelines/make_hf_expected.py`` (which runs Hugging Face's pipelines on
them, with transformers 4.x, and stores the outputs) and ``tests/tools/test_pipelines.py`` (which
runs ours in both frameworks and compares). A checkpoint is a tiny fixture's config and weights
with the demo checkpoint's tokenizer files; ``model_max_length`` is 64, the fixtures' positions.
"""

from __future__ import annotations

import json
import pathlib
import shutil

from convbert_common.batch_encoding import to_python
from tests.conftest import fixture_file

TINY = "hf-convbert-tiny"
MAX_LENGTH = 64
TOKENIZER = pathlib.Path(__file__).resolve().parents[1] / "src" / "convbert_tools" / "data" / "demo"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
CHECKPOINTS = {
    "text-classification": "sequence_classification",
    "token-classification": "token_classification",
    "question-answering": "question_answering",
    "fill-mask": "masked_lm",
    "feature-extraction": "model",
}

LONG = ("Sylvain Gugger and Lysandre Debut work at Hugging Face in Brooklyn, New York; "
        "the company was founded in Paris. Clément Delangue lives in Manhattan and Julien Chaumond in Versailles. ")

# (case id, task, call args, call kwargs); JSON-friendly so the expected file can name them.
CASES = [
    ("tc-single", "text-classification", ["This movie was great!"], {}),
    ("tc-list", "text-classification", [["good", "A much longer sentence about a terrible film."]], {}),
    ("tc-topk-none", "text-classification", ["Not bad at all."], {"top_k": None}),
    ("tc-topk-2", "text-classification", [["Not bad at all.", "Awful."]], {"top_k": 2}),
    ("tc-pair", "text-classification", [{"text": "Is it good?", "text_pair": "It is."}], {}),
    ("tc-sigmoid", "text-classification", ["Fine."], {"function_to_apply": "sigmoid", "top_k": 3}),
    ("tc-batch", "text-classification", [["short", "a somewhat longer input text here", "mid length one"]],
     {"batch_size": 2}),
    ("ner-none", "token-classification", ["Sylvain Gugger works at Hugging Face in Brooklyn."],
     {"ignore_labels": []}),
    ("ner-simple", "token-classification", ["Sylvain Gugger works at Hugging Face in Brooklyn."],
     {"aggregation_strategy": "simple", "ignore_labels": []}),
    ("ner-first", "token-classification", ["Lysandre Debut and Clément Delangue visited Versailles."],
     {"aggregation_strategy": "first", "ignore_labels": []}),
    ("ner-average", "token-classification", ["Lysandre Debut and Clément Delangue visited Versailles."],
     {"aggregation_strategy": "average", "ignore_labels": []}),
    ("ner-max", "token-classification", ["Lysandre Debut and Clément Delangue visited Versailles."],
     {"aggregation_strategy": "max", "ignore_labels": []}),
    ("ner-default-ignore", "token-classification", ["Julien Chaumond lives in Paris."],
     {"aggregation_strategy": "simple"}),
    ("ner-stride", "token-classification", [LONG], {"aggregation_strategy": "first", "stride": 16,
                                                    "ignore_labels": []}),
    ("ner-words", "token-classification", [["Sylvain", "Gugger", "works", "in", "Brooklyn"]],
     {"is_split_into_words": True, "aggregation_strategy": "first", "ignore_labels": []}),
    ("ner-batch", "token-classification", [["Paris is nice.", "Sylvain Gugger works at Hugging Face in Brooklyn."]],
     {"batch_size": 2, "ignore_labels": []}),
    ("qa-single", "question-answering", [], {"question": "Where does Sylvain work?",
                                             "context": "Sylvain Gugger works at Hugging Face in Brooklyn."}),
    ("qa-windows", "question-answering", [], {"question": "Who lives in Manhattan?", "context": LONG,
                                              "doc_stride": 8, "max_seq_len": 40, "top_k": 3}),
    ("qa-impossible", "question-answering", [], {"question": "Who?", "context": "Julien lives in Versailles.",
                                                 "handle_impossible_answer": True, "top_k": 2}),
    ("qa-no-align", "question-answering", [], {"question": "Where?", "context": "Clément lives in Manhattan.",
                                               "align_to_words": False, "max_answer_len": 3}),
    ("qa-list", "question-answering", [], {"question": ["Who?", "Where?"],
                                           "context": ["Julien is here.", "Lysandre works in Paris, France."]}),
    ("qa-batch", "question-answering", [], {"question": "Where is the company?", "context": LONG,
                                            "doc_stride": 8, "max_seq_len": 40, "batch_size": 3}),
    ("fm-single", "fill-mask", ["Paris is the [MASK] of France."], {}),
    ("fm-topk", "fill-mask", ["The movie was [MASK]."], {"top_k": 3}),
    ("fm-targets", "fill-mask", ["The movie was [MASK]."], {"targets": ["good", "bad", "great"]}),
    ("fm-two-masks", "fill-mask", ["The [MASK] was [MASK]."], {"top_k": 2}),
    ("fm-list", "fill-mask", [["A [MASK] day.", "Another [MASK] one here."]], {"top_k": 2}),
    ("fe-single", "feature-extraction", ["Hello world"], {}),
    ("fe-batch", "feature-extraction", [["Hi", "A longer sentence to pad against."]], {"batch_size": 2}),
]


def make_checkpoints(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """{task: checkpoint folder} under ``root``."""
    out = {}
    for task, head in CHECKPOINTS.items():
        folder = root / head
        if not folder.exists():
            folder.mkdir(parents=True)
            source = fixture_file(f"{TINY}/{head}/model.safetensors").parent
            shutil.copy(source / "model.safetensors", folder)
            config = json.loads((source / "config.json").read_text())
            if head == "token_classification":
                config["id2label"] = {str(k): v for k, v in NER_LABELS.items()}
                config["label2id"] = {v: k for k, v in NER_LABELS.items()}
            (folder / "config.json").write_text(json.dumps(config, indent=2))
            for name in TOKENIZER_FILES:
                shutil.copy(TOKENIZER / name, folder)
            tok_config = json.loads((folder / "tokenizer_config.json").read_text())
            tok_config["model_max_length"] = MAX_LENGTH
            (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
        out[task] = folder
    return out


def split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """(call options, batch_size option) of a case."""
    kwargs = dict(kwargs)
    batch = {"batch_size": kwargs.pop("batch_size")} if "batch_size" in kwargs else {}
    return kwargs, batch


# Pipeline output as plain JSON values (NumPy scalars and arrays to Python numbers and lists).
to_json = to_python
