"""Hub ids: the config and the tokenizers from a fake HF cache, offline; errors that say where they looked."""

from __future__ import annotations

import json

import pytest

from convbert_common import hub
from convbert_common.config import ConvBertConfig
from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from tests.hub_cache import COMMIT, add_checkpoint, add_repo

OTHER_COMMIT = "f" * 40


@pytest.fixture
def cache(tmp_path, seqcls, monkeypatch):
    """A cache holding ``org/tiny`` (the seqcls checkpoint with tokenizer files) at main, and a v2 with 5 labels."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "hub-cache"
    add_checkpoint(root, "org/tiny", seqcls)
    config = json.loads((seqcls / "config.json").read_text())
    config["id2label"] = {str(i): f"L{i}" for i in range(5)}
    config.pop("label2id")
    add_repo(root, "org/tiny", {"config.json": json.dumps(config).encode()}, revision="v2", commit=OTHER_COMMIT)
    return root


def test_config_from_a_hub_id_reads_the_cached_snapshot(cache, seqcls):
    config = ConvBertConfig.from_pretrained("org/tiny", cache_dir=cache)
    assert config == ConvBertConfig.from_pretrained(seqcls)


def test_revision_picks_the_ref_or_the_commit(cache):
    assert ConvBertConfig.from_pretrained("org/tiny", cache_dir=cache, revision="v2").num_labels == 5
    assert ConvBertConfig.from_pretrained("org/tiny", cache_dir=cache, revision=OTHER_COMMIT).num_labels == 5
    assert ConvBertConfig.from_pretrained("org/tiny", cache_dir=cache, revision=COMMIT).num_labels == 3


@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_cache_location_follows_hf_home_and_hf_hub_cache_read_at_call_time(cache, tmp_path, monkeypatch, variable):
    home = tmp_path / "home"
    (home / "hub").mkdir(parents=True)
    (cache / "models--org--tiny").rename(home / "hub" / "models--org--tiny")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(home if variable == "HF_HOME" else home / "hub"))
    assert hub.cache_dir() == str(home / "hub")
    assert ConvBertConfig.from_pretrained("org/tiny").num_labels == 3


def test_offline_miss_names_the_id_the_cache_and_how_to_go_offline(cache):
    with pytest.raises(hub.HubError) as err:
        ConvBertConfig.from_pretrained("org/absent", cache_dir=cache)
    message = str(err.value)
    assert "org/absent" in message and str(cache / "models--org--absent") in message
    assert "HF_HUB_OFFLINE is set" in message and "HF_HUB_OFFLINE=1" in message and "snapshot_download" in message
    with pytest.raises(hub.HubError, match=r"revision 'v9'"):
        ConvBertConfig.from_pretrained("org/tiny", cache_dir=cache, revision="v9")


def test_hub_error_is_a_file_not_found_error_and_paths_are_not_ids(tmp_path):
    assert issubclass(hub.HubError, FileNotFoundError)
    for path in (str(tmp_path / "missing"), "a/b/c", "../up", "org--x/name"):
        assert not hub.is_repo_id(path), path
    for repo in ("bert-base-uncased", "YituTech/conv-bert-base", "org/name.v2"):
        assert hub.is_repo_id(repo), repo


def test_unreachable_hub_falls_back_to_the_cache_then_reports_it(cache, monkeypatch):
    """Online but no network: huggingface_hub raises LocalEntryNotFoundError for what is not cached."""
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.delenv("HF_HUB_OFFLINE")
    real = huggingface_hub.hf_hub_download
    calls = []

    def no_network(repo_id, filename, **kwargs):
        # As huggingface_hub does without a connection: the cached file if there is one, else the error.
        calls.append((filename, kwargs["local_files_only"]))
        try:
            return real(repo_id, filename, **{**kwargs, "local_files_only": True})
        except errors.LocalEntryNotFoundError:
            raise errors.LocalEntryNotFoundError("Connection error, and the file is not in the cache") from None

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    options = hub.HubOptions(cache_dir=cache, revision="v2")
    with pytest.raises(hub.HubError) as err:
        hub.resolve_checkpoint("org/tiny", ("model.safetensors", "pytorch_model.bin"), options)
    assert "could not be reached" in str(err.value) and "HF_HUB_OFFLINE=1" in str(err.value)
    # The cached config is used; after the first failure only the cache is asked.
    assert calls == [("config.json", False), ("model.safetensors", False), ("pytorch_model.bin", True)]


def test_tokenizers_from_a_hub_id_download_only_tokenizer_files(cache, seqcls, monkeypatch):
    import huggingface_hub

    real = huggingface_hub.hf_hub_download
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: asked.append(name) or real(
        repo, name, **kw))
    for cls in (ConvBertTokenizerFast, ConvBertTokenizer):
        tok = cls.from_pretrained("org/tiny", cache_dir=cache)
        assert tok("hello world")["input_ids"] == cls.from_pretrained(seqcls)("hello world")["input_ids"]
    assert "config.json" not in asked and not any(n.endswith((".safetensors", ".bin", ".h5")) for n in asked)
    assert {"vocab.txt", "tokenizer_config.json"} <= set(asked)


def test_subfolder_and_local_files_only(tmp_path, seqcls, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    root = tmp_path / "c"
    add_repo(root, "org/nested", {"sub/config.json": seqcls / "config.json"})
    config = ConvBertConfig.from_pretrained("org/nested", cache_dir=root, subfolder="sub", local_files_only=True)
    assert config.num_labels == 3
    with pytest.raises(hub.HubError, match="local_files_only=True"):
        ConvBertConfig.from_pretrained("org/nested", cache_dir=root, local_files_only=True)


def test_push_folder_creates_the_repo_and_uploads_one_commit(tmp_path):
    class FakeApi:
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
            return "commit"

    api = FakeApi()
    assert hub.push_folder(tmp_path, "me/model", token="t", private=True, api=api) == "commit"
    (name0, repo0, kw0), (name1, repo1, kw1) = api.calls
    assert (name0, repo0, kw0["exist_ok"], kw0["private"]) == ("create_repo", "me/model", True, True)
    assert (name1, repo1, kw1["folder_path"], kw1["token"]) == ("upload_folder", "me/model", str(tmp_path), "t")
