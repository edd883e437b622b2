"""Derive the injection guard's semantic forbidden-topic threshold from benign requests only.

The instructions check (``_instructions.semantic_match``) flags a user message whose sentence is
close in meaning to a prohibiting sentence of the agent's instructions. Its threshold is the
99th percentile of that similarity over *benign* requests, the BIPIA *train* e-mail questions
and text tasks, each paired with every distinct system prompt of ``prompt_injection.json``: the
check alone then flags about 1% of ordinary requests. No attack is read here::

    .venv/bin/python bench/calibrate_instructions.py

Paste the printed value into ``SEMANTIC_THRESHOLD`` when the word vectors or the prohibition
parser change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.governance.guards import _word_vectors as word_vectors  # noqa: E402
from bastion.governance.guards._eval import load_attacks, load_questions  # noqa: E402
from bastion.governance.guards._instructions import (  # noqa: E402
    _SENTENCE,
    SEMANTIC_THRESHOLD,
    _content,
    _forbidden_vectors,
)

DATA = ROOT.parent / "shared" / "data"
QUANTILE = 0.99


def best_similarity(text: str, instructions: str) -> float:
    topics = _forbidden_vectors(instructions)
    best = 0.0
    for m in _SENTENCE.finditer(text):
        v = word_vectors.vector(_content(m.group()))
        if v is not None and topics:
            best = max(best, max(float(v @ t) for t in topics))
    return best


def main() -> int:
    rows = json.loads(
        (DATA / "purplellama-cyberseceval" / "prompt_injection.json").read_text(encoding="utf-8")
    )
    prompts = sorted({str(r["test_case_prompt"]) for r in rows})
    benign = load_questions("email", "train", DATA) + load_attacks("email", "train", DATA)
    scores = sorted(best_similarity(b, p) for b in benign for p in prompts)
    value = scores[min(len(scores) - 1, int(QUANTILE * len(scores)))]
    print(f"{len(benign)} benign requests x {len(prompts)} system prompts = {len(scores)} pairs")
    print(f"{QUANTILE:.0%} quantile: {value:.3f} (SEMANTIC_THRESHOLD now {SEMANTIC_THRESHOLD})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
