"""Gather the English prose a machine already has into a pretraining corpus (for the real-run measurement).

Sources, each text once (deduplicated by content): the licence texts in /usr/share/common-licenses,
the packages' /usr/share/doc/*/copyright files, LICENSE / COPYING / README files of the installed
Python packages, the long descriptions in their METADATA, and the docstrings of the Python standard
library (module, class and function docstrings without doctest or indented code lines). Each source
becomes one document: wrapped lines are joined into paragraphs, paragraphs split into sentences,
one sentence per line, documents separated by blank lines (the format ``convbert pretrain
--corpus`` reads). Output: ``OUT/<source>.txt`` files and ``OUT/SOURCES.json`` (counts per source).

    python bench/prose_corpus.py --output /tmp/prose [--max-mb 40]
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import os
import re
import sys
import sysconfig

from convbert_common.pretraining_data import split_sentences

_CODE = re.compile(r"^\s*(>>>|\.\.\.|\$ |[{}\[\]();]+\s*$)")
_RULE = re.compile(r"^\s*[-=*#~_+]{3,}\s*$")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def document(text: str) -> list[str]:
    """Sentences of a text: paragraphs rejoined from wrapped lines, code, rules and indented blocks dropped."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if any(_CODE.match(line) for line in lines) or all(line.startswith(("    ", "\t")) for line in lines if line):
            continue
        joined = " ".join(line.strip() for line in lines if line.strip() and not _RULE.match(line))
        words = joined.split()
        if len(words) < 6 or sum(w.isalpha() for w in words) < 0.6 * len(words):
            continue  # a heading, a table row, a list of names
        sentences.extend(split_sentences(joined))
    return sentences


def _licences() -> list[str]:
    paths = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    return [t for t in (_read(p) for p in paths if os.path.isfile(p)) if t]


def _package_files() -> list[str]:
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    texts = []
    for root in sorted(roots):
        for pattern in ("*.dist-info/LICENSE*", "*.dist-info/licenses/*", "*.dist-info/METADATA", "*/README*",
                        "*/LICENSE*", "*/COPYING*"):
            for path in sorted(glob.glob(os.path.join(root, pattern))):
                text = _read(path) if os.path.isfile(path) else None
                if text and path.endswith("METADATA"):
                    text = text.split("\n\n", 1)[1] if "\n\n" in text else ""  # the description, not the headers
                if text:
                    texts.append(text)
    return texts


def _docstrings() -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    texts = []
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if any(part in path for part in ("/test", "/idlelib/", "/site-packages/", "/lib2to3/")):
            continue
        source = _read(path)
        try:
            tree = ast.parse(source or "")
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    texts.append(doc)
    return texts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True)
    p.add_argument("--max-mb", type=float, default=40.0, help="stop adding text after this many megabytes")
    args = p.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    seen: set[str] = set()
    budget = int(args.max_mb * 2**20)
    report = {}
    for name, gather in (("licences", _licences), ("packages", _package_files), ("stdlib_docstrings", _docstrings)):
        docs = []
        for text in gather():
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            sentences = document(text)
            if len(sentences) >= 2:
                docs.append("\n".join(sentences))
        body = "\n\n".join(docs) + "\n"
        body = body[:budget]
        budget -= len(body)
        with open(os.path.join(args.output, f"{name}.txt"), "w", encoding="utf-8") as fh:
            fh.write(body)
        report[name] = {"documents": len(docs), "bytes": len(body.encode())}
        print(f"{name:20s} {len(docs):6d} documents {len(body.encode()) / 2**20:7.2f} MB")
        if budget <= 0:
            break
    with open(os.path.join(args.output, "SOURCES.json"), "w", encoding="utf-8") as fh:
        json.dump({"python": sys.version.split()[0], "sources": report}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
