"""The real dialogue files this repository learns from, in the shared data folder.

The team-written extractions (`induction/data/team_extractions.jsonl`) annotate their follow-ups;
the shipped default library (`scripts/build_default_library.sh`), the shipped simulators
(`scripts/build_simulators.sh`) and the benchmarks on real follow-ups are built from them.
`python -m induction.real_dialogues [DATA]` prints them one a line, each as `DATA/<path>` when a
data folder is given, for the build scripts.
"""

from __future__ import annotations

import sys

REAL_DIALOGUES = (
    "oasst1-en100/en_100_tree.jsonl",
    "hh-rlhf-helpful-74/realistic_seed_data.json",
    "realhumaneval-chat/chats.jsonl",
    "simulatorarena-doc/document_creation_annotations_for_benchmarking.json",
)
"""Paths relative to the shared data folder (`../shared/data` from the repository root)."""

ENDING_DIALOGUES = ("simulatorarena-doc/document_creation_annotations_for_benchmarking.json",)
"""The files of `REAL_DIALOGUES` whose users ended their dialogues (and said why): the endings a
simulator learns with `train-simulator --endings`. Every other file's dialogues end where their
source cut them."""


def main(argv: list[str]) -> int:
    """Print the real dialogue files, under a data folder when one is given."""
    prefix = f"{argv[0]}/" if argv else ""
    for path in REAL_DIALOGUES:
        print(prefix + path)  # noqa: T201 - the listing is the output
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
