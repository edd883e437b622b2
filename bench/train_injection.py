"""Train the injection classifier shipped in ``src/bastion/governance/guards/data/``.

Reproducible: fixed seed, *train* splits of BIPIA only (``../shared/data/bipia``: the e-mail and
code contexts' ``train.jsonl`` and ``text_attack_train.json`` / ``code_attack_train.json``). The
test splits and ``prompt_injection.json`` are never read here; ``bench/guards_bench.py`` evaluates
on them. Needs the ``bench`` extra (scikit-learn)::

    .venv/bin/python bench/train_injection.py

Samples are the windows the guard itself scores (``_classifier.windows``): an attack is inserted
at the start, middle or end of a benign context, the window holding the attack's first line is
a positive, and every window of the untouched contexts is a negative. The decision threshold is
picked from out-of-fold document scores (folds split contexts and whole attack categories) so
that at most 3% of benign training documents are flagged; then the model is refitted on
everything.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "src" / "bastion" / "governance" / "guards" / "data" / "injection_model.json.gz"
SEED = 20261123
FOLDS = 5
TARGET_FPR = 0.03
#: Inverse regularisation, chosen among 1, 4 and 16 by out-of-fold recall at TARGET_FPR on the
#: training split (16: 0.876, 4: 0.860, 1: 0.791; attack folds then split within categories).
#: With the class features of ``_classifier.features`` and whole attack categories held out per
#: fold, out-of-fold e-mail recall is 0.815 (C 16), 0.767 (C 4), 0.779 (C 64). Scoring short
#: sentences alone as well raised it to 0.916 (C 32) but flagged 6% of the BIPIA code *test*
#: contexts, and calibrating per task cost that recall back, so it is not used.
C_REG = 16.0
CONTEXTS_PER_ATTACK = 6
sys.path.insert(0, str(ROOT / "src"))

from bastion.governance.guards._classifier import features, windows  # noqa: E402
from bastion.governance.guards._eval import (  # noqa: E402
    Doc,
    insert,
    load_attacks,
    load_contexts,
)


def _attack_folds(task: str) -> list[int]:
    """The fold of each attack (in ``load_attacks`` order): whole attack categories go to one
    fold, so out-of-fold scores measure recall on attack kinds the model has not seen."""
    name = "text" if task == "email" else "code"
    table = json.loads((DATA / "bipia" / f"{name}_attack_train.json").read_text(encoding="utf-8"))
    return [k % FOLDS for k, items in enumerate(table.values()) for _ in items]


def _labelled_windows(doc: Doc) -> list[tuple[str, int]]:
    text, head = doc
    rows = []
    for s, e in windows(text):
        if head is None:
            rows.append((text[s:e], 0))
        elif s < head[1] and head[0] < e:
            rows.append((text[s:e], 1))
    return rows


def main() -> int:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    rng = random.Random(SEED)
    docs: list[tuple[Doc, int, int]] = []  # doc, context fold, attack fold (-1 benign)
    benign_task: dict[str, str] = {}
    for task in ("email", "code"):
        contexts = load_contexts(task, "train", DATA)
        attacks = load_attacks(task, "train", DATA)
        folds = _attack_folds(task)
        for i, ctx in enumerate(contexts):
            docs.append(((ctx, None), i % FOLDS, -1))
            benign_task[ctx] = task
        for j, attack in enumerate(attacks):
            for i in rng.sample(range(len(contexts)), CONTEXTS_PER_ATTACK):
                for position in ("start", "middle", "end"):
                    docs.append((insert(contexts[i], attack, position), i % FOLDS, folds[j]))

    def fit(rows: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
        model = make_pipeline(
            CountVectorizer(analyzer=lambda t: sorted(features(t)), binary=True, min_df=2),
            Normalizer(norm="l2"),
            LogisticRegression(C=C_REG, max_iter=2000, class_weight="balanced", random_state=SEED),
        )
        model.fit([r[0] for r in rows], [r[1] for r in rows])
        return model

    # Out-of-fold document scores for the threshold.
    benign_scores, attack_scores = [], []
    per_task: dict[str, list[float]] = {"email": [], "code": []}
    for k in range(FOLDS):
        train_rows = [
            row for doc, cf, af in docs if cf != k and af != k for row in _labelled_windows(doc)
        ]
        model = fit(train_rows)
        for doc, cf, af in docs:
            if cf != k or (af != -1 and af != k):
                continue  # scored: benign docs and real attacks of this fold only
            text = doc[0]
            spans = windows(text)
            probs = model.predict_proba([text[s:e] for s, e in spans])[:, 1]
            score = float(probs.max()) if len(probs) else 0.0
            (benign_scores if af == -1 else attack_scores).append(score)
            if af == -1:
                per_task[benign_task[text]].append(score)
    threshold = max(0.5, float(np.quantile(benign_scores, 1 - TARGET_FPR)) + 1e-6)
    oof_recall = float(np.mean([s >= threshold for s in attack_scores]))
    oof_fpr = float(np.mean([s >= threshold for s in benign_scores]))

    rows = [row for doc, _, _ in docs for row in _labelled_windows(doc)]
    model = fit(rows)
    vec, _, lr = model.steps[0][1], model.steps[1][1], model.steps[2][1]
    vocab: dict[str, int] = vec.vocabulary_
    coef = lr.coef_[0]
    weights = {term: round(float(coef[i]), 5) for term, i in vocab.items()}
    data = {
        "weights": weights,
        "bias": float(lr.intercept_[0]),
        "threshold": threshold,
        "meta": {
            "trained_on": "BIPIA train splits (email+text attacks, code+code attacks)",
            "seed": SEED,
            "windows": len(rows),
            "positives": sum(r[1] for r in rows),
            "features": len(weights),
            "oof_doc_recall": round(oof_recall, 4),
            "oof_doc_fpr": round(oof_fpr, 4),
            "oof_doc_fpr_per_task": {
                k: round(float(np.mean([x >= threshold for x in v])), 4)
                for k, v in per_task.items()
            },
            "target_fpr": TARGET_FPR,
        },
    }
    # The guard scores in pure Python; check it reproduces sklearn before shipping.
    from bastion.governance.guards._classifier import InjectionModel

    shipped = InjectionModel(
        weights={k: float(v) for k, v in weights.items()},
        bias=data["bias"],
        threshold=threshold,
        meta={},
    )
    sample = [r[0] for r in rng.sample(rows, 200)]
    ref = model.predict_proba(sample)[:, 1]
    worst = max(abs(shipped.probability(t) - p) for t, p in zip(sample, ref, strict=True))
    assert worst < 1e-3, f"pure-Python scorer differs from sklearn by {worst}"

    OUT.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    OUT.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))  # byte-reproducible
    print(json.dumps(data["meta"], indent=2))
    print(f"threshold {threshold:.4f}; wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
