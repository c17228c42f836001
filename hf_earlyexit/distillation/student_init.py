"""Ways to build the student before distillation.

* a pretrained student as is (the thesis default: XLM-R Base) -- load it with `from_pretrained`, nothing to do here;
* `student_from_teacher_layers`: a subset of the teacher's layers at the teacher's width (DistilBERT-style);
* `compact_student`: a narrower, shallower student (e.g. 6 layers x 256, as AfroXLMR-Comet) whose embeddings are
  the teacher's projected onto their top principal directions, so the student starts from the teacher's lexicon.
"""

import copy

import torch
from torch import nn

from .capture import encoder_layers, encoder_layout


def student_from_teacher_layers(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """Same class and width as `teacher`, keeping the teacher's (1-based) `layers` in order, plus its embeddings
    and heads. DistilBERT took every other layer: `layers=[2, 4, ..., 24]`.

    The student is a copy of the teacher with its layer list replaced, not the class rebuilt from the config: a
    rebuilt class can differ from the teacher (``XLMRobertaModel`` adds a pooler by default, which a pooler-less
    encoder such as the converted multilingual-e5 has no weights for)."""
    depth = teacher.config.num_hidden_layers
    if not layers or any(not 1 <= layer <= depth for layer in layers):
        raise ValueError(f"layers={layers} must be a non-empty list of teacher layers in 1..{depth}")
    layers_path = encoder_layout(teacher).layers
    teacher_layers = encoder_layers(teacher)
    # Every layer is left out of the copy (the memo maps it to None) and the kept ones are copied one by one, so a
    # 24-layer teacher is never copied whole and a layer kept twice gets two independent copies.
    student = copy.deepcopy(teacher, {id(layer): None for layer in teacher_layers})
    student.base_model.set_submodule(
        layers_path, nn.ModuleList(copy.deepcopy(teacher_layers[layer - 1]) for layer in layers)
    )
    student.config.num_hidden_layers = len(layers)
    return student


def principal_directions(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, components): the row mean and the `rank` top principal directions (width x rank) of `matrix`."""
    matrix = matrix.detach().double()
    mean = matrix.mean(0)
    centered = matrix - mean
    # Eigenvectors of the width x width covariance: cheap even for a 250k-row vocabulary.
    eigenvalues, eigenvectors = torch.linalg.eigh(centered.T @ centered)
    order = eigenvalues.argsort(descending=True)[:rank]
    return mean, eigenvectors[:, order]


def compact_student(
    teacher: nn.Module,
    num_layers: int = 6,
    hidden_size: int = 256,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
) -> nn.Module:
    """A fresh student of the teacher's class, `num_layers` x `hidden_size`, whose word, position and token-type
    embeddings are the teacher's projected onto the top `hidden_size` principal directions of the teacher's word
    embeddings (one shared projection keeps the three in one space; the word table is centred first, the position
    and token-type tables are not, so a summed embedding is the centred sum's projection). The layers start randomly
    initialised."""
    if hidden_size > teacher.config.hidden_size:
        raise ValueError(
            f"hidden_size={hidden_size} exceeds the teacher width {teacher.config.hidden_size}; a compact student "
            "is narrower"
        )
    if hidden_size % num_attention_heads:
        raise ValueError(f"num_attention_heads={num_attention_heads} does not divide hidden_size={hidden_size}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers
    config.hidden_size = hidden_size
    config.num_attention_heads = num_attention_heads
    config.intermediate_size = intermediate_size or 4 * hidden_size
    student = type(teacher)(config)
    source = teacher.base_model.get_submodule(encoder_layout(teacher).embeddings)
    target = student.base_model.get_submodule(encoder_layout(student).embeddings)
    mean, components = principal_directions(source.word_embeddings.weight, hidden_size)
    with torch.no_grad():
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            if hasattr(source, name):
                weight = getattr(source, name).weight.double()
                # Only the word table is centred: the input embedding is the sum of one row of each table, so
                # subtracting the mean from all three would shift every summed embedding by -2·mean·V.
                centre = mean if name == "word_embeddings" else 0.0
                getattr(target, name).weight.copy_(
                    ((weight - centre) @ components).to(target.word_embeddings.weight.dtype)
                )
    student.tie_weights()
    return student
