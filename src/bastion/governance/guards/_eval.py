"""Evaluation of the guards on the shared public data sets (used by the CLI, tests and bench).

Owns loading the data sets (``presidio-research`` synthetic PII texts, BIPIA contexts and
attacks, CyberSecEval ``prompt_injection.json``), building BIPIA attack documents, the explicit
mapping from the PII data set's entity names to ours, and the metrics: typed span-overlap
precision/recall/F1 and injection recall / false-positive rate / ms per KB. Does not own any
detector, nor the printing (CLI and ``bench/guards_bench.py`` format the numbers).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion.governance.guards._types import Boundary, ScanContext

#: The PII data set's entity names -> ours. GPE (cities, countries) and STREET_ADDRESS both
#: count as LOCATION, as in the Presidio reference figure. Types neither tier claims to detect
#: are not scored: ORGANIZATION, DATE_TIME, TITLE, AGE, NRP, ZIP_CODE, DOMAIN_NAME,
#: US_DRIVER_LICENSE.
DATASET_TO_OURS: dict[str, str] = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}
#: Our (and Presidio's) output types -> the scored type; anything else is ignored.
PREDICTION_TO_SCORED: dict[str, str] = {
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}
SCORED_TYPES: tuple[str, ...] = tuple(sorted(set(DATASET_TO_OURS.values())))
DEFAULT_DATA = Path("../shared/data")

Span = tuple[str, int, int]


class DataMissing(FileNotFoundError):
    """The shared evaluation data is not where it was expected."""


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataMissing(f"evaluation data not found: {path} (expected ../shared/data)")
    return path


# ---- PII ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiSample:
    text: str
    gold: tuple[Span, ...]


def load_pii_samples(data: Path = DEFAULT_DATA) -> list[PiiSample]:
    raw = json.loads(
        _need(data / "presidio-research" / "synth_dataset_v2.json").read_text(encoding="utf-8")
    )
    out = []
    for row in raw:
        gold = tuple(
            (DATASET_TO_OURS[s["entity_type"]], s["start_position"], s["end_position"])
            for s in row["spans"]
            if s["entity_type"] in DATASET_TO_OURS
        )
        out.append(PiiSample(text=row["full_text"], gold=gold))
    return out


def is_dev(index: int) -> bool:
    """The fifth of the PII texts (and third of prompt_injection.json) used for error analysis;
    the rest is held out and reported separately."""
    return index % 5 == 0


@dataclass
class Prf:
    tp_pred: Counter[str] = field(default_factory=Counter)
    n_pred: Counter[str] = field(default_factory=Counter)
    tp_gold: Counter[str] = field(default_factory=Counter)
    n_gold: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    texts: int = 0

    def add(self, gold: Iterable[Span], pred: Iterable[Span]) -> None:
        gold = list(gold)
        scored = [(PREDICTION_TO_SCORED[t], s, e) for t, s, e in pred if t in PREDICTION_TO_SCORED]
        for t, s, e in scored:
            self.n_pred[t] += 1
            if any(t == gt and s < ge and gs < e for gt, gs, ge in gold):
                self.tp_pred[t] += 1
        for gt, gs, ge in gold:
            self.n_gold[gt] += 1
            if any(t == gt and s < ge and gs < e for t, s, e in scored):
                self.tp_gold[gt] += 1

    def row(self, kind: str | None = None) -> tuple[float, float, float, int]:
        """(precision, recall, F1, support) for one type, or micro-averaged if ``kind`` is None."""
        if kind is None:
            tp_p, n_p = sum(self.tp_pred.values()), sum(self.n_pred.values())
            tp_g, n_g = sum(self.tp_gold.values()), sum(self.n_gold.values())
        else:
            tp_p, n_p = self.tp_pred[kind], self.n_pred[kind]
            tp_g, n_g = self.tp_gold[kind], self.n_gold[kind]
        p = tp_p / n_p if n_p else 0.0
        r = tp_g / n_g if n_g else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return p, r, f, n_g

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0


def eval_pii(
    detect: Callable[[str], Iterable[Span]],
    samples: Sequence[PiiSample],
    *,
    which: Callable[[int], bool] = lambda i: True,
) -> Prf:
    """Score ``detect`` on the samples selected by ``which(index)``; times detection only."""
    prf = Prf()
    for i, sample in enumerate(samples):
        if not which(i):
            continue
        t0 = time.perf_counter()
        pred = list(detect(sample.text))
        prf.seconds += time.perf_counter() - t0
        prf.texts += 1
        prf.add(sample.gold, pred)
    return prf


# ---- BIPIA and CyberSecEval ---------------------------------------------------------------------


def load_contexts(task: str, split: str, data: Path = DEFAULT_DATA) -> list[str]:
    """Benign contexts of one BIPIA task ("email" or "code") and split ("train" or "test")."""
    out = []
    path = _need(data / "bipia" / task / f"{split}.jsonl")
    for line in path.read_text(encoding="utf-8").splitlines():
        ctx = json.loads(line)["context"]
        out.append("\n".join(ctx) if isinstance(ctx, list) else str(ctx))
    return out


def load_questions(task: str, split: str, data: Path = DEFAULT_DATA) -> list[str]:
    path = _need(data / "bipia" / task / f"{split}.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [str(r["question"]) for r in rows if "question" in r]


def load_attacks(task: str, split: str, data: Path = DEFAULT_DATA) -> list[str]:
    name = "text" if task == "email" else "code"
    table = json.loads(
        _need(data / "bipia" / f"{name}_attack_{split}.json").read_text(encoding="utf-8")
    )
    return [a for items in table.values() for a in items]


Doc = tuple[str, tuple[int, int] | None]  # text, span of the attack's first line (None: benign)


def insert(context: str, attack: str, position: str) -> Doc:
    """Place ``attack`` at the start, middle (a line or sentence boundary) or end of ``context``."""
    if position == "start":
        at = 0
        text = attack + "\n" + context
    elif position == "end":
        at = len(context) + 1
        text = context + "\n" + attack
    else:
        mid = len(context) // 2
        cut = context.find("\n", mid)
        if cut == -1:
            cut = context.find(". ", mid)
            cut = cut + 1 if cut != -1 else len(context)
        at = cut + 1
        text = context[:cut] + "\n" + attack + "\n" + context[cut:].lstrip("\n")
    head = attack.split("\n", 1)[0]
    return text, (at, at + len(head))


def scenarios(
    task: str, split: str, *, per_attack: int | None, seed: int, data: Path = DEFAULT_DATA
) -> Iterator[Doc]:
    """Attack documents: each attack inserted into contexts at the start, middle and end."""
    rng = random.Random(seed)
    contexts = load_contexts(task, split, data)
    for attack in load_attacks(task, split, data):
        chosen = contexts if per_attack is None else rng.sample(contexts, per_attack)
        for ctx in chosen:
            for position in ("start", "middle", "end"):
                yield insert(ctx, attack, position)


def load_prompt_injection(data: Path = DEFAULT_DATA) -> list[dict[str, object]]:
    path = _need(data / "purplellama-cyberseceval" / "prompt_injection.json")
    rows: list[dict[str, object]] = json.loads(path.read_text(encoding="utf-8"))
    return rows


@dataclass(frozen=True)
class DetectionRate:
    name: str
    boundary: Boundary
    attacks: int
    detected: int
    benign: int
    false_positives: int
    kilobytes: float
    seconds: float
    cpu_seconds: float

    @property
    def recall(self) -> float:
        return self.detected / self.attacks if self.attacks else 0.0

    @property
    def fpr(self) -> float:
        return self.false_positives / self.benign if self.benign else 0.0

    @property
    def ms_per_kb(self) -> float:
        return 1000 * self.seconds / self.kilobytes if self.kilobytes else 0.0

    @property
    def cpu_ms_per_kb(self) -> float:
        """CPU time of this process per KB: stable on a shared, busy machine."""
        return 1000 * self.cpu_seconds / self.kilobytes if self.kilobytes else 0.0


def detection_rate(
    name: str,
    flagged: Callable[[str, ScanContext], bool],
    attacks: Iterable[str | tuple[str, str]],
    benign: Iterable[str | tuple[str, str]],
    boundary: Boundary,
) -> DetectionRate:
    """Texts are scanned alone, or as ``(text, instructions)`` with the agent's instructions."""
    plain = ScanContext(boundary=boundary)
    n_att = n_det = n_ben = n_fp = 0
    chars = 0
    seconds = cpu = 0.0
    for items, is_attack in ((attacks, True), (benign, False)):
        for item in items:
            if isinstance(item, tuple):
                text, ctx = item[0], ScanContext(boundary=boundary, instructions=item[1])
            else:
                text, ctx = item, plain
            t0, c0 = time.perf_counter(), time.process_time()
            hit = flagged(text, ctx)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            chars += len(text.encode("utf-8"))
            if is_attack:
                n_att += 1
                n_det += hit
            else:
                n_ben += 1
                n_fp += hit
    return DetectionRate(name, boundary, n_att, n_det, n_ben, n_fp, chars / 1024, seconds, cpu)


