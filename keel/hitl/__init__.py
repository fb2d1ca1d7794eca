"""Human-in-the-loop: approvals that suspend durably, confidence and novelty routing,
sampled review, queues, reviewers and notifications."""

from keel.hitl.policy import Approval, Escalate, Sample

__all__ = ["Approval", "Escalate", "NoveltyDetector", "Sample"]


def __getattr__(name: str) -> object:
    if name == "NoveltyDetector":
        from keel.hitl.novelty import NoveltyDetector

        return NoveltyDetector
    raise AttributeError(f"module 'keel.hitl' has no attribute {name!r}")
