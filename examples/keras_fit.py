"""Fine-tune ConvBertForSequenceClassification on the toy sentiment set with Keras ``model.fit``.

    python examples/keras_fit.py                                  # a small fresh model, CPU, ~1 min
    python examples/keras_fit.py --init-from path/to/checkpoint   # start from a pretrained checkpoint
    python examples/keras_fit.py --mixed-precision mixed_bfloat16 --jit-compile

The first 480 rows of ``examples/data/toy_sentiment.tsv`` train, the rest evaluate. The texts are
tokenised once (``ConvBertTokenizerFast``, padded to ``--max-length``) into ``tf.data`` pipelines;
``compile(optimizer=...)`` picks the task's loss and accuracy; ``fit`` runs with a progress bar,
early stopping on the evaluation accuracy and a checkpoint of the best model. Then the script
evaluates, saves a ``.keras`` file, reloads it and predicts, exports a SavedModel and checks that
its serving signature gives the same logits, and writes the canonical checkpoint
(``save_pretrained``) that ``convbert_pt`` and Hugging Face's PyTorch classes load.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "examples" / "data" / "toy_sentiment.tsv"
TRAIN_ROWS = 480
LABELS = {0: "negative", 1: "positive"}
# The SavedModel's logits against the model's: float32 within SERVE_FP32_ATOL; under mixed
# precision the low-precision rule of the test suite's tolerance table (tests/tolerances.py),
# |served - ref32| <= LOWP_FACTOR * |direct - ref32| + LOWP_ATOL[compute dtype], where ref32 is the
# same weights run in float32 and the direct call, at the same precision, sets the bar.
SERVE_FP32_ATOL = 1e-4
LOWP_FACTOR = 2.0
LOWP_ATOL = {"float16": 1e-3, "bfloat16": 1e-2, "float32": 1e-6}


def _tokenizer_candidates() -> list[pathlib.Path]:
    """The shipped demo checkpoint's tokenizer: HF's save_pretrained files of the BERT-uncased vocabulary."""
    from convbert_tools.demo import checkpoint_dir

    return [pathlib.Path(checkpoint_dir())]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help="TSV with columns text, label")
    p.add_argument("--tokenizer", type=pathlib.Path, default=None, help="tokenizer folder (vocab.txt ...)")
    p.add_argument("--init-from", type=pathlib.Path, default=None, help="checkpoint folder to fine-tune")
    p.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/keras_fit"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout of a fresh model")
    p.add_argument("--patience", type=int, default=2, help="early stopping: epochs without a better accuracy")
    p.add_argument("--mixed-precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default="float32")
    p.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training rows (smoke runs)")
    p.add_argument("--max-eval", type=int, default=None, help="use only the first N evaluation rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a progress bar")
    return p.parse_args(argv)


def read_tsv(path: pathlib.Path) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def find_tokenizer(explicit: pathlib.Path | None, init_from: pathlib.Path | None) -> pathlib.Path:
    candidates = [explicit] if explicit else [init_from, *_tokenizer_candidates()]
    for c in candidates:
        if c is not None and (c / "vocab.txt").exists():
            return c
    raise SystemExit(f"no tokenizer found (looked in {', '.join(str(c) for c in candidates if c)}); pass --tokenizer")


def encode(tokenizer, texts: list[str], max_length: int) -> dict:
    """Token ids, attention mask and token types, (N, max_length) int32 each.

    Every row is padded to the same length: the dynamic convolution ignores the attention mask (as
    the reference does), so padding to the longest row of each batch would change the numbers.
    """
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return {k: enc[k].astype("int32") for k in ("input_ids", "attention_mask", "token_type_ids")}


def small_config(vocab_size: int, pad_token_id: int, max_length: int, dropout: float):
    from convbert_common.config import ConvBertConfig

    return ConvBertConfig(
        vocab_size=vocab_size, pad_token_id=pad_token_id, hidden_size=64, embedding_size=32, num_hidden_layers=2,
        num_attention_heads=4, head_ratio=2, intermediate_size=128, conv_kernel_size=9,
        max_position_embeddings=max(64, max_length), hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, num_labels=2, id2label=LABELS, initializer_range=0.02,
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    from convbert_common.tokenizer import ConvBertTokenizerFast
    from convbert_tf import ConvBertForSequenceClassification, optimizers

    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision != "float32":
        keras.mixed_precision.set_global_policy(args.mixed_precision)

    # ------------------------------------------------------------------ data
    tokenizer = ConvBertTokenizerFast.from_pretrained(find_tokenizer(args.tokenizer, args.init_from))
    texts, labels = read_tsv(args.data)
    train_texts, train_labels = texts[:TRAIN_ROWS][: args.max_train], labels[:TRAIN_ROWS][: args.max_train]
    eval_texts, eval_labels = texts[TRAIN_ROWS:][: args.max_eval], labels[TRAIN_ROWS:][: args.max_eval]
    train_x = encode(tokenizer, train_texts, args.max_length)
    eval_x = encode(tokenizer, eval_texts, args.max_length)
    train_y, eval_y = np.asarray(train_labels, "int32"), np.asarray(eval_labels, "int32")
    train_ds = (tf.data.Dataset.from_tensor_slices((train_x, train_y))
                .shuffle(len(train_y), seed=args.seed, reshuffle_each_iteration=True)
                .batch(args.batch_size, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE))
    eval_ds = tf.data.Dataset.from_tensor_slices((eval_x, eval_y)).batch(args.batch_size).prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------ model
    if args.init_from:
        # Another label count than the checkpoint's head: that head is initialised afresh (and reported).
        model = ConvBertForSequenceClassification.from_pretrained(args.init_from, num_labels=2, id2label=LABELS,
                                                                  ignore_mismatched_sizes=True)
    else:
        pad = tokenizer.convert_tokens_to_ids("[PAD]")
        model = ConvBertForSequenceClassification(small_config(len(tokenizer), pad, args.max_length, args.dropout))
    if args.max_length > model.config.max_position_embeddings:
        raise SystemExit(
            f"--max-length {args.max_length} > max_position_embeddings {model.config.max_position_embeddings}"
        )

    steps = max(1, len(train_y) // args.batch_size) * args.epochs
    warmup = max(1, int(args.warmup_ratio * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, warmup_target=args.lr, warmup_steps=warmup, decay_steps=max(1, steps - warmup)
    )
    # Keras' AdamW, each weight's update one compiled kernel on TensorFlow.
    optimizer = optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay, clipnorm=1.0)
    # LayerNorm scales and shifts and biases are not decayed.
    optimizer.exclude_from_weight_decay(var_names=["LayerNorm", "bias"])
    model.compile(optimizer=optimizer, jit_compile=args.jit_compile)  # loss and metrics: the task's defaults

    # ------------------------------------------------------------------ fit
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=args.patience,
                                      restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(out / "best.keras", monitor="val_accuracy", mode="max", save_best_only=True),
    ]
    # shuffle=False: the tf.data pipeline shuffles (Keras cannot shuffle a dataset itself).
    history = model.fit(train_ds, validation_data=eval_ds, epochs=args.epochs, callbacks=callbacks, shuffle=False,
                        verbose=2 if args.no_progress else 1)
    evaluation = model.evaluate(eval_ds, return_dict=True, verbose=0)
    print(f"evaluation: {json.dumps({k: round(float(v), 4) for k, v in evaluation.items()})}")

    # ------------------------------------------------------------------ save, reload, predict
    model.save(out / "model.keras")
    reloaded = keras.saving.load_model(out / "model.keras")
    logits = model.predict(eval_ds, verbose=0)["logits"]
    reloaded_logits = reloaded.predict(eval_ds, verbose=0)["logits"]
    if not np.array_equal(logits, reloaded_logits):
        raise SystemExit("the reloaded .keras model predicts different logits")
    predictions = reloaded_logits.argmax(-1)
    for text, label, pred in list(zip(eval_texts, eval_labels, predictions, strict=True))[:5]:
        print(f"  {LABELS[int(pred)]:>8} (gold {LABELS[label]:>8})  {text}")

    # ------------------------------------------------------------------ serve
    model.export(out / "saved_model", verbose=False)
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    compute_dtype = model.dtype_policy.compute_dtype
    reference = None
    if compute_dtype != "float32":
        # The same weights in float32: the reference of the low-precision rule.
        reference = ConvBertForSequenceClassification(model.config, dtype="float32")
        reference.set_weights(model.get_weights())
    serve_diff, bound = 0.0, SERVE_FP32_ATOL
    plain_diffs = []
    for batch, _ in eval_ds.as_numpy_iterator():
        # Against the model called directly: predict() may run XLA (--jit-compile), whose fusions
        # round differently from the SavedModel's graph under mixed precision.
        direct = np.asarray(model(batch, training=False)["logits"], "float32")
        served_logits = np.asarray(served(**{k: tf.constant(v) for k, v in batch.items()})["logits"], "float32")
        if reference is None:
            serve_diff = max(serve_diff, float(np.abs(served_logits - direct).max()))
        else:
            ref32 = np.asarray(reference(batch, training=False)["logits"], "float32")
            serve_diff = max(serve_diff, float(np.abs(served_logits - ref32).max()))
            plain_diffs.append(float(np.abs(direct - ref32).max()))
    if reference is not None:
        bound = LOWP_FACTOR * max(plain_diffs) + LOWP_ATOL[compute_dtype]
    if serve_diff > bound:
        raise SystemExit(f"the exported SavedModel's logits differ by {serve_diff:.3e} (allowed {bound:.3e})")
    model.save_pretrained(out / "pretrained")

    summary = {
        "epochs_run": len(history.history["loss"]),
        "train_loss": [round(float(v), 4) for v in history.history["loss"]],
        "val_accuracy": [round(float(v), 4) for v in history.history["val_accuracy"]],
        "eval_accuracy": float(evaluation["accuracy"]),
        "eval_loss": float(evaluation["loss"]),
        "prediction_accuracy": float((predictions == eval_y).mean()),
        "saved_model_max_abs_diff": serve_diff,
        "saved_model_bound": bound,
        "output_dir": str(out),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
