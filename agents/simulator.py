"""User simulator: drafts the next user instruction, seeing the dialogue with roles swapped."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.func import task
from langgraph.types import interrupt
from pydantic import BaseModel

from agents.chat import ChatClient, Scored
from dialogues.ending import END_MARKER, SPECIAL_TAG, EndingRule, is_end_marker
from dialogues.lengths import LengthCues, fewest_words
from dialogues.messages import last_answer, swap_roles, with_request
from dialogues.models import Rerank, Usage
from prompts import render

_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:user|me|question|message)(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE
)


class TurnQuestion(BaseModel):
    """What the graph asks a person playing the user (the value of its `interrupt()`)."""

    ask: Literal["user_turn"] = "user_turn"
    last_answer: str | None = None
    strategy: str | None = None
    """The strategy the strategist chose for this turn."""
    candidates: list[str] = []
    """The strategies it chose from."""
    feedback: str | None = None
    """The critic's feedback on a rejected turn."""
    draft: str | None = None
    """The simulator's proposed turn, taken when the person answers with nothing."""


@dataclass
class Draft:
    """A drafted user instruction."""

    text: str
    usage: Usage = field(default_factory=Usage)
    author: Literal["simulator", "human"] = "simulator"
    """Who wrote it: the simulator model, or a person (`HumanSimulator`)."""
    rerank: Rerank | None = None
    """The drafts it was chosen from, when the simulator wrote several (`StrategySimulator`)."""
    end_probability: float | None = None
    """The simulator's probability of ending here, when it decided by its threshold."""
    guidance: float | None = None
    """The guidance weight the draft was sampled with, when it was guided (`StrategySimulator`)."""
    floor: int | None = None
    """The fewest words the draft was held open for, when a length floor held it."""


class UserSimulator(Protocol):
    """Writes the next user instruction."""

    async def draft(
        self,
        messages: Sequence[BaseMessage],
        strategy: str | None,
        feedback: str | None,
        *,
        candidates: Sequence[str] = (),
    ) -> Draft:
        """Draft an instruction applying `strategy` (if any), revising after `feedback`.

        `candidates` are the strategies the strategist chose from (shown to a person).
        """
        ...


