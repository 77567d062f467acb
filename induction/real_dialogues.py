"""The real dialogue files this repository learns from, in the shared data folder.

The team-written extractions (`induction/data/team_extractions.jsonl`) annotate their follow-ups;
the shipped default library (`scripts/build_default_library.sh`), the shipped simulators
(`scripts/build_simulators.sh`) and the benchmarks on real follow-ups are built from them.
`python -m induction.real_dialogues [--endings] [DATA]` prints them one a line, each as
`DATA/<path>` when a data folder is given, for the build scripts; with `--endings` also
`ENDING_DIALOGUES`, for a simulator trained with `train-simulator --endings`.
"""

from __future__ import annotations

import sys

REAL_DIALOGUES = (
    "oasst1-en100/en_100_tree.jsonl",
    "hh-rlhf-helpful-74/realistic_seed_data.json",
    "realhumaneval-chat/chats.jsonl",
)
"""Paths relative to the shared data folder (`../shared/data` from the repository root)."""

ENDING_DIALOGUES = ("simulatorarena-doc/document_creation_annotations_for_benchmarking.json",)
"""Real dialogues whose users ended them (and said why): the endings a simulator learns. Not in
`REAL_DIALOGUES` yet, so the shipped simulators' build does not change until they are retrained
with `--endings`. Every other file's dialogues end where their source cut them."""


def main(argv: list[str]) -> int:
    """Print the real dialogue files (`--endings`: and the ended ones), under a data folder."""
    endings = "--endings" in argv
    argv = [a for a in argv if a != "--endings"]
    prefix = f"{argv[0]}/" if argv else ""
    for path in (*REAL_DIALOGUES, *(ENDING_DIALOGUES if endings else ())):
        print(prefix + path)  # noqa: T201 - the listing is the output
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
