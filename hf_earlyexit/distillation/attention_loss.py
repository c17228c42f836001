"""Attention losses computed from captured projections, one block of query rows at a time.

The same values as the map-based losses in `losses` (`attention_kl_head_mean`, `attention_mse_head_mean` on
`capture.head_mean_log_probs` maps, and `attention_relation`), but no (seq, seq) map of a whole batch is ever held:
for each block of query rows the student's and the teacher's scores are computed from Q/K (or the relation
projections), in float32 whatever the input dtype (a bf16 teacher's scores included), turned into the loss, and,
when the student's projections need a gradient, into that gradient in closed form in the same pass. The backward
pass then only scales the stored gradient: nothing is recomputed and no softmax row is kept.

Closed forms (w = weight of the query row, P_h = the student's attention of head h over the keys, P = mean_h P_h,
T = the teacher's target, g = dL/dP):
  head-mean KL:  L = w sum_k T_k (log T_k - log P_k),   g_k = -w T_k / P_k
  head-mean MSE: L = w sum_k (P_k - T_k)^2,              g_k = 2 w (P_k - T_k)
  and dL/dscores_h = P_h (g - <P_h, g>) / H.
  relation (one relation head of H, softmax of x x^T / sqrt(d)): L = w/H KL(T || P),  dL/dscores = w/H (P - T).
"""

import math

import torch

_TINY = torch.finfo(torch.float32).tiny
_MIN = torch.finfo(torch.float32).min
# Bytes of block buffers on CPU, split among the float32 buffers a loss keeps (head-mean: two, of 2^21 elements;
# relation: three, of ~2^20.4). Large enough that the per-block accumulation of the keys' gradient (a full
# (seq, width) update whatever the block's rows) stays a small share, small enough that the buffers stay near the
# last-level cache. Measured at 512 tokens (docs/benchmarks.md): head-mean 2^21 ~5 % faster than 2^20, 2^22 slower;
# relation 2^20 faster than 2^21. Shared by a step's pairs (BlockWorkspace), so the step holds it once.
CPU_WORKSPACE_BYTES = 16 << 20


def block_elements(device: torch.device, buffers: int = 3) -> int:
    """Size of one query-row block for a loss keeping `buffers` block buffers: a fixed share of
    `CPU_WORKSPACE_BYTES` on CPU (cache-sized), a share of the free memory on an accelerator."""
    cpu = CPU_WORKSPACE_BYTES // (4 * buffers)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(cpu, min(1 << 28, free // (8 * 4 * buffers)))
    return cpu


def _blocks(batch: int, seq: int, heads: int, elements: int) -> list[tuple[slice, slice]]:
    """(example slice, row slice) blocks covering every query row once; whole examples together when they fit."""
    rows = max(1, elements // (heads * seq))
    if rows >= seq:
        examples = rows // seq
        return [(slice(b, min(b + examples, batch)), slice(0, seq)) for b in range(0, batch, examples)]
    return [(slice(b, b + 1), slice(r, min(r + rows, seq))) for b in range(batch) for r in range(0, seq, rows)]


def _extent(block: slice) -> int:
    return block.stop - block.start


class BlockWorkspace:
    """Float32 block scratch, grown on demand and reused by every block of every loss it is passed to.

    A loss without one makes its own. Passing one workspace to all mapped layer pairs of a step (the trainer does)
    allocates the block buffers once per step: large fresh allocations are served by mmap, and touching their pages
    for the first time costs about as much as a block's softmaxes."""

    def __init__(self):
        self._flat: list[torch.Tensor] = []

    def reserve(self, count: int, size: int, device) -> None:
        for index in range(count):
            if index == len(self._flat):
                self._flat.append(torch.empty(0, device=device))
            if self._flat[index].numel() < size or self._flat[index].device != torch.device(device):
                self._flat[index] = torch.empty(size, device=device)

    def __call__(self, index: int, *shape: int) -> torch.Tensor:
        return self._flat[index][: math.prod(shape)].view(shape)


def _workspace(workspace, count, blocks, heads, seq, device) -> BlockWorkspace:
    workspace = workspace if workspace is not None else BlockWorkspace()
    workspace.reserve(count, max(_extent(examples) * heads * _extent(rows) * seq for examples, rows in blocks), device)
    return workspace


def _heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, seq, width) -> a float32 (batch, heads, seq, head_dim) view (a copy only to upcast)."""
    batch, seq, width = states.shape
    return states.float().view(batch, seq, heads, width // heads).transpose(1, 2)


def _row_weights(mask: torch.Tensor | None, batch: int, seq: int, device) -> torch.Tensor:
    """Weight of each query row in the masked mean over rows (as `losses.masked_mean`)."""
    if mask is None:
        return torch.full((batch, seq), 1.0 / (batch * seq), device=device)
    mask = mask.float()
    return mask / mask.sum().clamp_min(1)


def _padded_keys(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Padded keys, (batch, 1, 1, seq); None when every key is real (masking would change nothing)."""
    if mask is None or bool(mask.all()):
        return None
    return ~mask.bool()[:, None, None, :]


