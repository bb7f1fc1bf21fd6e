"""Task pipelines in NumPy, shared by ``convbert_pt.pipeline`` and ``convbert_tf.pipeline``.

A pipeline is a tokenizer, the model's config, and a ``forward`` callable that takes a batch of
NumPy arrays (``input_ids``, ``token_type_ids``, ``attention_mask``, (B, L)) and returns the
model's outputs as NumPy arrays, in the model's output order. Everything else (turning inputs into
features, windows, batching and padding, scores, spans, entity grouping) happens here, once, so
the two frameworks cannot drift apart. The frameworks only supply ``forward``.

The outputs are those of Hugging Face's pipelines (transformers 4.x) for the same inputs:
``text-classification`` (``[{"label", "score"}]``, ``top_k``, ``function_to_apply``),
``token-classification`` (``aggregation_strategy`` none / simple / first / average / max,
``ignore_labels``, ``stride`` windows, pre-split words), ``question-answering`` (windows with
``doc_stride`` / ``max_seq_len``, ``max_answer_len``, ``top_k``, ``handle_impossible_answer``,
``align_to_words``), ``fill-mask`` (``top_k``, ``targets``) and ``feature-extraction`` (nested
lists of the first output). Batching follows HF: ``batch_size`` consecutive features (windows
included) form one batch, each key padded to the longest row on the tokenizer's padding side
(ids with the pad id, ``p_mask`` / ``special_tokens_mask`` with 1, the rest with 0). ConvBERT's
convolution branch sees the padding, so a batch of several gives slightly other numbers than
one input at a time, in HF as here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convbert_common.tokenizer import ConvBertTokenizerFast

logger = logging.getLogger(__name__)

Forward = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
AGGREGATIONS = ("none", "simple", "first", "average", "max")
_UNSET = object()  # text-classification's top_k: absent is not None (HF's "legacy" output)


def task_name(task: str) -> str:
    """The canonical name of ``task`` (HF's aliases accepted); ValueError naming the choices."""
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown pipeline task {task!r}; choose one of {', '.join(sorted([*TASKS, *ALIASES]))}")
    return name


_HUB_KEYS = ("revision", "cache_dir", "local_files_only", "token", "subfolder")


def resolve(task: str, model: Any, tokenizer: Any, options: dict[str, Any],
            load: Callable[[str, str, dict[str, Any]], Any]) -> tuple[type, Any, Any, dict[str, Any]]:
    """The pipeline class of ``task``, the model, its tokenizer, and the task's default options.

    ``options`` are the caller's keyword arguments: the task's own options become its defaults and
    the rest go to ``load(class_name, source, rest)``, the framework's ``from_pretrained``, when
    ``model`` is a folder or a Hub id. A loaded model takes no loading options and needs a tokenizer.
    """
    name = task_name(task)
    cls = TASKS[name]
    options = dict(options)
    defaults = {k: options.pop(k) for k in list(options) if k in cls.options}
    if model is None:
        raise ValueError(f"{name} pipeline: pass model= (a checkpoint directory, a Hub id or a loaded model)")
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        model = load(TASK_CLASSES[name], source, options)
        if tokenizer is None:
            hub = {k: options[k] for k in _HUB_KEYS if k in options}
            tokenizer = ConvBertTokenizerFast.from_pretrained(source, **hub)
    elif options:
        raise TypeError(f"pipeline got loading option(s) {', '.join(sorted(options))} for an already loaded model")
    elif tokenizer is None:
        raise ValueError(f"{name} pipeline: pass tokenizer= with a loaded model")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = ConvBertTokenizerFast.from_pretrained(tokenizer)
    return cls, model, tokenizer, defaults


# --------------------------------------------------------------------------------------- batching
@dataclass
class Feature:
    """One model input row: arrays the batch pads (``inputs``, each (L,) or (L, k)) and what passes by."""

    inputs: dict[str, np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


# Key of every row of ``run_features``: the names of the model's outputs, in the model's order.
OUTPUT_NAMES = "_outputs"


def _pad_value(key: str, pad_id: int) -> int:
    if key == "input_ids":
        return pad_id
    return 1 if key in ("p_mask", "special_tokens_mask") else 0


def _collate(rows: list[dict[str, np.ndarray]], pad_id: int, side: str) -> dict[str, np.ndarray]:
    """Rows of (L_i, ...) arrays -> (B, max L, ...) arrays, padded on ``side`` as HF's pipelines pad."""
    out = {}
    for key in rows[0]:
        arrays = [np.asarray(r[key]) for r in rows]
        longest = max(a.shape[0] for a in arrays)
        if all(a.shape[0] == longest for a in arrays):
            out[key] = np.stack(arrays)
            continue
        batch = np.full((len(arrays), longest, *arrays[0].shape[1:]), _pad_value(key, pad_id), arrays[0].dtype)
        for i, a in enumerate(arrays):
            if side == "left":
                batch[i, longest - a.shape[0]:] = a
            else:
                batch[i, : a.shape[0]] = a
        out[key] = batch
    return out


def run_features(features: list[Feature], forward: Forward, model_keys: Sequence[str], batch_size: int,
                 pad_id: int, padding_side: str) -> list[dict[str, np.ndarray]]:
    """Each feature's inputs and outputs as (1, ...) rows of its (padded) batch, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results = []
    for start in range(0, len(features), batch_size):
        chunk = features[start:start + batch_size]
        batch = _collate([f.inputs for f in chunk], pad_id, padding_side)
        outputs = forward({k: batch[k] for k in model_keys if k in batch})
        names = tuple(outputs)
        for i in range(len(chunk)):
            row = {k: v[i:i + 1] for k, v in batch.items()}
            row.update({k: np.asarray(v)[i:i + 1] for k, v in outputs.items()})
            row[OUTPUT_NAMES] = names
            results.append(row)
    return results


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in the input's precision, as HF's pipelines compute it."""
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------- the base
class Pipeline:
    """``pipe(inputs, **options)``: features -> batches through ``forward`` -> results, per HF's task."""

    task = ""
    # The arrays ``forward`` receives, of what the tokenizer returns.
    model_keys: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(self, forward: Forward, tokenizer, config, *, batch_size: int = 1, framework: str = "numpy",
                 model: Any = None, **defaults: Any) -> None:
        self.forward = forward
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = batch_size
        self.framework = framework
        self.model = model
        self._defaults = defaults
        self._check_options(defaults)

    # Subclasses: the options they take, how inputs read, features of one input, its result.
    options: tuple[str, ...] = ()

    def _check_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"{self.task} pipeline got unexpected option(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(self.options) or 'none'}")

    def __call__(self, inputs: Any = None, *, batch_size: int | None = None, **options: Any) -> Any:
        self._check_options(options)
        params = {**self._defaults, **options}
        items, single = self._items(inputs, params)
        results = self._run(items, params, batch_size or self.batch_size)
        return self._shape_result(results, single, options, inputs)

    def _run(self, items: list, params: dict, batch_size: int) -> list:
        features, owner = [], []
        for index, item in enumerate(items):
            for feature in self.preprocess(item, params):
                features.append(feature)
                owner.append(index)
        rows = run_features(features, self.forward, self.model_keys, batch_size, self._pad_id(),
                            self.tokenizer.padding_side)
        grouped: list[list] = [[] for _ in items]
        for feature, row, index in zip(features, rows, owner, strict=True):
            grouped[index].append((feature, row))
        return [self.postprocess(item, parts, params) for item, parts in zip(items, grouped, strict=True)]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token: a pipeline cannot batch without one")
        return int(pad)

    def _items(self, inputs: Any, params: dict) -> tuple[list, bool]:
        if isinstance(inputs, str):
            return [inputs], True
        if isinstance(inputs, (list, tuple)) and inputs:
            return list(inputs), False
        raise ValueError(f"{self.task}: expected a text or a non-empty list of texts, got {inputs!r}")

    def _shape_result(self, results: list, single: bool, options: dict, inputs: Any) -> Any:
        return results[0] if single else results

    def _encode(self, text, pair=None, **kwargs) -> Any:
        """The tokenizer's NumPy output for one input (rows: windows)."""
        return self.tokenizer(text, pair, return_tensors="np", **kwargs)

    def _require_fast(self, what: str) -> None:
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.task}: {what} needs the alignment only ConvBertTokenizerFast keeps; pass one")

    def preprocess(self, item: Any, params: dict) -> Iterable[Feature]:  # pragma: no cover - abstract
        raise NotImplementedError

    def postprocess(self, item: Any, parts: list[tuple[Feature, dict]], params: dict) -> Any:  # pragma: no cover
        raise NotImplementedError


