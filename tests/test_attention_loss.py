"""Block-wise attention losses from projections against the map-based implementation they replace.

The references are the trainer's previous path, kept here verbatim: head-mean losses on `head_mean_log_probs` maps
of whole batches, and the relation loss on full (batch, relation_heads, seq, seq) log-softmax maps."""

import math

import pytest
import torch

from hf_earlyexit.distillation.attention_loss import BlockWorkspace, head_mean_attention_loss, relation_attention_loss
from hf_earlyexit.distillation.capture import head_mean_log_probs
from hf_earlyexit.distillation.losses import _row_kl, attention_kl_head_mean, attention_mse_head_mean

S_HEADS, T_HEADS, S_WIDTH, T_WIDTH, RELATION_HEADS = 3, 4, 48, 64, 4


def reference_head_mean(kind, student, teacher, mask):
    loss = {"kl": attention_kl_head_mean, "mse": attention_mse_head_mean}[kind]
    return loss(head_mean_log_probs(*student, S_HEADS, mask), head_mean_log_probs(*teacher, T_HEADS, mask), mask)


def _relation_log_probs(states, relation_heads, mask):
    batch, seq, width = states.shape
    head_dim = width // relation_heads
    split = states.float().view(batch, seq, relation_heads, head_dim).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.log_softmax(-1)


def reference_relation(student, teacher, mask):
    total = sum(
        _row_kl(_relation_log_probs(t, RELATION_HEADS, mask), _relation_log_probs(s, RELATION_HEADS, mask), mask)
        for s, t in zip(student, teacher)
    )
    return total / len(student)


def fused(kind, student, teacher, mask, elements=None):
    if kind == "relation":
        return relation_attention_loss(student, teacher, mask, RELATION_HEADS, elements=elements)
    return head_mean_attention_loss(student, teacher, mask, S_HEADS, T_HEADS, kind, elements=elements)


def reference(kind, student, teacher, mask):
    return (
        reference_relation(student, teacher, mask)
        if kind == "relation"
        else reference_head_mean(kind, student, teacher, mask)
    )


