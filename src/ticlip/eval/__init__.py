"""Evaluation: dynamic retrieval and classification per time step, static zero-shot tasks, the
evaluation matrix E and its summaries (in-domain, backward and forward transfer).

- :mod:`ticlip.eval.config` — ``EvalConfig`` (the schema) and ``check_eval_config``;
- :mod:`ticlip.eval.tasks` / ``tasklist.yaml`` — the declarative task table (``TaskSpec``);
- :mod:`ticlip.eval.static` — loaders for static data on disk;
- :mod:`ticlip.eval.plan` — which (model, task, eval step) results are pending;
- :mod:`ticlip.eval.cache` — eval sets, static data, preprocessed pixels, one model's features;
- :mod:`ticlip.eval.scorers` — one scorer per task kind (``SCORERS``) and ``score_retrieval``;
- :mod:`ticlip.eval.retrieval` — ``recall_at_k`` and seeded subsampling on features;
- :mod:`ticlip.eval.zeroshot` — classifier building (open_clip) and zero-shot accuracy;
- :mod:`ticlip.eval.runner` — ``evaluate_run`` / ``evaluate_checkpoint``;
- :mod:`ticlip.eval.results` — the result files: eval.jsonl, matrix_<task>.csv, static scores, summary;
- :mod:`ticlip.eval.metrics` — summaries of E (NumPy only: importing it does not load torch).
- :mod:`ticlip.eval.stats` — chance levels, the above-chance test, paired comparisons (NumPy + SciPy).

Heavy names are imported on first use, so ``import ticlip.eval.metrics`` stays light.
"""

from __future__ import annotations

from ticlip.eval.metrics import (
    backward_transfer,
    backward_transfer_normalised,
    forward_transfer,
    forward_transfer_normalised,
    in_domain,
    static_summary,
    transfer_metrics,
)

_LAZY = {
    "recall_at_k": "ticlip.eval.retrieval",
    "subsampled_recall": "ticlip.eval.retrieval",
    "build_classifier": "ticlip.eval.zeroshot",
    "zero_shot_accuracy": "ticlip.eval.zeroshot",
    "EvalConfig": "ticlip.eval.config",
    "check_eval_config": "ticlip.eval.config",
    "evaluate_run": "ticlip.eval.runner",
    "evaluate_checkpoint": "ticlip.eval.runner",
    "score_retrieval": "ticlip.eval.scorers",
    "read_matrix": "ticlip.eval.results",
    "read_results": "ticlip.eval.results",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ticlip.eval' has no attribute {name!r}")


__all__ = [
    "backward_transfer",
    "backward_transfer_normalised",
    "forward_transfer",
    "forward_transfer_normalised",
    "in_domain",
    "static_summary",
    "transfer_metrics",
    *_LAZY,
]
