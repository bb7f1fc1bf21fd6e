"""Trainer checkpoints that load: the callback's files, and ``config=`` for folders without them.

The Trainer run is opt-in (CONVBERT_TEST_HF=1, transformers installed); the rest needs no transformers.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

from convbert_common.tokenizer import ConvBertTokenizerFast
from convbert_pt import ConvBertForSequenceClassification
from convbert_pt.hf_trainer import save_checkpoint_files


def test_module_imports_without_transformers_and_says_what_the_callback_needs():
    code = ("import sys; sys.modules['transformers'] = None; import convbert_pt.hf_trainer as t\n"
            "try:\n    t.SaveConfigCallback\nexcept ImportError as e:\n"
            "    assert 'transformers' in str(e); print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={"PYTHONPATH": os.path.join(root, "src"), "PATH": ""})
    assert out.stdout.strip() == "ok", out.stderr[-1500:]


def test_checkpoint_files_make_a_weights_only_folder_loadable(tmp_path, seqcls):
    model = ConvBertForSequenceClassification.from_pretrained(seqcls, dtype=torch.bfloat16)
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(folder / "model.safetensors"))  # what Trainer writes
    save_checkpoint_files(folder, model, ConvBertTokenizerFast.from_pretrained(seqcls))
    assert {"config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    reloaded = ConvBertForSequenceClassification.from_pretrained(folder, dtype="auto")
    assert reloaded.dtype == torch.bfloat16 and reloaded.config.architectures == ["ConvBertForSequenceClassification"]
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.skipif(os.environ.get("CONVBERT_TEST_HF") != "1",
                    reason="opt-in: set CONVBERT_TEST_HF=1 with transformers installed (pip install 'convbert[bench]')")
def test_trainer_steps_with_the_callback_and_gradient_checkpointing_reload_from_the_checkpoint(tmp_path, seqcls):
    transformers = importlib.import_module("transformers")
    from convbert_pt.hf_trainer import SaveConfigCallback

    tokenizer = ConvBertTokenizerFast.from_pretrained(seqcls)
    model = ConvBertForSequenceClassification.from_pretrained(seqcls, hidden_dropout_prob=0.0)
    texts = ["good", "bad film", "a fine movie indeed", "awful", "great fun", "boring and long"] * 2
    data = [{**tokenizer(t), "labels": i % 3} for i, t in enumerate(texts)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, save_steps=2, per_device_train_batch_size=4,
        learning_rate=1e-3, report_to=[], use_cpu=True, logging_steps=1, save_safetensors=True,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   data_collator=transformers.DataCollatorWithPadding(tokenizer),
                                   callbacks=[SaveConfigCallback(tokenizer)])
    trainer.train()
    assert model.is_gradient_checkpointing
    for step in (2, 4):
        folder = tmp_path / "out" / f"checkpoint-{step}"
        assert (folder / "config.json").exists() and (folder / "vocab.txt").exists()
    reloaded = ConvBertForSequenceClassification.from_pretrained(tmp_path / "out" / "checkpoint-4")
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b), name
    assert ConvBertTokenizerFast.from_pretrained(tmp_path / "out" / "checkpoint-4")("good")["input_ids"] == \
        tokenizer("good")["input_ids"]
