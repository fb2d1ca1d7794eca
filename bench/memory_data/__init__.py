"""A license-clean, generated benchmark of multi-session conversations (see bench/README.md).

`build("dev")` is for tuning and fitting, `build("test")` for reporting: different seeds,
different personas.
"""

from .generate import SEEDS, STOPWORDS, Dataset, Question, Turn, build, content_terms

__all__ = ["SEEDS", "STOPWORDS", "Dataset", "Question", "Turn", "build", "content_terms"]
