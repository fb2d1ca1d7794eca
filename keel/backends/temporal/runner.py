"""Temporal's sandboxed workflow runner, minus a cost per payload.

temporalio encodes and decodes every payload of a workflow task in the serialization
context of the command it belongs to, and asks the workflow instance for that context
once or twice per payload sequence (encode, external store, reference encode, and the
same on decode). In the sandbox each question is an `exec` under the sandbox's importer,
about 0.1 ms of worker CPU: four or more per activity, the largest single part of what
Keel's layer cost over raw temporalio (bench/README.md, "Keel on Temporal"). The answer
is a pure lookup in the instance's own tables (no import, no clock, no user code), so
this runner asks the instance inside the sandbox directly, without the `exec`. Workflow
code still runs through the sandbox exactly as temporalio runs it.

It overrides private names of temporalio 1.35 (pinned in pyproject.toml); where they are
missing (another version) it is temporalio's own runner, unchanged.

Example:
    runner = keel_sandbox_runner(restrictions)
    Worker(client, task_queue=q, workflows=[KeelWorkflow], workflow_runner=runner)
"""

from __future__ import annotations

import functools
from typing import Any

_IN_SANDBOX = "__temporal_in_sandbox"  # where temporalio keeps the sandboxed instance


def keel_sandbox_runner(restrictions: Any) -> Any:
    """A `SandboxedWorkflowRunner` with `restrictions` whose instances answer
    serialization-context questions without entering the sandbox."""
    return _runner_class()(restrictions=restrictions)


@functools.cache
def _runner_class() -> type[Any]:
    import dataclasses

    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    try:
        from temporalio.worker.workflow_sandbox._runner import _Instance
    except ImportError:
        return SandboxedWorkflowRunner
    asked = ("get_serialization_context", "get_external_store_context")
    if not all(hasattr(_Instance, name) for name in asked):
        return SandboxedWorkflowRunner

    class _DirectInstance(_Instance):
        def _inside(self) -> Any:
            return getattr(self, "globals_and_locals", {}).get(_IN_SANDBOX)

        def get_serialization_context(self, command_info: Any) -> Any:
            inside = self._inside()
            if inside is None:  # not created yet (or another layout): temporalio's way
                return super().get_serialization_context(command_info)
            return inside.get_serialization_context(command_info)

        def get_external_store_context(self, command_info: Any) -> Any:
            inside = self._inside()
            if inside is None:
                return super().get_external_store_context(command_info)
            return inside.get_external_store_context(command_info)

    @dataclasses.dataclass(frozen=True)
    class KeelSandboxedRunner(SandboxedWorkflowRunner):
        def create_instance(self, det: Any) -> Any:
            return _DirectInstance(det, self.runner_class, self.restrictions)

    return KeelSandboxedRunner


__all__ = ["keel_sandbox_runner"]
