"""The loading options HF users type, in PyTorch: Hub ids, dtype, mismatched heads, config=, sharding, meta build."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from convbert_common import checkpoint as ck
from convbert_common import hub
from convbert_common.checkpoint import CheckpointError
from convbert_common.config import ConvBertConfig
from convbert_pt.modeling import (
    ConvBertForMaskedLM,
    ConvBertForSequenceClassification,
    ConvBertModel,
    ConvBertPreTrainedModel,
)
from tests.configs import tiny_config
from tests.conftest import config_less_checkpoint
from tests.hub_cache import add_checkpoint
from tests.pt.conftest import head_dir, random_inputs
from tests.tolerances import INIT_STD_RTOL, SAME_COMPUTATION_FP32_ATOL


def _file_tensors(folder):
    return ck.read_safetensors(folder / "model.safetensors")


# ------------------------------------------------------------------------------------- Hub ids
@pytest.fixture
def repo(tmp_path, seqcls, monkeypatch):
    """``org/seqcls`` in a fake cache, with every weight format of the checkpoint, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copy(head_dir("model", "pytorch_model.bin") / "pytorch_model.bin", seqcls / "unused.bin")
    root = tmp_path / "cache"
    add_checkpoint(root, "org/seqcls", seqcls)
    return root


def test_model_from_a_hub_id_downloads_config_and_one_weights_file(repo, seqcls, monkeypatch):
    import huggingface_hub

    real = huggingface_hub.hf_hub_download
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda r, n, **kw: asked.append(n) or real(r, n, **kw))
    model = ConvBertForSequenceClassification.from_pretrained("org/seqcls", cache_dir=repo, revision="main",
                                                              token=False, local_files_only=True)
    assert asked == ["config.json", "model.safetensors"]
    local = ConvBertForSequenceClassification.from_pretrained(seqcls)
    for (name, a), (_, b) in zip(model.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_model_hub_id_missing_from_the_cache_names_it(repo):
    with pytest.raises(hub.HubError, match=r"org/other.*models--org--other.*HF_HUB_OFFLINE=1"):
        ConvBertModel.from_pretrained("org/other", cache_dir=repo)


def test_sharded_save_loads_locally_and_from_a_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ConvBertForMaskedLM(tiny_config()).eval()
    out = tmp_path / "sharded"
    model.save_pretrained(out, max_shard_size="20KB")
    files = sorted(p.name for p in out.iterdir())
    count = len([f for f in files if f.startswith("model-")])
    assert count > 1 and "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert all(f"model-{i:05d}-of-{count:05d}.safetensors" in files for i in range(1, count + 1))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(model.state_dict())
    root = tmp_path / "cache"
    add_checkpoint(root, "org/sharded", out)
    inputs = random_inputs(model.config)
    with torch.no_grad():
        expected = model(**inputs).logits
        for source in (out, "org/sharded"):
            loaded = ConvBertForMaskedLM.from_pretrained(source, cache_dir=root)
            assert torch.equal(loaded(**inputs).logits, expected), source


def test_push_to_hub_uploads_what_save_pretrained_writes(tmp_path, monkeypatch):
    from convbert_common import hub as hub_module

    seen = {}

    def fake_push(folder, repo_id, **kwargs):
        seen.update(repo_id=repo_id, files=sorted(p.name for p in __import__("pathlib").Path(folder).iterdir()),
                    **kwargs)
        return "ok"

    monkeypatch.setattr(hub_module, "push_folder", fake_push)
    model = ConvBertModel(tiny_config())
    assert model.push_to_hub("me/tiny", token="t", private=True) == "ok"
    assert seen == {"repo_id": "me/tiny", "files": ["config.json", "model.safetensors"], "token": "t",
                    "private": True}


# ------------------------------------------------------------------------------------- dtype
@pytest.mark.parametrize("option", ["dtype", "torch_dtype"])
def test_dtype_sets_the_parameters_and_never_lands_in_the_config(option, tmp_path):
    model = ConvBertModel.from_pretrained(head_dir("model"), **{option: torch.bfloat16})
    float32 = model.float32_parameter_names()  # the LayerNorms (test_pt_bf16)
    assert {p.dtype for n, p in model.named_parameters() if n not in float32} == {torch.bfloat16}
    assert model.config.dtype == "float32"  # what the checkpoint holds, as a name
    model.save_pretrained(tmp_path)  # crashed when the dtype object sat in the config
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert ConvBertModel.from_pretrained(tmp_path, dtype="auto").dtype == torch.bfloat16
    assert ConvBertModel.from_pretrained(tmp_path).dtype == torch.float32  # HF's default: float32


def test_dtype_object_in_a_config_and_disagreeing_dtypes_are_refused():
    with pytest.raises(ValueError, match="dtype= to the model's from_pretrained"):
        tiny_config(dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="disagree"):
        ConvBertModel.from_pretrained(head_dir("model"), dtype=torch.float16, torch_dtype=torch.bfloat16)


# ------------------------------------------------------------------------------------- mismatched heads
@pytest.mark.parametrize("weights_file", ["model.safetensors", "tf_model.h5"])
def test_ignore_mismatched_sizes_reinitialises_the_head_tensors_that_differ(weights_file, tmp_path):
    source = head_dir("sequence_classification", weights_file)
    with pytest.raises(CheckpointError, match="ignore_mismatched_sizes=True"):
        ConvBertForSequenceClassification.from_pretrained(source, weights_file=weights_file, num_labels=2)
    model, info = ConvBertForSequenceClassification.from_pretrained(
        source, weights_file=weights_file, num_labels=2, ignore_mismatched_sizes=True, output_loading_info=True)
    assert sorted(info["mismatched_keys"]) == [("classifier.out_proj.bias", (3,), (2,)),
                                               ("classifier.out_proj.weight", (3, 32), (2, 32))]
    assert sorted(info["missing_keys"]) == ["classifier.out_proj.bias", "classifier.out_proj.weight"]
    reference = ConvBertForSequenceClassification.from_pretrained(source, weights_file=weights_file)
    kept = reference.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("classifier.out_proj"):
            assert torch.equal(value, kept[name]), name
    assert torch.count_nonzero(model.classifier.out_proj.bias) == 0
    std = model.classifier.out_proj.weight.std().item()
    assert std == pytest.approx(model.config.initializer_range, rel=5 * INIT_STD_RTOL)  # 64 draws only


def test_backbone_shape_mismatch_is_never_ignored():
    with pytest.raises(CheckpointError, match="do not fit the config") as err:
        ConvBertModel.from_pretrained(head_dir("model"), intermediate_size=40, ignore_mismatched_sizes=True)
    assert "ignore_mismatched_sizes" not in str(err.value)


# ------------------------------------------------------------------------------------- config=, Trainer folders
def test_folder_without_config_json_loads_with_config_given(tmp_path):
    folder = config_less_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass config="):
        ConvBertForSequenceClassification.from_pretrained(folder)
    config = ConvBertConfig.from_pretrained(head_dir("sequence_classification"))
    for given in (config, head_dir("sequence_classification") / "config.json", config.to_dict()):
        model = ConvBertForSequenceClassification.from_pretrained(folder, config=given, hidden_dropout_prob=0.0)
        assert model.config.hidden_dropout_prob == 0.0 and model.config.num_labels == 3
        assert torch.equal(model.classifier.out_proj.weight,
                           torch.from_numpy(_file_tensors(folder)["classifier.out_proj.weight"]))
    assert config.hidden_dropout_prob == 0.1  # the given object is not changed by the overrides


# ------------------------------------------------------------------------------------- the meta-device build
def test_loaded_weights_are_never_initialised_only_the_new_head_is(monkeypatch):
    touched = []
    original = ConvBertPreTrainedModel._init_weights

    def spy(self, module):
        if any(not p.is_meta for p in module.parameters(recurse=False)):
            touched.append(type(module).__name__)
        return original(self, module)

    monkeypatch.setattr(ConvBertPreTrainedModel, "_init_weights", spy)
    model = ConvBertForSequenceClassification.from_pretrained(head_dir("model"), num_labels=3)
    assert sorted(touched) == ["Linear", "Linear"]  # classifier.dense and classifier.out_proj
    assert not any(p.is_meta for p in model.parameters())
    file = _file_tensors(head_dir("model"))
    for name, value in model.convbert.state_dict().items():
        assert np.array_equal(value.numpy(), file[name]), name


def test_masked_lm_loaded_on_meta_stays_tied_and_trains(tmp_path):
    model = ConvBertForMaskedLM.from_pretrained(head_dir("masked_lm"))
    emb = model.get_input_embeddings().weight
    inputs = random_inputs(model.config)
    model.train()
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    model.resize_token_embeddings(model.config.vocab_size + 3)
    with torch.no_grad():
        logits = model.eval()(**inputs).logits
    assert logits.shape[-1] == model.config.vocab_size


@pytest.mark.parametrize("kwargs", [{"use_reentrant": False}, {"use_reentrant": True}, None])
def test_gradient_checkpointing_accepts_hf_kwargs_and_gives_the_same_gradients(kwargs):
    torch.manual_seed(0)
    config = tiny_config()
    plain = ConvBertForSequenceClassification(config).train()
    checkpointed = ConvBertForSequenceClassification(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    assert checkpointed.is_gradient_checkpointing
    inputs = random_inputs(config)
    labels = torch.tensor([0, 1, 2])
    for model in (plain, checkpointed):
        model(**inputs, labels=labels).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        assert (a.grad - b.grad).abs().max() <= SAME_COMPUTATION_FP32_ATOL, name
    with pytest.raises(ValueError, match="use_reentrant"):
        checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": "no"})


def test_loading_imports_neither_dynamo_nor_triton():
    """normal_ on meta tensors would import torch._dynamo and Triton, which clash with TensorFlow."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    code = ("import sys; from convbert_pt import ConvBertForMaskedLM as M; "
            f"M.from_pretrained({str(head_dir('model'))!r}); "
            "bad = [m for m in ('torch._dynamo', 'triton') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root / "src"),
                                                                            "PATH": ""})