def _block_scores(queries, keys, scale, examples, rows, padded, out) -> torch.Tensor:
    """scale * the block's query rows . every key, (examples, heads, rows, seq), written into `out`.

    Queries and keys are head views of the projections (the head dimension strided by the width): one product per
    example reads them in place, with the scale folded into the product."""
    for index, example in enumerate(range(examples.start, examples.stop)):
        torch.baddbmm(
            out[index], queries[example, :, rows], keys[example].transpose(1, 2), beta=0, alpha=scale, out=out[index]
        )
    if padded is not None:
        out.masked_fill_(padded[examples], _MIN)
    return out


def _accumulate_grads(d_queries, d_keys, d_scores, queries, keys, scale, examples, rows) -> None:
    """For scores = scale * queries[rows] . keys^T: d_keys += scale d_scores^T . queries[rows] and
    d_queries[rows] += scale d_scores . keys, in place in the (batch, seq, width) gradients' head views (every
    key receives a share from every row block).

    The gradients start uninitialised: an example's first row block overwrites its keys' gradient (beta=0) and every
    block overwrites its own rows' query gradient, unless queries and keys are one tensor (the relation loss), whose
    rows were just overwritten with the keys' share."""
    first = rows.start == 0
    shared = d_queries is d_keys
    for index, example in enumerate(range(examples.start, examples.stop)):
        block = d_scores[index]
        d_keys[example].baddbmm_(block.transpose(1, 2), queries[example, :, rows], beta=0 if first else 1, alpha=scale)
        d_queries[example, :, rows].baddbmm_(block, keys[example], beta=1 if shared else 0, alpha=scale)


def _kl_upstream(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, need_grad: bool):
    # As the map-based path: both means clamped at `tiny` before the log (padded keys: tiny vs tiny, adding 0),
    # and no gradient where the student's mean is below it (the clamp's).
    teacher = teacher.clamp_min(_TINY)
    clamped = student.clamp_min(_TINY)
    value = (teacher * (teacher.log() - clamped.log())).sum(-1).mul(weights).sum()
    if not need_grad:
        return value, None
    upstream = torch.where(student >= _TINY, teacher / clamped, 0.0).mul_(-weights[..., None])
    return value, upstream


def _mse_upstream(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, need_grad: bool):
    clamped = student.clamp_min(_TINY)
    difference = clamped - teacher.clamp_min(_TINY)  # padded keys: tiny - tiny = 0
    value = difference.pow(2).sum(-1).mul(weights).sum()
    if not need_grad:
        return value, None
    upstream = torch.where(student >= _TINY, difference, 0.0).mul_(2 * weights[..., None])
    return value, upstream


_HEAD_MEAN_KINDS = {"kl": _kl_upstream, "mse": _mse_upstream}


def _grad_like(states: torch.Tensor, heads: int, need_grad: bool):
    """An uninitialised float32 gradient for `states` (`_accumulate_grads` writes every element), and its head
    view; (None, None) without a gradient."""
    if not need_grad:
        return None, None
    grad = torch.empty(states.shape, device=states.device)
    return grad, _heads(grad, heads)


