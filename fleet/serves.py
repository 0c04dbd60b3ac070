"""Whether a serving's template can serve its model's kind (fleet.kinds), with the fields that say so.

A diffusion model on vLLM, embeddings on MindIE, an LLM on SGLang Diffusion: each is refused on the
serving's `template`, before the planner sizes anything (it would size them as the wrong kind).
Per-prompt input limits are checked against what the model reads and the engine takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet import catalog
from fleet.errors import Issue
from fleet.kinds import DESCRIBED, READS, a
from fleet.spec import DeployTemplate, ModelServing

if TYPE_CHECKING:  # fleet.stack calls `check` while it builds these
    from fleet.stack import ModelFacts


def check(model: ModelFacts, s: ModelServing, t: DeployTemplate, path: str) -> list[Issue]:
    """What about a serving its template's engine cannot do with its model's kind (paths under `path`)."""
    engine = catalog.engines()[t.engine]
    if model.kind == "llm" and s.multimodal_limits is None and "llm" in engine.serves:
        return []  # most servings: nothing to look at
    issues: list[Issue] = []
    if model.kind not in engine.serves:
        serving = [
            name for name, e in catalog.engines().items() if model.kind in e.serves and name != "custom"
        ]
        issues.append(
            Issue(
                f"{path}.template",
                f"{model.id} is {a(model.kind)} and template {t.name!r} runs "
                f"{engine.display_name}, which serves {', '.join(DESCRIBED[k] + 's' for k in engine.serves)} "
                f"only; use a template whose engine serves it ({', '.join(serving) or 'custom'})",
            )
        )
    if model.kind == "diffusion":
        dtype = s.dtype if s.dtype != "auto" else None  # SGLang Diffusion takes the pipeline's own
        fields = (("max_model_len", s.max_model_len), ("quantization", s.quantization), ("dtype", dtype))
        for field, value in fields:
            if value is not None:
                issues.append(
                    Issue(
                        f"{path}.{field}",
                        f"{model.id} is {a(model.kind)}, not a language model: it has no {field}; remove it",
                    )
                )
    if s.multimodal_limits:
        if t.engine != "vllm":
            issues.append(
                Issue(
                    f"{path}.multimodal_limits",
                    f"per-prompt limits are vLLM's --limit-mm-per-prompt; {engine.display_name} has "
                    "no such setting: remove multimodal_limits or use a vLLM template",
                )
            )
        unread = [m for m in s.multimodal_limits if not set(READS[m]) & set(model.capabilities)]
        if unread:
            issues.append(
                Issue(
                    f"{path}.multimodal_limits",
                    f"{model.id} does not read {' or '.join(unread)} input (it serves: "
                    f"{', '.join(model.capabilities)}); remove {', '.join(unread)}",
                )
            )
    return issues
