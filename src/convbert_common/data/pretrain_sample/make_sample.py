"""Regenerate python_reference.txt from the running Python's pydoc_data (see README.md).

Run from the repository root: ``PYTHONPATH=src python src/convbert_common/data/pretrain_sample/make_sample.py``.
Keeps the prose paragraphs of each help topic (headings, indented grammar, code and notes are
left out), one sentence per line, topics separated by a blank line: ELECTRA's corpus format.
"""

from __future__ import annotations

import os
import re
import sys
from pydoc_data.topics import topics

from convbert_common.pretraining_data import split_sentences

# Keep the package data small: stop adding topics past this many bytes.
BUDGET_BYTES = 300_000
_UNDERLINE = re.compile(r"^[*=\-~^]{3,}$")
_MARKUP = re.compile(r"\*\*")


def _join(lines: list[str]) -> str:
    text = ""
    for line in lines:
        # The wrapper broke hyphenated words at the hyphen: "left-" + "hand" is "left-hand".
        if text.endswith("-") and text[-2:-1].isalpha():
            text += line
        else:
            text = f"{text} {line}" if text else line
    return _MARKUP.sub("", text)


def prose_paragraphs(text: str) -> list[str]:
    """Column-0 paragraphs and bullet items ("* " then two-space continuation lines)."""
    paragraphs, current = [], []
    in_bullet = False
    lines = text.split("\n")
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        is_heading = bool(_UNDERLINE.match(following.strip())) or bool(_UNDERLINE.match(line.strip()))
        continues_bullet = in_bullet and line.startswith("  ") and not line.startswith("   ")
        starts_bullet = line.startswith("* ")
        if continues_bullet:
            current.append(line.strip())
            continue
        if current and (starts_bullet or not line.strip() or line[:1].isspace() or is_heading):
            paragraphs.append(_join(current))
            current, in_bullet = [], False
        if starts_bullet:
            current, in_bullet = [line[2:].strip()], True
        elif line.strip() and not line[:1].isspace() and not is_heading:
            current.append(line.strip())
    if current:
        paragraphs.append(_join(current))
    # A paragraph introducing a code block ends with ":"; "See also:" and the like say nothing alone.
    return [p for p in paragraphs if len(p.split()) >= 6]


def main() -> None:
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_reference.txt")
    documents, size = [], 0
    for name in sorted(topics):
        sentences = [s for p in prose_paragraphs(topics[name]) for s in split_sentences(p)]
        if not sentences:
            continue
        document = "\n".join(sentences) + "\n"
        if size + len(document.encode("utf-8")) > BUDGET_BYTES:
            break
        documents.append(document)
        size += len(document.encode("utf-8")) + 1
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(documents))
    sys.stdout.write(f"wrote {out}: {len(documents)} documents, {size} bytes (Python {sys.version.split()[0]})\n")


if __name__ == "__main__":
    main()
