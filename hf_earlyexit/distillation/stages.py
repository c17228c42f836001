"""Training stages: which losses are active and which student parameters train, by optimizer step.

Stage lengths are counted in optimizer steps, so the stage of a resumed run follows from its global step alone.
`train` selectors (XtremeDistil-style gradual unfreezing lists them per stage): `all`, `embeddings`, `head`
(everything outside the encoder body: classifier, LM head, exit heads), `top:N` (the N highest layers) and
`layer:N` (one layer, 1-based). Projections always train; they belong to no stage.
"""

from dataclasses import dataclass

LOSS_COMPONENTS = ("hidden", "attention", "logits", "ce")
_STAGE_KEYS = {"name", "losses", "train", "steps"}
_SELECTOR_WORDS = ("all", "embeddings", "head")
_SELECTOR_PREFIXES = ("top:", "layer:")


@dataclass(frozen=True)
class Stage:
    name: str
    losses: tuple[str, ...]
    train: tuple[str, ...] = ("all",)
    steps: int | None = None  # None: until the end of training


def _check_selector(stage_name: str, selector) -> None:
    if isinstance(selector, str):
        if selector in _SELECTOR_WORDS:
            return
        for prefix in _SELECTOR_PREFIXES:
            if selector.startswith(prefix) and selector[len(prefix) :].isdigit() and int(selector[len(prefix) :]) > 0:
                return
    raise ValueError(
        f"stage {stage_name!r} train selector {selector!r} is not valid; expected all, embeddings, head, top:N or "
        "layer:N with N >= 1"
    )


def parse_stages(spec, enabled_losses: tuple[str, ...]) -> list[Stage]:
    """Check a stage list (from `DistillationArguments.stages`) against the enabled losses; None = one stage."""
    if spec is None:
        return [Stage(name="distil", losses=tuple(enabled_losses))]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"stages={spec!r} is not a non-empty list of stage mappings")
    stages = []
    for index, entry in enumerate(spec):
        if not isinstance(entry, dict):
            raise ValueError(f"stage {index} is {entry!r}; expected a mapping with keys {sorted(_STAGE_KEYS)}")
        unknown = set(entry) - _STAGE_KEYS
        if unknown:
            raise ValueError(f"stage {index} has unknown keys {sorted(unknown)}; expected {sorted(_STAGE_KEYS)}")
        name = str(entry.get("name", f"stage{index}"))
        losses = entry.get("losses")
        if isinstance(losses, str):
            losses = [losses]
        if not losses:
            raise ValueError(f"stage {name!r} names no losses; expected a subset of {', '.join(LOSS_COMPONENTS)}")
        for loss in losses:
            if loss not in LOSS_COMPONENTS:
                raise ValueError(
                    f"stage {name!r} uses unknown loss {loss!r}; expected one of {', '.join(LOSS_COMPONENTS)}"
                )
            if loss not in enabled_losses:
                raise ValueError(
                    f"stage {name!r} uses loss {loss!r}, which is switched off (its loss is none or its weight 0)"
                )
        train = entry.get("train", ["all"])
        if isinstance(train, str):
            train = [train]
        for selector in train:
            _check_selector(name, selector)
        steps = entry.get("steps")
        if steps is None and index != len(spec) - 1:
            raise ValueError(f"stage {name!r} has no steps; only the last stage may run until the end")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise ValueError(f"stage {name!r} steps={steps!r} is not a positive integer")
        stages.append(Stage(name=name, losses=tuple(losses), train=tuple(train), steps=steps))
    return stages


def stage_index_at(stages: list[Stage], global_step: int) -> int:
    """Index of the stage that optimizer step `global_step` (0-based) belongs to; the last stage runs on."""
    end = 0
    for index, stage in enumerate(stages):
        if stage.steps is None:
            return index
        end += stage.steps
        if global_step < end:
            return index
    return len(stages) - 1


def check_selectors_fit(stages: list[Stage], num_layers: int) -> None:
    for stage in stages:
        for selector in stage.train:
            if selector.startswith(_SELECTOR_PREFIXES) and int(selector.split(":")[1]) > num_layers:
                raise ValueError(
                    f"stage {stage.name!r} train selector {selector!r} is out of range; the student has {num_layers} layers"
                )


def selected(selectors: tuple[str, ...], layer: int | None, in_embeddings: bool, num_layers: int) -> bool:
    """Whether a student parameter trains under `selectors`; `layer` is its 1-based encoder layer, if any."""
    for selector in selectors:
        if selector == "all":
            return True
        if selector == "embeddings" and in_embeddings:
            return True
        if selector == "head" and layer is None and not in_embeddings:
            return True
        if selector.startswith("top:") and layer is not None and layer > num_layers - int(selector[4:]):
            return True
        if selector.startswith("layer:") and layer is not None and layer == int(selector[6:]):
            return True
    return False
