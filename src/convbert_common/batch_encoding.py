"""What the tokenizers return, and Hugging Face's ``tokenizer.pad`` on already-encoded inputs.

``BatchEncoding`` is a dict of fields (``input_ids``, ``attention_mask``, ...) with attribute access;
the fast tokenizer also keeps the backend ``tokenizers.Encoding`` of every row, which maps tokens
back to words, characters and sequences (``word_ids``, ``word_to_tokens``, ...).

``pad_encoded`` is the padding step of HF's ``PreTrainedTokenizerBase.pad``, the function data
collators call: a dict of lists or a list of dicts (or the same holding NumPy / PyTorch / TF
tensors) comes back padded, with ``attention_mask``, ``token_type_ids`` and
``special_tokens_mask`` padded beside ``input_ids`` and any other field passed through.

Nothing here imports torch or tensorflow until a tensor of theirs is asked for or passed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence, Sized
from typing import Any, NamedTuple

import numpy as np
from tokenizers import Encoding

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
PADDING_SIDES = ("right", "left")
TENSOR_TYPES = ("np", "pt", "tf")

# A model_max_length at or above this means "no limit" (HF writes int(1e30) for that).
UNLIMITED = 10**18


class TokenSpan(NamedTuple):
    """Tokens ``start`` (inclusive) to ``end`` (exclusive) of one row, as HF's ``TokenSpan``."""

    start: int
    end: int


class CharSpan(NamedTuple):
    """Characters ``start`` (inclusive) to ``end`` (exclusive) of the input text, as HF's ``CharSpan``."""

    start: int
    end: int


# ------------------------------------------------------------------------------ argument checks
def _plain_choice(value: Any, names: tuple[str, ...]) -> str | None:
    """The one of ``names`` that ``value`` equals, as a plain str; None if none.

    HF's strategy enums and its TensorType are str enums whose values compare equal to the plain
    strings, so they are accepted and come back as ours.
    """
    if isinstance(value, str):
        for name in names:
            if value == name:
                return name
    return None


def strategy_name(value: Any, names: tuple[str, ...], *, when_true: str, when_false: str, argument: str) -> str:
    """One of ``names`` for HF's bool / str / str-enum strategy argument; ValueError naming the choices."""
    if value is True:
        return when_true
    if value is False:
        return when_false
    name = _plain_choice(value, names)
    if name is not None:
        return name
    others = [repr(n) for n in names if n not in (when_true, when_false)]
    raise ValueError(f"{argument}={value!r} is not a {argument} strategy: use True/{when_true!r}, "
                     f"{', '.join(others)} or False/{when_false!r}")


def padding_strategy(padding: Any) -> str:
    """HF's padding argument (bool, str or its ``PaddingStrategy`` str-enum) as one of ours."""
    return strategy_name(False if padding is None else padding, PADDING_STRATEGIES, when_true="longest",
                         when_false="do_not_pad", argument="padding")


def check_padding_side(padding_side: Any, name: str = "padding_side") -> str:
    side = _plain_choice(padding_side, PADDING_SIDES)
    if side is None:
        raise ValueError(f"{name}={padding_side!r} is not a side: use 'right' or 'left'")
    return side


def positive_int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def check_tensor_type(return_tensors: Any) -> str | None:
    if return_tensors is None:
        return None
    name = _plain_choice(return_tensors, TENSOR_TYPES)
    if name is None:
        raise ValueError(f"return_tensors={return_tensors!r} is not supported: use None, 'np', 'pt' or 'tf'")
    return name


# ---------------------------------------------------------------------------- tensor conversion
def _torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError("return_tensors='pt' needs PyTorch: pip install 'convbert[torch]'") from err
    return torch


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError("return_tensors='tf' needs TensorFlow: pip install 'convbert[tf]'") from err
    return tf


def stack_token_fields(fields: dict[str, list], row_key: str = "input_ids") -> dict[str, np.ndarray]:
    """Per-token fields (one list per row) as int64 arrays; per-row fields (``length``...) as 1-D."""
    rows = fields[row_key]
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"cannot stack sequences of lengths {min(lengths)}..{max(lengths)} into one tensor: "
            "pass padding=True (or padding='max_length') to make them equal"
        )
    width = lengths.pop() if lengths else 0
    arrays = {}
    for name, values in fields.items():
        if name == "offset_mapping":
            arrays[name] = np.array(values, dtype=np.int64).reshape(len(rows), width, 2)
        elif values and not isinstance(values[0], (list, tuple)):
            arrays[name] = np.asarray(values, dtype=np.int64)
        else:
            # fromiter over the flattened rows skips np.array's shape discovery (~20% faster).
            flat = np.fromiter(itertools.chain.from_iterable(values), dtype=np.int64, count=len(rows) * width)
            arrays[name] = flat.reshape(len(rows), width)
    return arrays