def _rows(encoded, keys: Iterable[str]) -> list[dict[str, np.ndarray]]:
    """Per-row dicts of the arrays of ``keys`` that ``encoded`` has."""
    present = [k for k in keys if k in encoded]
    n = len(encoded[present[0]])
    return [{k: np.asarray(encoded[k][i]) for k in present} for i in range(n)]


# --------------------------------------------------------------------------------------- text classification
class TextClassificationPipeline(Pipeline):
    task = "text-classification"
    options = ("top_k", "function_to_apply", "truncation", "max_length", "padding")

    def _items(self, inputs, params):
        if isinstance(inputs, dict):
            return [inputs], True
        if isinstance(inputs, str):
            return [inputs], True
        if isinstance(inputs, (list, tuple)) and inputs:
            return list(inputs), False
        raise ValueError(f"{self.task}: expected a text, a {{'text', 'text_pair'}} dict, or a list of them")

    def preprocess(self, item, params):
        kwargs = {k: params[k] for k in ("truncation", "max_length", "padding") if k in params}
        if isinstance(item, dict):
            unknown = set(item) - {"text", "text_pair"}
            if "text" not in item or unknown:
                raise ValueError(f"{self.task}: a pair is {{'text': ..., 'text_pair': ...}}, got keys {sorted(item)}")
            encoded = self._encode(item["text"], item.get("text_pair"), **kwargs)
        elif isinstance(item, (list, tuple)) and len(item) == 1 and isinstance(item[0], (list, tuple)) \
                and len(item[0]) == 2:
            encoded = self._encode(item[0][0], item[0][1], **kwargs)  # HF's old [[text, pair]] form
        elif isinstance(item, str):
            encoded = self._encode(item, **kwargs)
        else:
            raise ValueError(f"{self.task}: send a text pair as {{'text': ..., 'text_pair': ...}}, got {item!r}")
        return [Feature(row) for row in _rows(encoded, self.model_keys)]

    def _function(self, params) -> str:
        given = params.get("function_to_apply")
        if given is not None:
            name = str(getattr(given, "value", given)).lower()
            if name not in ("sigmoid", "softmax", "none"):
                raise ValueError(f"function_to_apply must be 'sigmoid', 'softmax' or 'none', got {given!r}")
            return name
        problem, n = self.config.problem_type, self.config.num_labels
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or n == 1:
            return "sigmoid"
        return "softmax"

    def postprocess(self, item, parts, params):
        (_, row), = parts
        logits = np.asarray(row["logits"][0], dtype=np.float32)
        function = self._function(params)
        scores = sigmoid(logits) if function == "sigmoid" else softmax(logits) if function == "softmax" else logits
        top_k = params.get("top_k", _UNSET)
        id2label = self.config.id2label
        if top_k is _UNSET:  # HF's legacy form: the best label alone
            best = int(scores.argmax())
            return {"label": id2label[best], "score": float(scores[best])}
        ranked = sorted(({"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)),
                        key=lambda d: d["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]

    def _shape_result(self, results, single, options, inputs):
        if single:
            # HF: a single text without top_k gives a one-element list; a dict input gives the result.
            return [results[0]] if "top_k" not in options and isinstance(inputs, str) else results[0]
        return results


# --------------------------------------------------------------------------------------- token classification
class TokenClassificationPipeline(Pipeline):
    task = "token-classification"
    options = ("aggregation_strategy", "ignore_labels", "stride", "is_split_into_words", "delimiter")

    def _strategy(self, params) -> str:
        strategy = str(getattr(params.get("aggregation_strategy"), "value", params.get("aggregation_strategy"))
                       or "none").lower()
        if strategy not in AGGREGATIONS:
            raise ValueError(f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)}, got {strategy!r}")
        if strategy in ("first", "average", "max"):
            self._require_fast(f"aggregation_strategy={strategy!r}")
        if params.get("stride") is not None:
            if strategy == "none":
                raise ValueError('stride needs an aggregation_strategy other than "none" (windows are merged by '
                                 "entity)")
            self._require_fast("stride")
            if params["stride"] >= self.tokenizer.model_max_length:
                raise ValueError("stride must be less than the tokenizer's model_max_length")
        return strategy

    def _items(self, inputs, params):
        if params.get("is_split_into_words"):
            if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(w, str) for w in inputs):
                return [list(inputs)], False  # HF: one list of words still gives a list of results
            if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(w, (list, tuple)) for w in inputs):
                return [list(w) for w in inputs], False
            raise ValueError(f"{self.task}: with is_split_into_words=True, pass a list of words or a list of them")
        return super()._items(inputs, params)

    def preprocess(self, item, params):
        self._strategy(params)
        kwargs: dict[str, Any] = {"truncation": bool(self.tokenizer.model_max_length) and
                                  self.tokenizer.model_max_length > 0,
                                  "return_special_tokens_mask": True,
                                  "return_offsets_mapping": bool(getattr(self.tokenizer, "is_fast", False))}
        if params.get("stride") is not None:
            kwargs.update(return_overflowing_tokens=True, padding=True, stride=params["stride"])
        word_to_chars = None
        if params.get("is_split_into_words"):
            self._require_fast("is_split_into_words=True")
            delimiter = " " if params.get("delimiter") is None else params["delimiter"]
            sentence = delimiter.join(item)
            word_to_chars, position = [], 0
            for word in item:
                word_to_chars.append((position, position + len(word)))
                position += len(word) + len(delimiter)
            encoded = self.tokenizer(item, return_tensors="np", is_split_into_words=True, **kwargs)
        else:
            if not isinstance(item, str):
                raise ValueError(f"{self.task}: expected an untokenised text, got {item!r}")
            sentence = item
            encoded = self._encode(item, **kwargs)
        keys = (*self.model_keys, "special_tokens_mask", "offset_mapping")
        features = []
        for i, row in enumerate(_rows(encoded, keys)):
            extra = {"sentence": sentence}
            if word_to_chars is not None:
                extra.update(word_ids=encoded.word_ids(i), word_to_chars=word_to_chars)
            features.append(Feature(row, extra))
        return features

    def _subword_prefix(self) -> str | None:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        model = getattr(backend, "model", None)
        return getattr(model, "continuing_subword_prefix", None)

    def _pre_entities(self, sentence: str, row: dict, extra: dict, scores: np.ndarray, strategy: str) -> list[dict]:
        ids = row["input_ids"][0]
        special = row["special_tokens_mask"][0]
        offsets = row["offset_mapping"][0] if "offset_mapping" in row else None
        word_ids, word_to_chars = extra.get("word_ids"), extra.get("word_to_chars")
        word_aware = bool(self._subword_prefix())
        if not word_aware and strategy in ("first", "average", "max"):
            logger.warning("the tokenizer does not mark subwords; using a whitespace heuristic for word boundaries")
        unk = self.tokenizer.unk_token_id
        out = []
        for index, token_scores in enumerate(scores):
            if special[index]:
                continue
            word = self.tokenizer.convert_ids_to_tokens(int(ids[index]))
            if offsets is not None:
                start, end = int(offsets[index][0]), int(offsets[index][1])
                if word_ids is not None and word_to_chars is not None and word_ids[index] is not None:
                    # Pre-split words: offsets are within the word; make them absolute in the sentence.
                    shift = word_to_chars[word_ids[index]][0]
                    start, end = start + shift, end + shift
                reference = sentence[start:end]
                if word_aware:
                    is_subword = len(word) != len(reference)
                else:
                    is_subword = start > 0 and " " not in sentence[start - 1:start + 1]
                if int(ids[index]) == unk:
                    word, is_subword = reference, False
            else:
                start = end = None
                is_subword = False
            out.append({"word": word, "scores": token_scores, "start": start, "end": end, "index": index,
                        "is_subword": is_subword})
        return out

    def _label(self, index) -> str:
        return self.config.id2label[int(index)]

    def _aggregate(self, pre: list[dict], strategy: str) -> list[dict]:
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = p["scores"].argmax()
                entities.append({"entity": self._label(best), "score": p["scores"][best], "index": p["index"],
                                 "word": p["word"], "start": p["start"], "end": p["end"]})
        else:
            entities = self._aggregate_words(pre, strategy)
        return entities if strategy == "none" else self._group_entities(entities)

    def _aggregate_word(self, tokens: list[dict], strategy: str) -> dict:
        word = self.tokenizer.convert_tokens_to_string([t["word"] for t in tokens])
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = scores.argmax()
        return {"entity": self._label(best), "score": scores[best], "word": word, "start": tokens[0]["start"],
                "end": tokens[-1]["end"]}

    def _aggregate_words(self, pre: list[dict], strategy: str) -> list[dict]:
        """Tokens of one word get one label (the word's first / max / average scores)."""
        words, group = [], None
        for p in pre:
            if group is None:
                group = [p]
            elif p["is_subword"]:
                group.append(p)
            else:
                words.append(self._aggregate_word(group, strategy))
                group = [p]
        if group is not None:
            words.append(self._aggregate_word(group, strategy))
        return words

    @staticmethod
    def _tag(entity: str) -> tuple[str, str]:
        if entity.startswith("B-"):
            return "B", entity[2:]
        if entity.startswith("I-"):
            return "I", entity[2:]
        return "I", entity  # no B-/I- prefix: a continuation

    def _group(self, entities: list[dict]) -> dict:
        scores = np.nanmean([e["score"] for e in entities])
        return {"entity_group": entities[0]["entity"].split("-", 1)[-1], "score": np.mean(scores),
                "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}

    def _group_entities(self, entities: list[dict]) -> list[dict]:
        """Adjacent entities of the same tag merge, unless the next one begins a new entity (B-)."""
        groups, current = [], []
        for entity in entities:
            if current:
                bi, tag = self._tag(entity["entity"])
                _, last_tag = self._tag(current[-1]["entity"])
                if tag == last_tag and bi != "B":
                    current.append(entity)
                    continue
                groups.append(self._group(current))
            current = [entity]
        if current:
            groups.append(self._group(current))
        return groups

    @staticmethod
    def _merge_windows(entities: list[dict]) -> list[dict]:
        """Entities of overlapping windows: of two that overlap, the longer (then the surer) stays."""
        if not entities:
            return entities
        entities = sorted(entities, key=lambda e: e["start"])
        kept, previous = [], entities[0]
        for entity in entities:
            if previous["start"] <= entity["start"] < previous["end"]:
                length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
                if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                    previous = entity
            else:
                kept.append(previous)
                previous = entity
        kept.append(previous)
        return kept

    def postprocess(self, item, parts, params):
        strategy = self._strategy(params)
        ignore = ["O"] if params.get("ignore_labels") is None else list(params["ignore_labels"])
        found = []
        for feature, row in parts:
            scores = softmax(np.asarray(row["logits"][0], dtype=np.float32))
            pre = self._pre_entities(feature.extra["sentence"], row, feature.extra, scores, strategy)
            found.extend(e for e in self._aggregate(pre, strategy)
                         if e.get("entity") not in ignore and e.get("entity_group") not in ignore)
        return self._merge_windows(found) if len(parts) > 1 else found


# --------------------------------------------------------------------------------------- question answering
@dataclass(frozen=True)
class QAExample:
    question: str
    context: str


class QuestionAnsweringPipeline(Pipeline):
    task = "question-answering"
    options = ("top_k", "doc_stride", "max_answer_len", "max_seq_len", "max_question_len",
               "handle_impossible_answer", "align_to_words", "padding", "question", "context")
    model_keys = ("input_ids", "token_type_ids", "attention_mask")

    def __call__(self, *args, batch_size: int | None = None, **options):
        question, context = options.pop("question", None), options.pop("context", None)
        if args and question is None and context is None:
            if len(args) == 2 and all(isinstance(a, str) for a in args):
                inputs = [{"question": args[0], "context": args[1]}]
            elif len(args) == 1:
                inputs = args[0]
            else:
                inputs = list(args)
        elif question is not None and context is not None and not args:
            if isinstance(question, str) and isinstance(context, str):
                inputs = [{"question": question, "context": context}]
            elif isinstance(question, list) and isinstance(context, str):
                inputs = [{"question": q, "context": context} for q in question]
            elif isinstance(question, list) and isinstance(context, list):
                if len(question) != len(context):
                    raise ValueError("question-answering: questions and contexts differ in number")
                inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
            else:
                raise ValueError("question-answering: question= and context= must be strings or lists of strings")
        else:
            raise ValueError("question-answering: pass question= and context=, a {'question', 'context'} dict, or a "
                             "list of them")
        if isinstance(inputs, dict):
            inputs = [inputs]
        examples = [self._example(x) for x in inputs]
        return super().__call__(examples if len(examples) > 1 else examples[0], batch_size=batch_size, **options)

    @staticmethod
    def _example(item) -> QAExample:
        if isinstance(item, QAExample):
            return item
        if not isinstance(item, dict) or "question" not in item or "context" not in item:
            raise ValueError(f"question-answering: expected a {{'question': ..., 'context': ...}} dict, got {item!r}")
        for key in ("question", "context"):
            if item[key] is None:
                raise ValueError(f"question-answering: {key} cannot be None")
            if isinstance(item[key], str) and not item[key]:
                raise ValueError(f"question-answering: {key} cannot be empty")
        return QAExample(item["question"], item["context"])

    def _items(self, inputs, params):
        if isinstance(inputs, QAExample):
            return [inputs], True
        return list(inputs), False

    def preprocess(self, item: QAExample, params):
        self._require_fast("question answering")
        max_seq_len = params.get("max_seq_len") or min(self.tokenizer.model_max_length, 384)
        doc_stride = params.get("doc_stride")
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        if doc_stride > max_seq_len:
            raise ValueError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
        question_first = self.tokenizer.padding_side == "right"
        encoded = self.tokenizer(
            item.question if question_first else item.context, item.context if question_first else item.question,
            padding=params.get("padding", "do_not_pad"), truncation="only_second" if question_first else "only_first",
            max_length=max_seq_len, stride=doc_stride, return_token_type_ids=True, return_overflowing_tokens=True,
            return_offsets_mapping=True, return_special_tokens_mask=True,
        )
        cls = self.tokenizer.cls_token_id
        features = []
        for span in range(len(encoded["input_ids"])):
            ids = np.asarray(encoded["input_ids"][span])
            # 1 where a token cannot be part of the answer: the question, special tokens, padding.
            p_mask = np.asarray([0 if not question_first else int(s != 1) for s in encoded.sequence_ids(span)])
            if cls is not None:
                p_mask[ids == cls] = 0
            inputs = {"input_ids": ids, "p_mask": p_mask}
            for key in ("token_type_ids", "attention_mask"):
                if key in encoded:
                    inputs[key] = np.asarray(encoded[key][span])
            features.append(Feature(inputs, {"encoding": encoded.encodings[span]}))
        return features

    @staticmethod
    def _decode_spans(start, end, top_k: int, max_answer_len: int, allowed: np.ndarray):
        """The ``top_k`` best (start, end) pairs, end >= start, at most ``max_answer_len`` tokens, and their scores."""
        if start.ndim == 1:
            start = start[None]
        if end.ndim == 1:
            end = end[None]
        pairs = np.matmul(start[..., None], end[:, None, :])  # (1, L, L): P(start) * P(end)
        candidates = np.tril(np.triu(pairs), max_answer_len - 1)
        flat = candidates.flatten()
        if top_k == 1:
            order = [np.argmax(flat)]
        elif len(flat) < top_k:
            order = np.argsort(-flat)
        else:
            part = np.argpartition(-flat, top_k)[0:top_k]
            order = part[np.argsort(-flat[part])]
        starts, ends = np.unravel_index(order, candidates.shape)[1:]
        # As HF: membership in allowed.nonzero() (its row indices, 0, included).
        keep = np.isin(starts, allowed.nonzero()) & np.isin(ends, allowed.nonzero())
        starts, ends = starts[keep], ends[keep]
        return starts, ends, candidates[0, starts, ends]

    def _select(self, start, end, p_mask, attention_mask, min_null_score, top_k, impossible, max_answer_len):
        allowed = np.abs(np.asarray(p_mask) - 1)
        if attention_mask is not None:
            allowed = allowed & attention_mask
        blocked = allowed == 0.0
        start = np.where(blocked, -10000.0, start)
        end = np.where(blocked, -10000.0, end)
        start = np.exp(start - start.max(axis=-1, keepdims=True))
        start = start / start.sum()
        end = np.exp(end - end.max(axis=-1, keepdims=True))
        end = end / end.sum()
        if impossible:
            min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
        start[0, 0] = end[0, 0] = 0.0
        starts, ends, scores = self._decode_spans(start, end, top_k, max_answer_len, allowed)
        return starts, ends, scores, min_null_score

    @staticmethod
    def _char_span(encoding, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
        if align_to_words:
            try:
                start_word, end_word = encoding.token_to_word(s), encoding.token_to_word(e)
                return (encoding.word_to_chars(start_word, sequence_index=sequence_index)[0],
                        encoding.word_to_chars(end_word, sequence_index=sequence_index)[1])
            except Exception:  # noqa: BLE001 - tokens without words (HF's fallback): their own offsets
                pass
        return encoding.offsets[s][0], encoding.offsets[e][1]

    def postprocess(self, item: QAExample, parts, params):
        top_k = params.get("top_k") or 1
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        max_answer_len = params.get("max_answer_len", 15)
        if max_answer_len < 1:
            raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}")
        impossible = bool(params.get("handle_impossible_answer", False))
        align = params.get("align_to_words", True)
        min_null_score = 1000000.0
        answers: list[dict] = []
        question_first = self.tokenizer.padding_side == "right"
        for feature, row in parts:
            start = np.asarray(row["start_logits"], dtype=np.float32)
            end = np.asarray(row["end_logits"], dtype=np.float32)
            mask = row.get("attention_mask")
            starts, ends, scores, min_null_score = self._select(
                start, end, row["p_mask"], mask, min_null_score, top_k * 2 + 10 if align else top_k, impossible,
                max_answer_len)
            shift = int((row["input_ids"] == self.tokenizer.pad_token_id).sum()) \
                if self.tokenizer.padding_side == "left" else 0
            for s, e, score in zip(starts, ends, scores, strict=True):
                a, b = self._char_span(feature.extra["encoding"], int(s) - shift, int(e) - shift,
                                       1 if question_first else 0, align)
                text = item.context[a:b]
                same = next((x for x in answers if x["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": a, "end": b, "answer": text})
        if impossible:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


# --------------------------------------------------------------------------------------- fill-mask
class FillMaskPipeline(Pipeline):
    task = "fill-mask"
    options = ("top_k", "targets", "tokenizer_kwargs")

    def __call__(self, inputs=None, **options):
        out = super().__call__(inputs, **options)
        return out[0] if isinstance(inputs, list) and len(inputs) == 1 else out

    def _target_ids(self, targets) -> np.ndarray:
        if isinstance(targets, str):
            targets = [targets]
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            found = vocab.get(target)
            if found is None:
                pieces = self.tokenizer(target, add_special_tokens=False, return_attention_mask=False,
                                        return_token_type_ids=False, max_length=1, truncation=True)["input_ids"]
                if not pieces:
                    logger.warning("fill-mask target %r is not in the vocabulary and tokenises to nothing: ignored",
                                   target)
                    continue
                found = pieces[0]
                logger.warning("fill-mask target %r is not in the vocabulary; using %r", target,
                               self.tokenizer.convert_ids_to_tokens(found))
            ids.append(found)
        ids = list(set(ids))
        if not ids:
            raise ValueError("fill-mask: targets= must name at least one token")
        return np.array(ids)

    def preprocess(self, item, params):
        if self.tokenizer.mask_token_id is None:
            raise ValueError("fill-mask: the tokenizer has no mask token")
        encoded = self._encode(item, **(params.get("tokenizer_kwargs") or {}))
        rows = _rows(encoded, self.model_keys)
        for row in rows:
            if not np.any(row["input_ids"] == self.tokenizer.mask_token_id):
                raise ValueError(f"fill-mask: no mask token ({self.tokenizer.mask_token}) in {item!r}")
        return [Feature(row) for row in rows]

    def postprocess(self, item, parts, params):
        (_, row), = parts
        top_k = params.get("top_k") or 5
        targets = self._target_ids(params["targets"]) if params.get("targets") is not None else None
        if targets is not None and targets.shape[0] < top_k:
            top_k = targets.shape[0]
        ids = row["input_ids"][0]
        masked = np.nonzero(ids == self.tokenizer.mask_token_id)[0]
        probs = softmax(np.asarray(row["logits"][0, masked, :], dtype=np.float32))  # (masks, V)
        if targets is not None:
            probs = probs[..., targets]
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
        single = len(masked) == 1
        result = []
        for i in range(len(masked)):
            propositions = []
            for p in order[i]:
                token = int(targets[p]) if targets is not None else int(p)
                filled = ids.copy()
                filled[masked[i]] = token
                filled = filled[filled != self.tokenizer.pad_token_id]
                propositions.append({"score": float(probs[i, p]), "token": token,
                                     "token_str": self.tokenizer.decode([token]),
                                     "sequence": self.tokenizer.decode(filled.tolist(), skip_special_tokens=single)})
            result.append(propositions)
        return result[0] if single else result


# --------------------------------------------------------------------------------------- feature extraction
class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"
    options = ("truncation", "tokenize_kwargs", "return_tensors")

    def preprocess(self, item, params):
        kwargs = dict(params.get("tokenize_kwargs") or {})
        if params.get("truncation") is not None:
            if "truncation" in kwargs:
                raise ValueError("feature-extraction: truncation given both as an option and in tokenize_kwargs")
            kwargs["truncation"] = params["truncation"]
        return [Feature(row) for row in _rows(self._encode(item, **kwargs), self.model_keys)]

    def postprocess(self, item, parts, params):
        (_, row), = parts
        # The model's first output: last_hidden_state for ConvBertModel, logits for a head model.
        first = row[row[OUTPUT_NAMES][0]]
        return first if params.get("return_tensors") else first.tolist()


TASKS: dict[str, type[Pipeline]] = {
    "text-classification": TextClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "fill-mask": FillMaskPipeline,
    "feature-extraction": FeatureExtractionPipeline,
}

# The model class each task loads a checkpoint into (HF's AutoModelFor... choice).
TASK_CLASSES = {
    "text-classification": "ConvBertForSequenceClassification",
    "token-classification": "ConvBertForTokenClassification",
    "question-answering": "ConvBertForQuestionAnswering",
    "fill-mask": "ConvBertForMaskedLM",
    "feature-extraction": "ConvBertModel",
}


def make(task: str, forward: Forward, tokenizer, config, **kwargs: Any) -> Pipeline:
    """The pipeline of ``task`` on ``forward``."""
    return TASKS[task_name(task)](forward, tokenizer, config, **kwargs)