def projections(kind, batch=3, seq=11, seed=0, scale=2.0, dtype=torch.float32):
    """Student and teacher projections with peaked attention (large scale), student ones requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    count = 3 if kind == "relation" else 2
    student = tuple(
        (torch.randn(batch, seq, S_WIDTH, generator=generator) * scale).to(dtype).requires_grad_() for _ in range(count)
    )
    teacher = tuple((torch.randn(batch, seq, T_WIDTH, generator=generator) * scale).to(dtype) for _ in range(count))
    return student, teacher


def padding_mask(batch=3, seq=11):
    mask = torch.ones(batch, seq, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 3:] = False
    return mask


KINDS = ["kl", "mse", "relation"]
# whole batch in one block; one example per block; 2 rows per block (the last block of each example shorter)
BLOCKS = [None, T_HEADS * 11 * 11, T_HEADS * 11 * 2, RELATION_HEADS * 11 * 3]


def _value_and_grads(loss_fn, student):
    value = loss_fn()
    grads = torch.autograd.grad(value, student)
    return value, grads


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("elements", BLOCKS)
@pytest.mark.parametrize("padded", [True, False])
def test_value_and_gradients_equal_the_map_based_losses(kind, elements, padded):
    student, teacher = projections(kind)
    mask = padding_mask() if padded else torch.ones(3, 11, dtype=torch.bool)
    value, grads = _value_and_grads(lambda: fused(kind, student, teacher, mask, elements), student)
    expected, expected_grads = _value_and_grads(lambda: reference(kind, student, teacher, mask), student)
    assert expected.item() > 1e-2  # the maps differ: a loss to compare, and gradients that are not zero
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    for grad, expected_grad in zip(grads, expected_grads):
        assert expected_grad.abs().max() > 1e-4
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5 * expected_grad.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("elements", BLOCKS)
def test_every_gradient_element_is_written(kind, elements, monkeypatch):
    # Gradients and block buffers start uninitialised (torch.empty): with NaN-filled fresh memory, any element the
    # blocks leave unwritten (or read before writing) would show up as NaN.
    empty = torch.empty

    def nan_empty(*args, **kwargs):
        tensor = empty(*args, **kwargs)
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    student, teacher = projections(kind, seed=8)
    mask = padding_mask()
    expected = reference(kind, student, teacher, mask)
    expected_grads = torch.autograd.grad(expected, student)
    monkeypatch.setattr(torch, "empty", nan_empty)
    value = fused(kind, student, teacher, mask, elements)
    grads = torch.autograd.grad(value, student)
    monkeypatch.undo()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5 * expected_grad.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_mask_equals_an_all_true_mask(kind):
    student, teacher = projections(kind, seed=1)
    full = torch.ones(3, 11, dtype=torch.bool)
    torch.testing.assert_close(
        fused(kind, student, teacher, None), reference(kind, student, teacher, full), rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("kind", KINDS)
def test_padding_changes_neither_value_nor_real_gradients(kind):
    student, teacher = projections(kind, seed=2)
    mask = padding_mask()
    extra = 4
    padded_student = tuple(
        torch.cat([x.detach(), torch.randn(3, extra, x.shape[-1]) * 50], 1).requires_grad_() for x in student
    )
    padded_teacher = tuple(torch.cat([x, torch.randn(3, extra, x.shape[-1]) * 50], 1) for x in teacher)
    padded_mask = torch.cat([mask, torch.zeros(3, extra, dtype=torch.bool)], 1)
    value, grads = _value_and_grads(lambda: fused(kind, student, teacher, mask), student)
    padded_value, padded_grads = _value_and_grads(
        lambda: fused(kind, padded_student, padded_teacher, padded_mask, elements=T_HEADS * 15 * 2), padded_student
    )
    torch.testing.assert_close(padded_value, value, rtol=1e-5, atol=0)
    for grad, padded_grad in zip(grads, padded_grads):
        torch.testing.assert_close(padded_grad[:, :11], grad, rtol=1e-5, atol=1e-7)
        assert padded_grad[:, 11:].abs().max() == 0  # padded positions get no gradient


@pytest.mark.parametrize("kind", KINDS)
def test_no_gradient_work_or_state_under_no_grad(kind):
    student, teacher = projections(kind, seed=3)
    with torch.no_grad():
        value = fused(kind, student, teacher, padding_mask())
    assert value.grad_fn is None
    torch.testing.assert_close(value, reference(kind, student, teacher, padding_mask()).detach(), rtol=1e-5, atol=0)


def test_only_the_projections_that_need_a_gradient_get_one():
    student, teacher = projections("kl", seed=4)
    query = student[0].detach()  # e.g. a frozen layer's query
    value = fused("kl", (query, student[1]), teacher, padding_mask())
    (key_grad,) = torch.autograd.grad(value, student[1])
    expected = reference("kl", (query, student[1]), teacher, padding_mask())
    (expected_grad,) = torch.autograd.grad(expected, student[1])
    torch.testing.assert_close(key_grad, expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_inputs_scored_in_float32(kind):
    # bf16 projections (a bf16 teacher, a bf16 student) are upcast before Q.K^T: the value is the float32
    # reference's on the same (rounded) values, and each gradient comes back in its projection's dtype.
    student, teacher = projections(kind, seed=5, scale=20.0, dtype=torch.bfloat16)
    mask = padding_mask()
    value = fused(kind, student, teacher, mask)
    grads = torch.autograd.grad(value, student)
    upcast_student = tuple(x.detach().float().requires_grad_() for x in student)
    expected = reference(kind, upcast_student, tuple(x.float() for x in teacher), mask)
    expected_grads = torch.autograd.grad(expected, upcast_student)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.dtype == torch.bfloat16
        torch.testing.assert_close(grad.float(), expected_grad, rtol=1e-2, atol=1e-2 * expected_grad.abs().max().item())


def test_one_workspace_shared_by_losses_of_different_shapes_gives_their_own_values():
    # A step's pairs share one workspace: a later, larger block (relation: 3 buffers, a longer batch) grows it, and
    # a smaller one after it reads only its own share; every value and gradient equals the loss run alone.
    workspace = BlockWorkspace()
    mask = padding_mask()
    cases = [("kl", 3, 11), ("relation", 3, 11), ("mse", 2, 17), ("kl", 3, 11)]
    for index, (kind, batch, seq) in enumerate(cases):
        student, teacher = projections(kind, batch=batch, seq=seq, seed=10 + index)
        case_mask = mask if seq == 11 else None
        shared = (
            relation_attention_loss(student, teacher, case_mask, RELATION_HEADS, workspace=workspace)
            if kind == "relation"
            else head_mean_attention_loss(student, teacher, case_mask, S_HEADS, T_HEADS, kind, workspace=workspace)
        )
        grads = torch.autograd.grad(shared, student)
        expected = fused(kind, student, teacher, case_mask)
        expected_grads = torch.autograd.grad(expected, student)
        torch.testing.assert_close(shared, expected, rtol=0, atol=0)
        for grad, expected_grad in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_gradient_scales_with_the_upstream_weight():
    student, teacher = projections("kl", seed=6)
    (grad,) = torch.autograd.grad(fused("kl", student, teacher, padding_mask()), student[0])
    (scaled,) = torch.autograd.grad(0.25 * fused("kl", student, teacher, padding_mask()), student[0])
    torch.testing.assert_close(scaled, 0.25 * grad)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, t: head_mean_attention_loss(s, t, None, 3, 4, "js"), "kind 'js' is not supported"),
        (lambda s, t: head_mean_attention_loss(s[:1], t, None, 3, 4), "expects 2 student and teacher projections"),
        (lambda s, t: head_mean_attention_loss(s, (t[0][:, :5], t[1][:, :5]), None, 3, 4), "expected the same"),
        (lambda s, t: relation_attention_loss((*s, s[0]), (*t, t[0]), None, 5), "relation_heads=5 does not divide"),
    ],
)
def test_bad_input_fails_with_one_line(call, message):
    student, teacher = projections("kl", seed=7)
    with pytest.raises(ValueError, match=message):
        call(student, teacher)


# ---- in the trainer: the attention component and the student's gradients, as the previous implementation ----


def _reference_attention_step(trainer, batch):
    """The previous trainer path: teacher head-mean maps (or relation projections) captured under no_grad, and
    each pair's map-based loss on the student's projections, which autograd differentiates."""
    from hf_earlyexit.distillation.capture import EncoderCapture
    from hf_earlyexit.distillation.losses import ATTENTION_LOSSES

    module = trainer.accelerator.unwrap_model(trainer.model)
    student, teacher = module.student, trainer.teacher
    names = ("query", "key", "value") if trainer.args.attention_loss == "relation" else ("query", "key")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    mask = batch["attention_mask"].bool()
    s_layers, t_layers = zip(*trainer.attention_pairs)
    with torch.no_grad(), EncoderCapture(teacher, qkv_layers=t_layers, projections=names) as t_cap:
        teacher.base_model(**inputs)
    with EncoderCapture(student, qkv_layers=s_layers, projections=names) as s_cap:
        student.base_model(**inputs)
    values = []
    for s, t in trainer.attention_pairs:
        s_proj = tuple(s_cap.qkv[s][n] for n in names)
        t_proj = tuple(t_cap.qkv[t][n] for n in names)
        if trainer.args.attention_loss == "relation":
            values.append(ATTENTION_LOSSES["relation"](s_proj, t_proj, mask, trainer.args.relation_heads))
        else:
            s_maps = head_mean_log_probs(*s_proj, student.config.num_attention_heads, mask)
            t_maps = head_mean_log_probs(*t_proj, teacher.config.num_attention_heads, mask)
            values.append(ATTENTION_LOSSES[trainer.args.attention_loss](s_maps, t_maps, mask))
    return torch.stack(values).mean()


@pytest.mark.parametrize("attention_loss", ["kl_head_mean", "mse_head_mean", "relation"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_attention_component_and_gradients_equal_the_previous_path(tmp_path, attention_loss, checkpointing):
    from distill_helpers import mlm_batch, tiny_pair

    from hf_earlyexit.distillation import DistillationArguments, DistillationTrainer

    teacher, student = tiny_pair()
    args = DistillationArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        hidden_loss="none",
        attention_loss=attention_loss,
        relation_heads=4,
        layer_map=[[1, 2], [2, 4]],
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    if checkpointing:
        trainer.model.activation_checkpointing_enable()
    assert student.is_activation_checkpointing == checkpointing
    batch = mlm_batch(4, 10)  # rows padded by 0, 2, 4, 6 positions
    trainer.model.train()
    parameters = [p for p in student.parameters() if p.requires_grad]
    value = trainer.compute_loss(trainer.model, batch)
    grads = torch.autograd.grad(value, parameters, allow_unused=True)
    expected = _reference_attention_step(trainer, batch)
    expected_grads = torch.autograd.grad(expected, parameters, allow_unused=True)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    largest = max(g.abs().max().item() for g in expected_grads if g is not None)
    compared = 0
    for grad, expected_grad in zip(grads, expected_grads):
        if expected_grad is None:  # parameters above the last mapped layer's Q/K
            assert grad is None or grad.abs().max() == 0
            continue
        # Key biases shift every score of a row equally, so their true gradient is 0 (1e-10 of rounding here):
        # hence an absolute tolerance relative to the largest gradient.
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6 * largest)
        compared += expected_grad.abs().max().item() > 1e-3 * largest
    assert compared > 10  # embeddings and every layer's attention weights below the mapped projections