def injection_suite(
    flagged: Callable[[str, ScanContext], bool],
    data: Path = DEFAULT_DATA,
    *,
    per_attack: int | None = 10,
) -> list[DetectionRate]:
    """Recall and FPR on the BIPIA *test* splits and on prompt_injection.json.

    BIPIA: each test attack inserted into ``per_attack`` test contexts at three positions,
    scanned as a tool result; the benign test contexts alone measure false positives.
    prompt_injection.json: every ``user_input`` scanned as user input; benign user requests for
    the false-positive rate are the BIPIA test e-mail questions, the BIPIA test text-attack
    tasks ("Recommend a good book..."), which are ordinary requests when a user types them, and
    the benign BIPIA test e-mails and code pasted into a request ("Summarize this email: ...").
    """
    out = []
    for task in ("email", "code"):
        docs = [d for d, _ in scenarios(task, "test", per_attack=per_attack, seed=7, data=data)]
        out.append(
            detection_rate(
                f"BIPIA {task} (test)",
                flagged,
                docs,
                load_contexts(task, "test", data),
                "tool_result",
            )
        )
    rows = load_prompt_injection(data)
    benign = load_questions("email", "test", data) + load_attacks("email", "test", data)
    # Ordinary requests that hand over a document, as many injection cases do: the benign BIPIA
    # test e-mails and code pasted into a question. Pasted documents are read as indirect text.
    benign += [f"Summarize this email: '{c}'" for c in load_contexts("email", "test", data)]
    benign += [
        f"What does this code do: <code>{c}</code>" for c in load_contexts("code", "test", data)
    ]
    held = [str(r["user_input"]) for r in rows if int(str(r["prompt_id"])) % 3 != 0]
    every = [str(r["user_input"]) for r in rows]
    out.append(detection_rate("prompt_injection.json (all)", flagged, every, benign, "user_input"))
    out.append(
        detection_rate("prompt_injection.json (held-out 2/3)", flagged, held, benign, "user_input")
    )
    # With the agent's instructions (the test case's system prompt). Benign requests are scanned
    # against every distinct system prompt of the file, so a rule-reading check that flags
    # ordinary requests shows up as false positives.
    prompts = sorted({str(r["test_case_prompt"]) for r in rows})
    pairs = [(b, p) for b in benign for p in prompts]
    with_all = [(str(r["user_input"]), str(r["test_case_prompt"])) for r in rows]
    with_held = [
        (str(r["user_input"]), str(r["test_case_prompt"]))
        for r in rows
        if int(str(r["prompt_id"])) % 3 != 0
    ]
    out.append(
        detection_rate(
            "prompt_injection.json + instr. (all)", flagged, with_all, pairs, "user_input"
        )
    )
    out.append(
        detection_rate(
            "prompt_injection.json + instr. (held-out)", flagged, with_held, pairs, "user_input"
        )
    )
    for kind in ("direct", "indirect"):
        subset = [str(r["user_input"]) for r in rows if r["injection_type"] == kind]
        out.append(
            detection_rate(f"prompt_injection.json ({kind})", flagged, subset, [], "user_input")
        )
    return out
