"""Builders of batch dialogue documents (`ideas-dialogue/1`) and run directories for tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from batch.store import BatchStore
from dialogues.models import (
    BatchInfo,
    Candidate,
    ChatMessage,
    DialogueDocument,
    LibraryInfo,
    Opening,
    Scores,
    SeedRef,
    SelectionSummary,
    StrategyRef,
    Summary,
    TurnRecord,
    Usage,
    Verdict,
)

SEED = [
    {"role": "system", "content": "You are a helpful tutor."},
    {"role": "user", "content": "How do vaccines work?"},
    {"role": "assistant", "content": "They train the immune system with a harmless antigen."},
]

SETTINGS = {
    "model": {"base_url": None, "model": "smollm2", "temperature": 0.7, "max_tokens": 256},
    "strategist": {"temperature": None},
    "simulator": {"temperature": 0.9},
    "critic": {},
    "assistant": {"base_url": "http://gpu:8000/v1", "model": "big-model", "max_tokens": 512},
    "agents": {"strategist": "llm", "simulator": "strategy", "critic": "novelty"},
    "turns": 3,
    "top_k": 8,
    "library": "default",
}


def usage(calls: int = 1, tokens: int = 10, seconds: float = 0.5) -> Usage:
    """One agent's usage as an older writer recorded it (no `cached_tokens`)."""
    return Usage(calls=calls, input_tokens=tokens, output_tokens=tokens, seconds=seconds)


def make_turn(
    index: int,
    instruction: str,
    answer: str,
    *,
    strategy: str | None = "s1",
    candidates: int = 2,
    note: str | None = None,
    rejected: int = 0,
    scored: bool = True,
    critic: bool = True,
    score: float = 0.5,
) -> TurnRecord:
    """One turn record as `graphs.deduction.respond` writes it."""
    scores = (
        Scores(correct=True, coherent=True, depth=4, insight=3, feedback="Good.")
        if scored
        else None
    )
    drafts = [
        Verdict(
            text=f"draft {k} of turn {index}",
            accepted=False,
            reason="too similar to an earlier user message",
            similarity=0.9,
            scores=None,
        )
        for k in range(rejected)
    ]
    drafts.append(
        Verdict(text=instruction, accepted=True, reason="accepted", similarity=0.2, scores=scores)
    )
    return TurnRecord(
        index=index,
        candidates=[
            Candidate(id=f"s{k + 1}", text=f"strategy {k + 1}", score=score, rank=k)
            for k in range(candidates)
        ],
        strategy=StrategyRef(id=strategy, text=f"text of {strategy}") if strategy else None,
        selection=SelectionSummary(method="llm" if strategy else "none", note=note),
        drafts=drafts,
        critic=drafts[-1].model_copy(deep=True) if critic else None,
        instruction=instruction,
        answer=answer,
        usage={"assistant": usage(), "simulator": usage(1 + rejected)}
        | ({"strategist": usage()} if strategy else {}),
    )


def make_doc(
    job: str,
    instructions: list[str],
    answers: list[str] | None = None,
    *,
    seed: list[dict[str, str]] | None = None,
    opening: str | None = None,
    strategies: list[str | None] | None = None,
    status: str = "complete",
    reason: str | None = None,
    **turn_options: Any,
) -> DialogueDocument:
    """A whole dialogue document with the given generated user turns and answers.

    With `opening`, the seed ends with a user message and `opening` is the assistant's answer to it.
    """
    if answers is None:
        answers = [f"Answer to: {t}" for t in instructions]
    strategies = strategies or [f"s{i + 1}" for i in range(len(instructions))]
    seed = seed or (SEED[:2] if opening is not None else SEED)
    messages = [ChatMessage(role=m["role"], content=m["content"]) for m in seed]
    if opening is not None:
        messages.append(ChatMessage(role="assistant", content=opening))
    turns = []
    for i, (instruction, answer) in enumerate(zip(instructions, answers, strict=True)):
        turns.append(make_turn(i + 1, instruction, answer, strategy=strategies[i], **turn_options))
        messages += [
            ChatMessage(role="user", content=instruction),
            ChatMessage(role="assistant", content=answer),
        ]
    seed_index, repeat = (int(p) for p in job.split("."))
    return DialogueDocument(
        format="ideas-dialogue/1",
        status=status,
        reason=reason,
        created_at="2025-01-01T00:00:00+00:00",
        seed=SeedRef(source=f"seeds.jsonl#{seed_index}"),
        messages=messages,
        opening=Opening(answer=opening, usage={"assistant": usage()})
        if opening is not None
        else None,
        turns=turns,
        unfinished_turn=None,
        summary=Summary(turns=len(turns), rejections=0, llm_calls=3 * len(turns)),
        library=LibraryInfo(name="default", version=2),
        settings=copy.deepcopy(SETTINGS),
        batch=BatchInfo(job=job, seed_index=seed_index, repeat=repeat, resumed=False),
    )


MANIFEST = {
    "created_at": "2025-01-01T00:00:00+00:00",
    "seeds": {"path": "seeds.jsonl", "sha256": "ab" * 32, "format": "openai", "count": 3},
    "n": 2,
    "turns": 3,
    "settings": SETTINGS,
    "library": {"name": "default", "version": 2},
    "agents": {
        "strategist": "llm",
        "simulator": "strategy",
        "critic": "novelty",
        "assistant": "llm",
    },
}


def make_run_dir(
    path: Path, documents: list[DialogueDocument], failures: dict[str, str] | None = None
) -> Path:
    """Write a batch run directory holding `documents` (and failed jobs)."""
    store = BatchStore.open(path)
    store.write_manifest(MANIFEST)
    for document in documents:
        store.add_dialogue(document)
    for job, reason in (failures or {}).items():
        store.add_failure(job, reason)
    return path
