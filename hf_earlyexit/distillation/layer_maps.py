"""Layer maps as data: which student layer learns from which teacher layer.

Layers are counted as in `output_hidden_states`: 0 is the embedding output, 1..N the transformer layers.
"""

from collections.abc import Callable

LayerPairs = list[tuple[int, int]]


def _uniform(student_layers: int, teacher_layers: int) -> LayerPairs:
    # Student layer i learns from the last teacher layer of its block (Large->Base: 1->2, 2->4, ..., 12->24).
    return [(i, (i * teacher_layers) // student_layers) for i in range(1, student_layers + 1)]


def _uniform_with_embeddings(student_layers: int, teacher_layers: int) -> LayerPairs:
    return [(0, 0), *_uniform(student_layers, teacher_layers)]


def _skip(student_layers: int, teacher_layers: int) -> LayerPairs:
    # The first teacher layer of each block (Large->Base: 1->1, 2->3, ..., 12->23).
    return [(i, ((i - 1) * teacher_layers) // student_layers + 1) for i in range(1, student_layers + 1)]


def _first(student_layers: int, teacher_layers: int) -> LayerPairs:
    return [(i, i) for i in range(1, min(student_layers, teacher_layers) + 1)]


def _top(student_layers: int, teacher_layers: int) -> LayerPairs:
    offset = teacher_layers - student_layers
    return [(i, i + offset) for i in range(1, student_layers + 1) if i + offset >= 1]


def _last(student_layers: int, teacher_layers: int) -> LayerPairs:
    return [(student_layers, teacher_layers)]


LAYER_MAP_PRESETS: dict[str, Callable[[int, int], LayerPairs]] = {
    "uniform": _uniform,
    "uniform_with_embeddings": _uniform_with_embeddings,
    "skip": _skip,
    "first": _first,
    "top": _top,
    "last": _last,
}


def check_layer_map_spec(name: str, spec) -> None:
    """Syntax only (no model needed): a known preset or a non-empty list of [student, teacher] integer pairs."""
    if isinstance(spec, str):
        if spec not in LAYER_MAP_PRESETS:
            raise ValueError(f"{name}={spec!r} is not a known preset; expected one of {', '.join(LAYER_MAP_PRESETS)}")
        return
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"{name}={spec!r} is not a preset name or a non-empty list of [student, teacher] pairs")
    for pair in spec:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
        ):
            raise ValueError(f"{name} entry {pair!r} is not a [student_layer, teacher_layer] pair of integers")


def resolve_layer_map(spec, student_layers: int, teacher_layers: int, name: str = "layer_map") -> LayerPairs:
    """Turn a preset name or explicit list into checked (student, teacher) pairs for two models' depths."""
    check_layer_map_spec(name, spec)
    pairs = LAYER_MAP_PRESETS[spec](student_layers, teacher_layers) if isinstance(spec, str) else spec
    pairs = [(int(s), int(t)) for s, t in pairs]
    for s, t in pairs:
        if not 0 <= s <= student_layers:
            raise ValueError(f"{name} student layer {s} is out of range; the student has layers 0..{student_layers}")
        if not 0 <= t <= teacher_layers:
            raise ValueError(f"{name} teacher layer {t} is out of range; the teacher has layers 0..{teacher_layers}")
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"{name} lists a pair twice: {pairs}")
    return pairs