def clean_instruction(text: str, *, whole: bool = False) -> str:
    """Keep the first paragraph, without a speaker label or wrapping quotes.

    Small models often run on past the user's message into an answer of their own; the first
    paragraph is the instruction, and text after its last question mark is dropped. A trained
    simulator (`whole`) learned where real users' turns stop, pasted code and second paragraphs
    included, so its whole reply is kept: cutting it made its turns shorter and more often
    questions than the real users' it learned from. Only a special tag ends it sooner: a turn
    that goes on past its words into the end marker (or a mangled one, `<|endcopyboard|>`) is
    the words; the marker alone stays the marker.
    """
    text = _LABEL.sub("", text.strip())
    if whole and not is_end_marker(text):
        text = SPECIAL_TAG.split(text, maxsplit=1)[0].strip()
    if not whole:
        text = text.split("\n\n", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if "?" in text and not whole:
        text = text[: text.rindex("?") + 1]
    return text


DRAFT_SEED_STRIDE = 1_000_003
"""Draft k of a turn samples with the client's seed plus k times this (draft 0: the seed)."""


@dataclass(frozen=True)
class Sampling:
    """How a turn's drafts are sampled: against what, leaving what unboosted, how long at least."""

    against: list[BaseMessage] | None
    """The guidance contrast (`StrategySimulator._against`); None: no guidance."""
    unboosted: str
    """The strategy, whose words guidance leaves at their plain log-probability."""
    fewest_words: int
    """The turn's length floor (`StrategySimulator.fewest_words`); 0: none."""


class StrategySimulator:
    """Applies the chosen strategy; with no strategy it writes a plain follow-up.

    With `drafts` N > 1, a strategy and at least one other candidate, it writes N drafts and
    keeps the one most specific to its strategy: the largest log-likelihood ratio
    `LR(d) = lp(d | s) - log(mean over the other candidates c of exp(lp(d | c)))`, where
    `lp(d | x)` is the log-probability of draft d as the reply to the same messages with strategy
    x (`ChatClient.score`). The likeliest draft under s can be one that is as likely under any
    strategy (a generic follow-up); the ratio prefers the draft that s, more than the others,
    makes likely. A draft that is the end marker stops the drafting, and the first draft is kept
    as with one draft; so it is where the server cannot score replies (and once it showed that,
    the simulator writes one draft).

    With an `ending` rule (a trained simulator's calibrated one, `training.endings`), whether
    the user ends is decided before drafting: the server scores the end marker as the reply, and
    the draft is the marker when its probability p_end reaches the rule's threshold for the
    dialogue's user turns so far (`dialogues.ending.EndingRule`). Below it, a
    sampled marker is drawn again (with the next seeds, up to `END_REDRAWS` times), so the user
    ends where the simulator finds an ending likeliest, not wherever a sample happened to be the
    marker. A redraft after feedback (an ending the rules refused, a critic's rejection) is
    never an ending by threshold. Where the server cannot score, the sampled draft decides.

    With `guidance` gamma other than 1 and a strategy, each draft is sampled with
    classifier-free guidance (`ChatClient.guided`): every token is drawn by
    `log p(t | no strategy) + gamma * (log p(t | s) - log p(t | no strategy))` among the tokens
    the simulator finds plausible under s, where "no strategy" is the same prompt whose request
    asks for a natural follow-up in place of the strategy (`contrast`). Gamma > 1 strengthens
    what the strategy changes in the reply; the strategy's own words are left unboosted, so the
    reply is not pushed to copy them. Where the server has no guided endpoint, drafts are
    sampled as without guidance.

    With `lengths` (a simulator trained with length cues, `LengthCues`), every prompt of a turn
    (its drafts, their contrast, the reranking and the end score) asks for the same length, drawn
    at the real users' shares from the dialogue so far (and the client's seed), so a turn's
    length is reproducible and guidance does not strengthen it.

    With a `floor` (the real users' length shares, `LengthCues`; the trained simulators' cards
    hold them), each turn draws a length at those shares, as the cue is drawn, and its drafts
    may not end before that length's fewest words (`dialogues.lengths.fewest_words`: 0, 8, 16
    or 32): the server leaves the end-of-generation tokens out until then (`ChatClient.guided`'s
    `min_words`), so the simulator's turns are not shorter than real users' in distribution,
    whatever the simulator learned of where to end. The end marker is whole at any length.
    Drafts without guidance go through the guided endpoint at weight 1 (plain sampling) to
    get the floor; a server without the endpoint samples them without one.
    """

    instructions = "simulator"
    """The template of the system prompt, the same every turn."""

    guides = True
    """Whether drafts are sampled with guidance when `guidance` is not 1."""

    END_REDRAWS = 3
    """At most this many more samples of an empty draft, or the marker below the end threshold."""

    def __init__(
        self,
        chat: ChatClient,
        *,
        trained: bool = False,
        drafts: int = 1,
        ending: EndingRule | None = None,
        guidance: float = 1.0,
        lengths: LengthCues | None = None,
        floor: LengthCues | None = None,
    ) -> None:
        """Draft with `chat`; `trained`: it is a trained simulator, whose whole reply is kept.

        `drafts`: how many drafts to write and rerank (1: one draft, no scoring).
        `ending`: end where p_end reaches this rule (None: where a sampled draft is the marker).
        `guidance`: the weight of the strategy when sampling (1: plain sampling; see the class).
        `lengths`: draw each turn's length cue at these shares (None: no length cue).
        `floor`: draw each turn's fewest words at these shares (None: no floor; see the class).
        """
        if drafts < 1:
            raise ValueError(f"drafts must be at least 1, not {drafts}")
        if guidance < 0:
            raise ValueError(f"guidance must be at least 0, not {guidance}")
        self.chat = chat
        self.trained = trained
        self.drafts = drafts
        self.ending = ending
        self.guidance = guidance
        self.lengths = lengths
        self.floor = floor

    def request(self, strategy: str | None, feedback: str | None, length: str | None = None) -> str:
        """Return this draft's request: strategy to apply, feedback to act on, length cue."""
        return render("simulator_turn", strategy=strategy, feedback=feedback, length=length)

    def contrast(self, feedback: str | None, length: str | None = None) -> str:
        """Return the guided drafts' contrast request: a strategy's request without a strategy.

        It asks for a natural follow-up where the strategy's request names the strategy, and
        keeps the rest (be specific, the feedback, the length), so guidance strengthens the
        strategy alone.
        """
        return render(
            "simulator_turn", strategy=None, feedback=feedback, specific=True, length=length
        )

    def length_for(self, history: Sequence[BaseMessage]) -> str | None:
        """Return the length cue of the turn after `history` (None without `lengths`).

        Drawn from the dialogue so far and the client's seed: every prompt of the turn asks for
        the same length, and a rerun draws it again.
        """
        return None if self.lengths is None else self.lengths.draw(self._turn_key(history))

    def fewest_words(self, history: Sequence[BaseMessage]) -> int:
        """Return the fewest words of the turn after `history` (0 without a `floor`).

        Drawn as `length_for` draws the cue, from the same key: a simulator with both asks for
        the length it holds its drafts to.
        """
        return 0 if self.floor is None else fewest_words(self.floor.draw(self._turn_key(history)))

    def _turn_key(self, history: Sequence[BaseMessage]) -> str:
        """What a turn's length is drawn from: the client's seed and the dialogue so far."""
        seed = getattr(self.chat, "seed", None)
        return "\x1d".join([str(seed), *(str(m.content) for m in history)])

    def messages(
        self,
        history: Sequence[BaseMessage],
        strategy: str | None,
        feedback: str | None,
        length: str | None = None,
    ) -> list[BaseMessage]:
        """Return what a draft sends: instructions, the swapped dialogue, then this draft's request.

        The request (strategy to apply, feedback to act on, length cue) stands below the
        assistant's last answer. The chat client then fits them to its history budget
        (`agents.chat.fit_history`). The simulator trainer builds its inputs with this method,
        so training and run time agree. `length`: the cue (a real follow-up's, in training);
        by default the turn's drawn cue (`length_for`).
        """
        length = length or self.length_for(history)
        return self._prompt(history, self.request(strategy, feedback, length))

    def unconditioned(
        self, history: Sequence[BaseMessage], feedback: str | None, length: str | None = None
    ) -> list[BaseMessage]:
        """Return `messages` with the `contrast` request in place of the strategy's.

        What guided drafts contrast against, and what the simulator trainer's strategy dropout
        trains on (`train-simulator --strategy-dropout`), so that guidance contrasts two
        distributions the simulator has learned. `length`: as for `messages`.
        """
        length = length or self.length_for(history)
        return self._prompt(history, self.contrast(feedback, length))

    def _prompt(self, history: Sequence[BaseMessage], request: str) -> list[BaseMessage]:
        """The instructions, the swapped dialogue, then `request` below the last answer."""
        prompt: list[BaseMessage] = [SystemMessage(content=render(self.instructions))]
        return prompt + with_request(swap_roles(history), request)

    async def draft(
        self,
        messages: Sequence[BaseMessage],
        strategy: str | None,
        feedback: str | None,
        *,
        candidates: Sequence[str] = (),
    ) -> Draft:
        """Draft the next instruction in the user's voice (reranking drafts, see the class)."""
        prompt = self.messages(messages, strategy, feedback)
        decided = await self._decide_ending(messages, prompt) if feedback is None else None
        if decided is not None and decided.text:
            return decided  # the user ends here
        others = list(dict.fromkeys(c for c in candidates if c != strategy))
        draft = await self._drafted(
            messages, prompt, strategy, others, feedback, decided is not None
        )
        if decided is not None:
            draft.usage += decided.usage
            draft.end_probability = decided.end_probability
        return draft

    async def _drafted(
        self,
        messages: Sequence[BaseMessage],
        prompt: list[BaseMessage],
        strategy: str | None,
        others: list[str],
        feedback: str | None,
        avoid_end: bool,
    ) -> Draft:
        """Write one draft, or several reranked; `avoid_end`: below the end threshold."""
        against = self._against(messages, prompt, strategy, feedback)
        sampling = Sampling(against, strategy or "", self.fewest_words(messages))
        if self.drafts < 2 or strategy is None or not others or not self.chat.can_score:
            return await self._write(0, prompt, avoid_end, sampling)
        written: list[Draft] = []
        for k in range(self.drafts):
            written.append(await self._write(k, prompt, avoid_end, sampling))
            if is_end_marker(written[-1].text):
                break
        usage = sum((d.usage for d in written), Usage())
        texts = [d.text for d in written]
        if len(texts) == 1:  # the first draft ends the dialogue: as with one draft
            return written[0]
        if any(is_end_marker(text) for text in texts):
            return replace(written[0], usage=usage, rerank=Rerank(kept=0, drafts=texts))
        ratios, spent = await self._ratios(messages, prompt, strategy, others, feedback, texts)
        usage += spent
        if ratios is None:
            return replace(written[0], usage=usage, rerank=Rerank(kept=0, drafts=texts))
        kept = max(range(len(texts)), key=ratios.__getitem__)  # the first of equals
        rerank = Rerank(kept=kept, drafts=texts, ratios=ratios)
        return replace(written[kept], usage=usage, rerank=rerank)

    async def end_probability(
        self, history: Sequence[BaseMessage], strategy: str | None
    ) -> float | None:
        """Return p_end: the probability that the user's next turn is the end marker.

        It is the probability of the marker's tokens as the reply to exactly what a draft sends
        (the prompt fitted to the history budget); None where the server cannot score replies.
        """
        scored = await self._score_end(self.messages(history, strategy, None))
        return None if scored is None else math.exp(scored.logprob)

    async def _score_end(self, prompt: list[BaseMessage]) -> Scored | None:
        """Score the end marker as the reply to `prompt`, fitted as a draft's is."""
        return await self.chat.score(self.chat.fit(prompt), END_MARKER)

    async def _decide_ending(
        self, history: Sequence[BaseMessage], prompt: list[BaseMessage]
    ) -> Draft | None:
        """Decide by p_end against the threshold whether the user ends here.

        Returns the marker as a draft if it ends, an empty draft (with what scoring cost) if
        not, and None without a threshold or where the server cannot score.
        """
        if self.ending is None or not self.chat.can_score:
            return None
        scored = await self._score_end(prompt)
        if scored is None:
            return None
        p_end = math.exp(scored.logprob)
        user_turns = sum(isinstance(m, HumanMessage) for m in history)
        text = END_MARKER if self.ending.ends(p_end, user_turns) else ""
        return Draft(text, scored.usage, end_probability=p_end)

    def _against(
        self,
        history: Sequence[BaseMessage],
        prompt: list[BaseMessage],
        strategy: str | None,
        feedback: str | None,
    ) -> list[BaseMessage] | None:
        """The guided drafts' contrast: the fitted prompt with the `contrast` request.

        None where drafts are sampled without guidance (gamma 1, no strategy, a simulator that
        never guides, or a server without the guided endpoint). The history is `prompt`'s,
        fitted the same way, so the two differ only in the request's strategy line.
        """
        if not self.guides or self.guidance == 1.0 or strategy is None or not self.chat.can_guide:
            return None
        return self.chat.fit(prompt)[:-1] + self.unconditioned(history, feedback)[-1:]

    async def _write(
        self, k: int, prompt: list[BaseMessage], avoid_end: bool, sampling: Sampling
    ) -> Draft:
        """Write draft `k` (its own seed); redraw it while empty, or the marker (`avoid_end`).

        With `sampling.against` (`_against`), the draft is sampled with guidance away from it,
        leaving the words of `sampling.unboosted` unboosted; with `sampling.fewest_words` it is
        held open until it has them, through the guided endpoint at weight 1 if not guided.
        """
        usage = Usage()
        for redraw in range(self.END_REDRAWS + 1):
            chat = self._chat(k + redraw * self.drafts)
            guided, weight = None, None
            if sampling.against is not None or (sampling.fewest_words and chat.can_guide):
                fitted = chat.fit(prompt)
                weight = self.guidance if sampling.against is not None else 1.0
                guided = await chat.guided(
                    fitted,
                    fitted if sampling.against is None else sampling.against,
                    weight,
                    unboosted=sampling.unboosted,
                    min_words=sampling.fewest_words,
                    whole=(END_MARKER,),
                )
            text, spent = guided or await chat.text(prompt)
            usage += spent
            text = clean_instruction(text, whole=self.trained)
            if text and not (avoid_end and is_end_marker(text)):
                break
        return Draft(
            text,
            usage,
            guidance=weight if guided and weight != 1.0 else None,
            floor=sampling.fewest_words if guided and sampling.fewest_words else None,
        )

    def _chat(self, k: int) -> ChatClient:
        """Return the client of draft `k`: its own sampling seed, so seeded drafts differ."""
        if k == 0 or self.chat.seed is None:
            return self.chat
        return self.chat.seeded(self.chat.seed + k * DRAFT_SEED_STRIDE)

    async def _ratios(
        self,
        history: Sequence[BaseMessage],
        prompt: list[BaseMessage],
        strategy: str,
        others: list[str],
        feedback: str | None,
        texts: list[str],
    ) -> tuple[list[float] | None, Usage]:
        """Return each draft's log-likelihood ratio (None if the server cannot score), and cost.

        Every strategy gets the history the drafts were written after (fitted once, for `s`),
        with its own request in the last message; the drafts are scored one strategy after
        another, so the server reuses the prompt and evaluates each draft alone.
        """
        fitted = self.chat.fit(prompt)
        prompts = {strategy: fitted}
        for other in others:
            prompts[other] = fitted[:-1] + self.messages(history, other, feedback)[-1:]
        usage = Usage()
        logprobs: dict[tuple[str, str], float] = {}
        for text_of, asked in prompts.items():
            for text in dict.fromkeys(texts):
                scored = await self.chat.score(asked, text)
                if scored is None:
                    return None, usage
                usage += scored.usage
                logprobs[text_of, text] = scored.logprob
        ratios = []
        for text in texts:
            against = [logprobs[other, text] for other in others]
            top = max(against)
            mean = top + math.log(sum(math.exp(lp - top) for lp in against) / len(against))
            ratios.append(logprobs[strategy, text] - mean)
        return ratios, usage


class PlainSimulator(StrategySimulator):
    """Ignores any strategy: the plain prompted user simulator (UltraChat/Baize style)."""

    instructions = "simulator_plain"
    guides = False
    """It has no strategy to strengthen, so it never guides, whatever its weight."""

    def request(self, strategy: str | None, feedback: str | None, length: str | None = None) -> str:
        """Return the plain request whatever the strategy."""
        return super().request(None, feedback, length)


@task
async def _propose(
    proposer: UserSimulator,
    messages: Sequence[BaseMessage],
    strategy: str | None,
    feedback: str | None,
) -> dict[str, Any]:
    """Draft a proposal once: a LangGraph task, so a resumed run reuses it instead of redrafting."""
    draft = await proposer.draft(messages, strategy, feedback)
    return {"text": draft.text, "usage": draft.usage.as_dict()}


class HumanSimulator:
    """A person writes the user turn; the run pauses with LangGraph's `interrupt()` to ask.

    The interrupt's value shows the last answer, the strategy and the candidates it was chosen
    from, the critic's feedback on a rejected turn, and `proposer`'s draft, if there is a
    proposer. The run resumes with `Command(resume=TEXT)`: the person's turn, or an empty text
    to accept the draft as it is. The critic still judges the turn. Needs a checkpointer (the
    LangGraph server brings its own; `run.py` uses an in-memory one).
    """

    def __init__(self, proposer: UserSimulator | None = None) -> None:
        """Ask a person, showing `proposer`'s draft when given."""
        self.proposer = proposer

    async def draft(
        self,
        messages: Sequence[BaseMessage],
        strategy: str | None,
        feedback: str | None,
        *,
        candidates: Sequence[str] = (),
    ) -> Draft:
        """Ask a person for the next user turn; an empty reply takes the draft, if any."""
        proposal = None
        if self.proposer is not None:
            proposal = await _propose(self.proposer, messages, strategy, feedback)
        question = TurnQuestion(
            last_answer=last_answer(messages),
            strategy=strategy,
            candidates=list(candidates),
            feedback=feedback,
            draft=proposal["text"] if proposal else None,
        )
        text = ""
        while not text:
            reply = interrupt(question.model_dump())  # JSON, as a server sends it
            text = (reply.strip() if isinstance(reply, str) else "") or (question.draft or "")
        usage = Usage.from_dict(proposal["usage"]) if proposal else Usage()
        return Draft(text, usage, author="human")