def _head_mean_pass(s_query, s_key, t_query, t_key, s_heads, t_heads, mask, kind, need_grad, elements, workspace):
    batch, seq, _ = s_query.shape
    s_scale, t_scale = (s_query.shape[-1] // s_heads) ** -0.5, (t_query.shape[-1] // t_heads) ** -0.5
    s_q, s_k = _heads(s_query, s_heads), _heads(s_key, s_heads)
    t_q, t_k = _heads(t_query, t_heads), _heads(t_key, t_heads)
    weights, padded = _row_weights(mask, batch, seq, s_query.device), _padded_keys(mask)
    upstream_of = _HEAD_MEAN_KINDS[kind]
    blocks = _blocks(batch, seq, max(s_heads, t_heads), elements)
    buffers = _workspace(workspace, 2, blocks, max(s_heads, t_heads), seq, s_query.device)
    loss = torch.zeros((), device=s_query.device)
    d_query, d_q = _grad_like(s_query, s_heads, need_grad)
    d_key, d_k = _grad_like(s_key, s_heads, need_grad)
    for examples, rows in blocks:
        shape = (_extent(examples), t_heads, _extent(rows), seq)
        scores = _block_scores(t_q, t_k, t_scale, examples, rows, padded, buffers(0, *shape))
        target = torch.softmax(scores, -1, out=buffers(1, *shape)).mean(1)
        shape = (shape[0], s_heads, shape[2], seq)
        scores = _block_scores(s_q, s_k, s_scale, examples, rows, padded, buffers(0, *shape))
        probs = torch.softmax(scores, -1, out=buffers(1, *shape))
        value, upstream = upstream_of(probs.mean(1), target, weights[examples, rows], need_grad)
        loss += value
        if not need_grad:
            continue
        # dL/dscores_h = P_h (g - <P_h, g>) / H
        d_scores = torch.mul(probs, upstream.div_(s_heads)[:, None], out=buffers(0, *shape))
        d_scores.addcmul_(probs, d_scores.sum(-1, keepdim=True), value=-1)
        _accumulate_grads(d_q, d_k, d_scores, s_q, s_k, s_scale, examples, rows)
    return loss, d_query, d_key


def _relation_pass(s_states, t_states, relation_heads, mask, need_grad, elements, workspace):
    """KL between the teacher's and the student's self-relations of one projection, and dL/d(student states)."""
    batch, seq, _ = s_states.shape
    s_scale = (s_states.shape[-1] // relation_heads) ** -0.5
    t_scale = (t_states.shape[-1] // relation_heads) ** -0.5
    s_x, t_x = _heads(s_states, relation_heads), _heads(t_states, relation_heads)
    # Averaging over relation heads is part of each row's weight.
    weights = _row_weights(mask, batch, seq, s_states.device) / relation_heads
    padded = _padded_keys(mask)
    blocks = _blocks(batch, seq, relation_heads, elements)
    buffers = _workspace(workspace, 3, blocks, relation_heads, seq, s_states.device)
    loss = torch.zeros((), device=s_states.device)
    d_states, d_x = _grad_like(s_states, relation_heads, need_grad)
    for examples, rows in blocks:
        shape = (_extent(examples), relation_heads, _extent(rows), seq)
        scores = _block_scores(s_x, s_x, s_scale, examples, rows, padded, buffers(1, *shape))
        student = torch.log_softmax(scores, -1, out=buffers(2, *shape))
        scores = _block_scores(t_x, t_x, t_scale, examples, rows, padded, buffers(1, *shape))
        teacher = torch.log_softmax(scores, -1, out=buffers(0, *shape))
        teacher_probs = torch.exp(teacher, out=buffers(1, *shape))
        w = weights[examples, rows][:, None, :, None]
        # Padded keys: probability exactly 0 in both, so they add 0 * (finite) = 0.
        loss += teacher.sub_(student).mul_(teacher_probs).sum(-1).mul_(w[..., 0]).sum()
        if not need_grad:
            continue
        d_scores = student.exp_().sub_(teacher_probs).mul_(w)
        # scores = x_rows x^T: the rows' states and every key's state both receive a gradient.
        _accumulate_grads(d_x, d_x, d_scores, s_x, s_x, s_scale, examples, rows)
    return loss, d_states


class _ProjectionAttentionLoss(torch.autograd.Function):
    """Loss from the student's and teacher's projections; the student's gradient is made in forward and kept."""

    @staticmethod
    def forward(ctx, loss_pass, count, grad_enabled, *projections):
        student, teacher = projections[:count], projections[count:]
        # needs_input_grad says True under no_grad too (evaluation), hence the caller's grad mode.
        need_grad = [grad_enabled and ctx.needs_input_grad[3 + i] for i in range(count)]
        with torch.autocast(student[0].device.type, enabled=False):
            loss, grads = loss_pass(student, teacher, any(need_grad))
        grads = [g.to(x.dtype) if g is not None and needed else None for g, x, needed in zip(grads, student, need_grad)]
        ctx.count = count
        ctx.has_grad = [g is not None for g in grads]
        ctx.save_for_backward(*[g for g in grads if g is not None])
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_output if has else None for has in ctx.has_grad]
        return (None, None, None, *grads, *([None] * ctx.count))


def _check_pair(name, student, teacher, count):
    if len(student) != count or len(teacher) != count:
        raise ValueError(
            f"{name} loss expects {count} student and teacher projections, got {len(student)} and {len(teacher)}"
        )
    if student[0].shape[:2] != teacher[0].shape[:2]:
        raise ValueError(
            f"{name} loss: student projections are {tuple(student[0].shape)} but the teacher's are "
            f"{tuple(teacher[0].shape)}; expected the same (batch, seq)"
        )


def head_mean_attention_loss(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None,
    student_heads: int,
    teacher_heads: int,
    kind: str = "kl",
    elements: int | None = None,
    workspace: BlockWorkspace | None = None,
) -> torch.Tensor:
    """Head-mean attention loss ("kl": KL(teacher || student), "mse") from (query, key) projections
    (batch, seq, width) of one mapped layer pair; equal to `attention_kl_head_mean` / `attention_mse_head_mean` of
    the `head_mean_log_probs` maps. `elements` sets the block size (default: `block_elements`); a `workspace` shared
    by the pairs of a step holds the block buffers (default: one of its own)."""
    if kind not in _HEAD_MEAN_KINDS:
        raise ValueError(
            f"head-mean attention loss kind {kind!r} is not supported; expected one of {', '.join(_HEAD_MEAN_KINDS)}"
        )
    _check_pair("head-mean attention", student, teacher, 2)
    elements = elements or block_elements(student[0].device, buffers=2)

    def loss_pass(s, t, need_grad):
        loss, d_query, d_key = _head_mean_pass(
            *s, *t, student_heads, teacher_heads, mask, kind, need_grad, elements, workspace
        )
        return loss, (d_query, d_key)

    return _ProjectionAttentionLoss.apply(loss_pass, 2, torch.is_grad_enabled(), *student, *teacher)


def relation_attention_loss(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    mask: torch.Tensor | None,
    relation_heads: int = 64,
    elements: int | None = None,
    workspace: BlockWorkspace | None = None,
) -> torch.Tensor:
    """MiniLMv2 relation loss (Q-Q, K-K, V-V, averaged) equal to `losses.attention_relation`, in row blocks;
    `elements` and `workspace` as for `head_mean_attention_loss`."""
    _check_pair("relation", student, teacher, len(student))
    for states in (*student, *teacher):
        if states.shape[-1] % relation_heads:
            raise ValueError(f"relation_heads={relation_heads} does not divide the width {states.shape[-1]}")
    elements = elements or block_elements(student[0].device, buffers=3)

    def loss_pass(s, t, need_grad):
        results = [_relation_pass(x, y, relation_heads, mask, need_grad, elements, workspace) for x, y in zip(s, t)]
        loss = sum(value for value, _ in results) / len(results)
        grads = [None if g is None else g.div_(len(results)) for _, g in results]
        return loss, grads

    return _ProjectionAttentionLoss.apply(loss_pass, len(student), torch.is_grad_enabled(), *student, *teacher)


__all__ = ["BlockWorkspace", "block_elements", "head_mean_attention_loss", "relation_attention_loss"]