def int_arrays_to_tensors(arrays: dict[str, np.ndarray], tensor_type: str) -> dict[str, Any]:
    """np stays int64; torch gets int64 (``torch.long``); TF gets int32, as HF's TF path does."""
    if tensor_type == "np":
        return arrays
    if tensor_type == "pt":
        torch = _torch()
        return {name: torch.from_numpy(value) for name, value in arrays.items()}
    tf = _tensorflow()
    return {name: tf.convert_to_tensor(value.astype(np.int32)) for name, value in arrays.items()}


def _ragged(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple, np.ndarray)):
        lengths = {len(row) for row in value}
        if len(lengths) > 1:
            return min(lengths), max(lengths)
    return None


def to_tensor(name: str, value: Any, tensor_type: str) -> Any:
    """One field as HF's ``BatchEncoding.convert_to_tensors`` makes it (python ints -> int64 / TF int32,
    python floats -> float32 in torch and TF), refusing ragged rows by name."""
    ragged = _ragged(value)
    if ragged is not None:
        raise ValueError(
            f"cannot make a tensor of {name!r}: its rows have lengths {ragged[0]}..{ragged[1]} "
            "(pad them first, or leave return_tensors=None)"
        )
    empty = isinstance(value, (list, tuple)) and not any(
        len(row) if isinstance(row, (list, tuple)) else 1 for row in value
    )
    try:
        if tensor_type == "np":
            return np.asarray(value, dtype=np.int64 if empty else None)
        if tensor_type == "pt":
            torch = _torch()
            if torch.is_tensor(value):
                return value
            if isinstance(value, np.ndarray):
                return torch.from_numpy(value)
            if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                return torch.from_numpy(np.array(value))
            return torch.tensor(value, dtype=torch.int64 if empty else None)
        tf = _tensorflow()
        if tf.is_tensor(value):
            return value
        return tf.constant(value, dtype=tf.int32 if empty else None)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"cannot make a {tensor_type!r} tensor of {name!r} (first value {_first_leaf(value)!r}): {err}"
        ) from err


def _first_leaf(value: Any) -> Any:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


def _framework_of(value: Any) -> str | None:
    """'pt' / 'tf' / 'np' for a tensor or array, None for python values (no framework import)."""
    if isinstance(value, np.ndarray):
        return "np"
    module = type(value).__module__
    if module.startswith("torch"):
        return "pt"
    if module.startswith("tensorflow") or module.startswith("tf_keras"):
        return "tf"
    return None


def to_python(value: Any) -> Any:
    """``value`` in plain Python: dicts, lists and numbers for nested NumPy / PyTorch / TF values."""
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    framework = _framework_of(value)
    if framework == "pt":
        return value.tolist()
    if framework == "tf":
        return value.numpy().tolist()
    return value


