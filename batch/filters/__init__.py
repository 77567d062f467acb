"""Dataset filters for a batch's dialogues before export; each is switchable and counted.

`apply_filters` runs, in this order, on typed dialogue documents (`DialogueDocument`); a filter that
changes one returns a changed copy (`model_copy`), the input is never mutated:

1. `truncate_refusals`: the paper's truncation at the first empty or refused answer. A dialogue is
   cut before the generated turn whose answer is empty or opens with a refusal (`is_refusal`); a
   refused opening answer (the assistant's answer to a seed that ended with a user message) is
   removed too and the dialogue keeps no generated turn.
2. `self_repeat`: a dialogue is dropped when two of its generated user turns repeat each other:
   `rapidfuzz.distance.Levenshtein.normalized_similarity` >= the threshold (0.8) on case-folded,
   whitespace-normalised text.
3. `dedup`: near-duplicate user turns across the whole dataset. Every generated user turn is
   embedded; walking the dialogues in store order, each dialogue is cut at its first user turn
   whose cosine similarity to a user turn already kept (in an earlier kept dialogue, or earlier in
   the same one) is >= the threshold (0.95). A dialogue left with fewer than `min_turns` turns is
   dropped later, so its turns do not count as kept (they would otherwise block later copies).
   Blockwise numpy matrix products keep memory bounded (about 40 MB of tiles on top of the
   embeddings) whatever the number of turns.
4. `contamination` (only with benchmark files): each generated user turn is compared with every
   user turn of the benchmark files by `rapidfuzz.fuzz.ratio / 100` (the InDel-normalised
   similarity, python-Levenshtein's `ratio`, the measure the critic's novelty check uses) on
   case-folded, whitespace-normalised text; a score >= the threshold (0.8) is a match. `flag` marks
   the turns in the document, `drop` cuts the dialogue before its first contaminated turn.
5. `min_turns`: dialogues with fewer generated turns than this (2) are dropped; 0 disables it.

A cut keeps the document consistent: `messages` loses the cut turns' messages, `turns` the cut
records, `summary.turns` is the new count and `unfinished_turn` is cleared. What a filter did is
recorded in the document's `filters` field (`FilterInfo`: each cut a `FilterCut`, each flagged
turn a `ContaminationMatch`), dumped as:

```
{"generated_turns": 5,              # turns before any filter
 "truncated_at": 2, "by": "refusal",  # turns kept after the last cut, and which filter made it
 "cuts": [{"by": "refusal", "at": 2, "removed": 3}],
 "opening_removed": false,          # the refused opening answer was removed
 "contaminated_turns": [{"turn": 4, "match": "...", "score": 0.93, "source": "bench.jsonl"}]}
```

`by` is one of `refusal`, `dedup`, `contamination`.

Modules: `config` (`FilterConfig`, `FilterError`), `documents` (cutting a document, its filter
record), `refusal`, `repeats`, `dedup` and `contamination` (one filter each), `report`
(`FilterStats`, `FilterReport`) and `pipeline` (`apply_filters`, with `min_turns`). Import from
`batch.filters`.
"""

from __future__ import annotations

from batch.filters.config import FILTER_NAMES, TOLERANCE, FilterConfig, FilterError
from batch.filters.contamination import (
    BENCHMARK_FIELDS,
    CONTAMINATION_CELLS,
    best_matches,
    load_benchmark,
)
from batch.filters.dedup import DEDUP_BLOCK, DEDUP_TILE, EMBED_CHUNK, dedup_keep_counts, embed_texts
from batch.filters.documents import filter_record, instructions, normalise_text, truncate
from batch.filters.pipeline import apply_filters, turn_count
from batch.filters.refusal import REFUSAL_PATTERNS, REFUSAL_WINDOW, is_refusal
from batch.filters.repeats import repeats_itself
from batch.filters.report import FilterReport, FilterStats

__all__ = [
    "BENCHMARK_FIELDS",
    "CONTAMINATION_CELLS",
    "DEDUP_BLOCK",
    "DEDUP_TILE",
    "EMBED_CHUNK",
    "FILTER_NAMES",
    "FilterConfig",
    "FilterError",
    "FilterReport",
    "FilterStats",
    "REFUSAL_PATTERNS",
    "REFUSAL_WINDOW",
    "TOLERANCE",
    "apply_filters",
    "best_matches",
    "dedup_keep_counts",
    "embed_texts",
    "filter_record",
    "instructions",
    "is_refusal",
    "load_benchmark",
    "normalise_text",
    "repeats_itself",
    "truncate",
    "turn_count",
]
