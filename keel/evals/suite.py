"""`Suite`: a dataset run through a workflow and scored, in code."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from keel.errors import ConfigError
from keel.evals.dataset import Case, load_dataset
from keel.evals.report import Report, load_baseline, parse_threshold_key
from keel.evals.run import as_scorer
from keel.evals.runner import Approvals, HarnessError, isolated_app, run_cases
from keel.store.evals import EvalCaseResult, EvalResult


def _app_of(workflow: Any) -> Any:
    """The App that registered `workflow` (found in the module that defines it)."""
    name = getattr(workflow, "__keel_workflow__", None)
    if name is None:
        raise ConfigError(
            f"{workflow!r} is not a workflow: pass the function decorated with @app.workflow"
        )
    for value in getattr(workflow, "__globals__", {}).values():
        registry = getattr(value, "registry", None)
        if registry is not None and name in getattr(registry, "workflows", {}):
            return value
    raise ConfigError(
        f"cannot find the App of workflow {name!r} in its module: pass Suite(..., app=app)"
    )


class Suite:
    """A dataset run through a workflow, each case a real run, scored from its journal.

    `thresholds`: the minimum mean per scorer (`"fields"`) or per scorer and tag
    (`"fields[billing]"`). `repeats`: runs per case (pass^k and spread are reported).
    `approvals`: what happens when a run waits for a person: `"approve"` or `"reject"`
    every approval/review (through `app.approvals`), `"leave"` it waiting (scored where
    it stopped), or `async def decide(app, run_info, case)` that decides or signals.

    Example:
        suite = keel.evals.Suite(
            "triage", triage, "examples/data/triage_cases.jsonl",
            scorers=[keel.evals.fields("category"), keel.evals.trajectory(mode="superset")],
            thresholds={"category": 0.85},
        )
        report = suite.run_sync()
    """

    def __init__(
        self,
        name: str,
        workflow: Any,
        dataset: str | Path | Iterable[Any],
        scorers: Sequence[Any],
        thresholds: Mapping[str, float] | None = None,
        repeats: int = 1,
        concurrency: int = 8,
        *,
        approvals: Approvals = "approve",
        app: Any = None,
        timeout: float = 120.0,
    ) -> None:
        if repeats < 1 or concurrency < 1:
            raise ConfigError(f"Suite {name!r}: repeats and concurrency must be at least 1")
        if not callable(approvals) and approvals not in ("approve", "reject", "leave"):
            raise ConfigError(
                f"Suite {name!r}: approvals={approvals!r}; use 'approve', 'reject', 'leave'"
                " or an async function (app, run, case)"
            )
        self.name = name
        self.workflow = workflow
        self.app = app if app is not None else _app_of(workflow)
        self._dataset = dataset if isinstance(dataset, str | Path) else list(dataset)
        self.scorers = [as_scorer(s) for s in scorers]
        names = [s.name for s in self.scorers]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"Suite {name!r}: two scorers are named alike ({', '.join(names)});"
                " give one a name=... of its own"
            )
        self.thresholds = dict(thresholds or {})
        for key, minimum in self.thresholds.items():
            scorer, _ = parse_threshold_key(key)
            if scorer not in names:
                raise ConfigError(
                    f"Suite {name!r}: threshold {key!r} names no scorer"
                    f" (scorers: {', '.join(names)})"
                )
            if not 0.0 <= float(minimum) <= 1.0:
                raise ConfigError(f"Suite {name!r}: threshold {key!r} is {minimum}; use 0..1")
        self.repeats = repeats
        self.concurrency = concurrency
        self.approvals = approvals
        self.timeout = timeout

    def cases(self) -> list[Case]:
        """The dataset's cases (loaded and checked now)."""
        return load_dataset(self._dataset)

    def _check_tags(self, cases: list[Case]) -> None:
        """A threshold on a tag no case has would pass vacuously: most likely a typo."""
        tags = {t for c in cases for t in c.tags}
        for key in self.thresholds:
            _, tag = parse_threshold_key(key)
            if tag is not None and tag not in tags:
                raise ConfigError(
                    f"threshold {key!r} is for tag {tag!r}, which no case has"
                    f" (tags: {', '.join(sorted(tags)) or 'none'})"
                )

    async def run(
        self,
        store: str | None = None,
        *,
        baseline: str | Path | Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> Report:
        """Run every case and score it; check thresholds and compare with `baseline`.

        `store`: where the runs and the results go; None runs on a fresh SQLite store
        in a temp directory, deleted afterwards (only the report remains).
        """
        try:
            cases = self.cases()
            self._check_tags(cases)
            base = (
                load_baseline(baseline, self.name) if isinstance(baseline, str | Path) else baseline
            )
        except ConfigError as exc:
            raise HarnessError(f"suite {self.name!r}: {exc.message}") from None
        tmp = None if store else tempfile.mkdtemp(prefix="keel-eval-")
        url = store or f"sqlite:///{tmp}/eval.db"
        app = isolated_app(self.app, url)
        eval_id = f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        started = time.time()
        try:
            results = await run_cases(
                app,
                self.workflow,
                cases,
                eval_id=eval_id,
                scorers=self.scorers,
                repeats=self.repeats,
                concurrency=self.concurrency,
                approvals=self.approvals,
                timeout=self.timeout,
            )
            report = Report(
                self.name,
                eval_id,
                started,
                time.time(),
                self.repeats,
                [s.name for s in self.scorers],
                results,
                store_url=store,
            )
            report.check(self.thresholds)
            if base is not None:
                report.compare(base, seed=seed)
            await app.store.save_eval(
                EvalResult(
                    eval_id,
                    self.name,
                    started,
                    report.ended_at,
                    report.outcome,
                    {k: v for k, v in report.to_json().items() if k != "results"},
                ),
                [
                    EvalCaseResult(
                        eval_id,
                        r.case.id,
                        r.repeat,
                        r.run_id,
                        r.passed,
                        {k: v.model_dump() for k, v in r.scores.items()},
                        tuple(r.case.tags),
                    )
                    for r in results
                ],
            )
            return report
        finally:
            await app.close()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def run_sync(self, store: str | None = None, **kw: Any) -> Report:
        """`run` from synchronous code (a script, a test)."""
        return asyncio.run(self.run(store, **kw))