# --------------------------------------------------------------------------------- BatchEncoding
class BatchEncoding(dict):
    """The encoded fields (``input_ids``, ``token_type_ids``, ...) with attribute access.

    A dict so that ``model(**enc)`` works; the fast tokenizer also keeps the backend encodings so
    that ``tokens``, ``word_ids``, ``sequence_ids`` and the ``*_to_*`` maps relate tokens to words,
    characters and sequences, as in HF. Row ``i`` of a batch (or window ``i`` with
    ``return_overflowing_tokens``) is ``batch_index=i``.
    """

    def __init__(self, data: dict[str, Any] | None = None, encodings: list[Encoding] | None = None) -> None:
        super().__init__(data or {})
        self._encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self) -> dict[str, Any]:
        return {"encodings": self._encodings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._encodings = state["encodings"]

    @property
    def encodings(self) -> list[Encoding] | None:
        return self._encodings

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def n_sequences(self) -> int | None:
        """1 for single texts, 2 for pairs; None without the backend encodings."""
        if not self._encodings:
            return None
        return self._encodings[0].n_sequences

    def _encoding(self, batch_index: int, what: str = "tokens(), word_ids() and sequence_ids()") -> Encoding:
        if self._encodings is None:
            raise ValueError(f"{what} need the alignment only ConvBertTokenizerFast keeps")
        if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)):
            raise TypeError(f"batch_index must be an int, got {type(batch_index).__name__}")
        if not -len(self._encodings) <= batch_index < len(self._encodings):
            size = len(self._encodings)
            raise IndexError(f"batch_index {batch_index} is out of range for a batch of {size}")
        return self._encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """The word each token comes from (None for special and padding tokens): NER label alignment."""
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).sequence_ids

    # HF's two-form signatures: f(index) is row 0, f(batch_index, index) names the row.
    def _row_and_index(self, first: int, second: int | None, what: str) -> tuple[Encoding, int]:
        batch_index, index = (0, first) if second is None else (first, second)
        encoding = self._encoding(batch_index, what)
        return encoding, index

    def _token_position(self, encoding: Encoding, token_index: int) -> int:
        n = len(encoding.ids)
        if not -n <= token_index < n:
            raise IndexError(f"token_index {token_index} is out of range for a row of {n} tokens")
        return token_index % n

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        encoding, index = self._row_and_index(batch_or_token_index, token_index, "token_to_sequence()")
        return encoding.token_to_sequence(self._token_position(encoding, index))

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        encoding, index = self._row_and_index(batch_or_token_index, token_index, "token_to_word()")
        return encoding.token_to_word(self._token_position(encoding, index))

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        encoding, index = self._row_and_index(batch_or_token_index, token_index, "token_to_chars()")
        span = encoding.token_to_chars(self._token_position(encoding, index))
        return None if span is None else CharSpan(*span)

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        return self._word_span("word_to_tokens", TokenSpan, batch_or_word_index, word_index, sequence_index)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan | None:
        return self._word_span("word_to_chars", CharSpan, batch_or_word_index, word_index, sequence_index)

    def _word_span(self, method: str, span_type: type, batch_or_word_index: int, word_index: int | None,
                   sequence_index: int):
        encoding, index = self._row_and_index(batch_or_word_index, word_index, f"{method}()")
        span = getattr(encoding, method)(index, sequence_index)
        return None if span is None else span_type(*span)

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        encoding, index = self._row_and_index(batch_or_char_index, char_index, "char_to_token()")
        return encoding.char_to_token(index, sequence_index)

    def char_to_word(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        encoding, index = self._row_and_index(batch_or_char_index, char_index, "char_to_word()")
        return encoding.char_to_word(index, sequence_index)

    def convert_to_tensors(self, tensor_type: str | None) -> BatchEncoding:
        """Turn every field into a tensor of ``tensor_type`` ('np', 'pt', 'tf') in place."""
        tensor_type = check_tensor_type(tensor_type)
        if tensor_type is not None:
            for key, value in list(self.items()):
                self[key] = to_tensor(key, value, tensor_type)
        return self

    def to(self, device: Any) -> BatchEncoding:
        """Move PyTorch tensors to ``device`` in place (other values are left as they are)."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


# ------------------------------------------------------------------------------------ padding
def _as_columns(encoded_inputs: Any, main_input: str) -> dict[str, Any]:
    """A list of examples (dicts) becomes one dict of lists; a dict is copied, never changed."""
    if isinstance(encoded_inputs, (list, tuple)):
        if not encoded_inputs:
            raise ValueError("pad() got an empty list: there is nothing to pad")
        if not all(isinstance(example, Mapping) for example in encoded_inputs):
            bad = next(i for i, e in enumerate(encoded_inputs) if not isinstance(e, Mapping))
            raise ValueError(
                f"pad() takes a dict of lists or a list of dicts; example #{bad} is a "
                f"{type(encoded_inputs[bad]).__name__}"
            )
        keys = list(encoded_inputs[0].keys())
        columns: dict[str, list] = {key: [] for key in keys}
        for index, example in enumerate(encoded_inputs):
            if set(example.keys()) != set(keys):
                missing = sorted(set(keys) - set(example.keys()))
                extra = sorted(set(example.keys()) - set(keys))
                raise ValueError(
                    f"pad(): example #{index} has different fields from example #0 "
                    f"(missing {missing}, extra {extra})"
                )
            for key in keys:
                columns[key].append(example[key])
        return columns
    if isinstance(encoded_inputs, Mapping):
        return dict(encoded_inputs)
    raise ValueError(
        f"pad() takes a dict of lists or a list of dicts (e.g. BatchEncodings), got {type(encoded_inputs).__name__}"
    )


def _pad_row(
    row: dict[str, Any],
    *,
    target: int | None,
    strategy: str,
    multiple: int | None,
    side: str,
    attention_mask: bool,
    pad_id: int,
    pad_type_id: int,
    main_input: str,
) -> dict[str, Any]:
    """HF's ``_pad`` for one example; rows longer than the target are left as they are."""
    ids = list(row[main_input])
    if strategy == "longest":
        target = len(ids)
    if target is not None and multiple is not None and target % multiple:
        target += multiple - target % multiple
    if attention_mask and "attention_mask" not in row:
        row["attention_mask"] = [1] * len(ids)
    missing = (target - len(ids)) if strategy != "do_not_pad" and target is not None else 0
    if missing <= 0:
        return row

    def padded(values: Any, fill: int) -> list:
        values = list(values)
        return values + [fill] * missing if side == "right" else [fill] * missing + values

    # HF pads the attention mask only when it returns one; we keep that, so the fields agree.
    if attention_mask:
        row["attention_mask"] = padded(row["attention_mask"], 0)
    if "token_type_ids" in row:
        row["token_type_ids"] = padded(row["token_type_ids"], pad_type_id)
    if "special_tokens_mask" in row:
        row["special_tokens_mask"] = padded(row["special_tokens_mask"], 1)
    row[main_input] = padded(ids, pad_id)
    return row


def pad_encoded(
    encoded_inputs: Any,
    *,
    padding: Any = True,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
    return_attention_mask: bool | None = None,
    return_tensors: str | None = None,
    pad_id: int,
    pad_type_id: int = 0,
    model_max_length: int,
    model_input_names: Sequence[str] = ("input_ids", "token_type_ids", "attention_mask"),
) -> BatchEncoding:
    """HF's ``pad``: see the module docstring. ``max_length`` with ``padding='max_length'`` is the
    target (``model_max_length`` when None); ``padding=True`` pads to the longest row; nothing is
    truncated; ``pad_to_multiple_of`` rounds the target up."""
    main_input = model_input_names[0]
    strategy = padding_strategy(padding)
    max_length = positive_int_or_none("max_length", max_length)
    multiple = positive_int_or_none("pad_to_multiple_of", pad_to_multiple_of)
    side = check_padding_side(padding_side)
    tensor_type = check_tensor_type(return_tensors)
    columns = _as_columns(encoded_inputs, main_input)
    if main_input not in columns:
        raise ValueError(
            f"pad() needs the field {main_input!r} to pad, but got only {sorted(columns)}"
        )
    if return_attention_mask is None:
        return_attention_mask = "attention_mask" in model_input_names

    required = columns[main_input]
    if required is None or (isinstance(required, Sized) and len(required) == 0):
        if return_attention_mask:
            columns["attention_mask"] = []
        return BatchEncoding(columns)

    # Tensors come back as python lists, and as the same kind of tensor unless told otherwise.
    first = required[0]
    if isinstance(first, (list, tuple)):
        first = next((row[0] for row in required if len(row)), first)
    framework = _framework_of(first) or _framework_of(required)
    if framework is not None or any(_framework_of(v) is not None for v in columns.values()):
        if tensor_type is None:
            tensor_type = framework
        columns = {key: to_python(value) for key, value in columns.items()}
        required = columns[main_input]

    if strategy == "max_length" and max_length is None:
        if model_max_length >= UNLIMITED:
            strategy = "do_not_pad"
        else:
            max_length = model_max_length

    settings = dict(
        multiple=multiple,
        side=side,
        attention_mask=bool(return_attention_mask),
        pad_id=pad_id,
        pad_type_id=pad_type_id,
        main_input=main_input,
    )
    if required and not isinstance(required[0], (list, tuple)):
        row = _pad_row(dict(columns), target=max_length, strategy=strategy, **settings)
        return _finish(row, tensor_type)

    batch_size = len(required)
    for key, value in columns.items():
        if not isinstance(value, (list, tuple)) or len(value) != batch_size:
            size = len(value) if isinstance(value, (list, tuple)) else "no"
            raise ValueError(
                f"pad(): field {key!r} has {size} rows but {main_input!r} has {batch_size}"
            )
    if strategy == "longest":
        max_length = max(len(row) for row in required)
        strategy = "max_length"
    out: dict[str, list] = {}
    for index in range(batch_size):
        row = _pad_row(
            {key: value[index] for key, value in columns.items()},
            target=max_length,
            strategy=strategy,
            **settings,
        )
        for key, value in row.items():
            out.setdefault(key, []).append(value)
    return _finish(out, tensor_type)


def _finish(fields: dict[str, Any], tensor_type: str | None) -> BatchEncoding:
    # A single example stays 1-D with tensors too: HF adds no batch axis in pad().
    encoding = BatchEncoding(fields)
    return encoding if tensor_type is None else encoding.convert_to_tensors(tensor_type)
