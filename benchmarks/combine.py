"""Combine or route? Three domain adapters made into one by each of PEFT's combination methods,
against each adapter alone and against `auto` routing, on every domain's held-out questions.

The world is routing.py's (births and jobs, purchases, pets; people never seen in training): a
small T5 pre-trained on all three, one LoRA adapter per domain. Every method combines all three
adapters with `loraqa combine` (PEFT's add_weighted_adapter, default density 0.5 for the pruning
methods), with equal weights of 1/3 (the command's default: an average) and of 1 each (task
arithmetic: every adapter's full update). Printed: EM/F1 per domain, and how much of each
domain's own-adapter F1 a combination keeps.

    .venv/bin/python benchmarks/combine.py --workdir DIR   # reuses routing.py --workdir DIR's base and adapters
    .venv/bin/python benchmarks/combine.py --quick         # small sizes (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import routing

METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
WEIGHTINGS = {"average": 1 / 3, "sum": 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description="PEFT's adapter combinations against single adapters and routing.")
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--workdir", help="keep the files here; a base and adapters it holds are reused")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help="combination methods to measure")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    w = routing.build_domains(args.quick, args.workdir)
    runs, cases, work = w["runs"], w["cases"], w["work"]
    domains = list(runs)

    from loraqa.adapters.combine import Blend, combine
    from loraqa.domain_profile import DomainProfile
    from loraqa.evaluation.metrics import score_one
    from loraqa.inference.answerer import Answerer
    from loraqa.inference.routing import route

    t0 = time.time()
    combined = {}
    for method in args.methods:
        for weighting, weight in WEIGHTINGS.items():
            out = work / f"combined-{method}-{weighting}"
            shutil.rmtree(out, ignore_errors=True)
            combine([str(runs[d]) for d in domains], str(out), Blend(method, [weight] * len(domains)))
            combined[f"{method} ({weighting})"] = out
    combine_s = time.time() - t0

    answerer = Answerer(
        {**{d: str(run) for d, run in runs.items()}, **{f"c{i}": str(p) for i, p in enumerate(combined.values())}},
        dtype="fp32",
    )
    names = {**{d: d for d in domains}, **{label: f"c{i}" for i, label in enumerate(combined)}}

    def scores(adapter_of) -> dict[str, dict[str, float]]:
        """EM and F1 per domain when each question goes to adapter_of(its domain, the row)."""
        answers = answerer.answer(
            [{"question": r["question"], "context": r["context"], "adapter": adapter_of(d, r)} for d, r in cases],
            batch_size=32,
        )
        out = {}
        for domain in domains:
            got = [score_one(a.answer, r["answers"]["text"], "v1") for a, (d, r) in zip(answers, cases) if d == domain]
            out[domain] = {
                "em": 100 * float(np.mean([g[0] for g in got])),
                "f1": 100 * float(np.mean([g[1] for g in got])),
            }
        return out

    # `auto` among the three domain adapters only: routing against one adapter per domain is the
    # alternative to combining that this table compares
    profiles = {d: DomainProfile.read(run / "adapter") for d, run in runs.items()}
    routed = {r["id"]: route(profiles, r["question"], r["context"])[0] for _, r in cases}
    rows = {f"{d} adapter": scores(lambda _d, _r, n=d: n) for d in domains}
    rows["own adapter (given)"] = scores(lambda d, _r: d)
    rows["auto routing"] = scores(lambda _d, r: routed[r["id"]])
    for label in combined:
        rows[label] = scores(lambda _d, _r, n=names[label]: n)
    routing_accuracy = 100 * float(np.mean([routed[r["id"]] == d for d, r in cases]))
    own = rows["own adapter (given)"]

    n = len(cases) // len(domains)
    print(
        f"\n{n} held-out questions per domain ({', '.join(domains)}), people never seen in training; "
        f"{len(combined)} combinations made in {combine_s:.0f} s"
    )
    header = "".join(f"{d + ' EM/F1':>20s}" for d in domains)
    print(f"{'answered by':32s}{header}{'mean F1':>10s}{'kept of own F1':>16s}")
    kept = {}
    for label, by_domain in rows.items():
        mean_f1 = float(np.mean([by_domain[d]["f1"] for d in domains]))
        share = (
            float(np.mean([by_domain[d]["f1"] / own[d]["f1"] for d in domains if own[d]["f1"] > 0])) * 100
            if any(own[d]["f1"] > 0 for d in domains)
            else float("nan")
        )
        kept[label] = share
        cells = "".join(f"{by_domain[d]['em']:9.1f} / {by_domain[d]['f1']:5.1f}    " for d in domains)
        print(f"{label:32s}{cells}{mean_f1:10.1f}{share:15.1f}%")
    best = max(combined, key=lambda label: kept[label])
    print(
        f"\nbest combination: {best}, keeping {kept[best]:.1f}% of each domain's own-adapter F1 on average; "
        f"auto routing keeps {kept['auto routing']:.1f}% (it picks the question's own adapter for "
        f"{routing_accuracy:.0f}% of them)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "questions_per_domain": n,
                    "domains": domains,
                    "scores": rows,
                    "kept_of_own_f1": kept,
                    "best": best,
                    "combine_s": combine_s,
                    "routing_accuracy": routing_accuracy,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
