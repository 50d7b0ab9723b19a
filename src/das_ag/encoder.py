"""CLIP's image encoder, rebuilt from its own weights so that the optimisation step runs fast.

Every run spends nearly all its time in one image-encoder forward and the backward to its input,
so the loaded CLIP's vision blocks are swapped for ones that compute the same function with less
work (`speed_up_image_encoder`):

- the patch convolution becomes one matrix product (PatchEmbedding);
- attention on the CPU runs over groups of heads small enough to stay in cache, reading the heads
  where the projection wrote them (`blocked_attention`); on CUDA it is torch's
  scaled-dot-product attention (FlashAttention);
- on the CPU each matmul weight is prepacked into oneDNN's blocked layout, once for the forward
  and once transposed for the input gradient (`FrozenLinear.pack`), and the bf16 residual stream
  is normalised without CLIP's casts to float32 and back;
- QuickGELU, x * sigmoid(1.702 x), becomes SiLU with the 1.702 folded into the neighbouring
  weights, and the 1/sqrt(head width) of attention is folded into the query weights, which turns
  four elementwise passes per block (and their backward) into one;
- the last block computes the class token only, the one token CLIP reads from it.

The folds are exact in real arithmetic; in float32 they move the last bits only. The text encoder
is not touched: it runs once per run.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

QUICK_GELU_SLOPE = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x) = silu(1.702 x) / 1.702

# The float32 scores of one group of heads should stay in the CPU's caches. Measured on a 2-core
# EPYC (1 MiB L2 per core, 32 MiB L3), ViT-L/14 shape (257 tokens), with each group's operands
# copied contiguous: 16 heads (4.2 MiB of scores, one whole image) took 142 us a head forward and
# backward, 8 heads 242, 32 heads 175, 64 heads 203. A layer: 25.6 ms at 16, 30.1 at 8, 32.3 at 4-6.
SCORE_BYTES_PER_GROUP = 9 << 19  # 4.5 MiB


class PatchEmbedding(nn.Module):
    """CLIP's patch convolution (kernel = stride = patch, no padding, no bias) as one matrix product.

    Cutting an image into non-overlapping patches is a reshape, so the convolution is exactly
    patches @ W^T. The reason: in deterministic mode cuDNN picks a backward kernel for this conv
    that took 90% of an H100 bf16 step (191 ms of ~213 ms); a matmul is deterministic and fast on
    every device. `weight` stays the conv's weight, so checkpoints and `CLIP.dtype` still see it.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight  # (width, 3, p, p)
        self.patch = conv.kernel_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch
        if h % p or w % p:
            return nn.functional.conv2d(x, self.weight, stride=p)
        patches = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)
        out = patches @ self.weight.reshape(self.weight.shape[0], -1).t().to(patches.dtype)  # (n, grid*grid, width)
        return out.transpose(1, 2).reshape(n, -1, h // p, w // p)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors, anything wider unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class _BlockedAttention(torch.autograd.Function):
    """Multi-head softmax(q k^T) v read straight from the in-projection's output, a cache-sized
    group of one image's heads at a time.

    torch's CPU FlashAttention tiles over tokens, which for 257 tokens and 64-wide heads leaves it
    far from the matmul peak (26% of a bf16 ViT-L/14 step for ~6% of the FLOPs). Here each group's
    whole score matrix is formed, normalised and used while it is still in cache. The scores are
    computed in float32 even for bf16 inputs, so accuracy matches FlashAttention (rounding scores
    of size ~10 to bf16 would double the output's error); the probabilities are kept in the input
    dtype for the second product and for the backward.

    q, k and v are read from the (tokens, batch, 3 x width) projection, and the output and the
    gradient are written in the same token-major layout, so no pass over the whole batch splits
    the heads out or merges them back, forward or backward. Each group's operands are copied into
    contiguous tensors first: bmm copies a strided operand on every call anyway, and a bf16 bmm
    on strided views ran at half the speed of one on contiguous copies (260 vs 130 us for one
    group's q k^T), while the group's own copies (~20 us) come from and stay in cache.
    """

    @staticmethod
    def forward(ctx, qkv, heads, queries, group):
        q_all, k_all, v_all = _heads(qkv, heads).unbind(2)
        out = qkv.new_empty(queries, qkv.shape[1], qkv.shape[2] // 3)
        o_all = out.unflatten(-1, (heads, -1))
        probs = []
        with torch.autocast(qkv.device.type, enabled=False):
            for image, g in _head_groups(qkv.shape[1], heads, group):
                q, k = [_wide(_group(t, image, g)).contiguous() for t in (q_all[:queries], k_all)]
                v = _group(v_all, image, g).contiguous()
                p = torch.softmax(q @ k.transpose(1, 2), dim=-1).to(qkv.dtype)
                torch.bmm(p, v, out=_group(o_all, image, g))
                probs.append(p)
        ctx.heads, ctx.queries, ctx.group = heads, queries, group
        ctx.save_for_backward(qkv, out, *probs)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, out, *probs = ctx.saved_tensors
        heads, queries = ctx.heads, ctx.queries
        q_all, k_all, v_all = _heads(qkv, heads).unbind(2)
        grad_qkv = torch.empty_like(qkv) if queries == qkv.shape[0] else torch.zeros_like(qkv)
        dq_all, dk_all, dv_all = _heads(grad_qkv, heads).unbind(2)
        do_all, o_all = grad_out.contiguous().unflatten(-1, (heads, -1)), out.unflatten(-1, (heads, -1))
        with torch.autocast(qkv.device.type, enabled=False):
            for p, (image, g) in zip(probs, _head_groups(qkv.shape[1], heads, ctx.group)):
                q, k, v, d_out = [_group(t, image, g).contiguous() for t in (q_all[:queries], k_all, v_all, do_all)]
                o = _group(o_all, image, g)  # read once, elementwise: no copy needed
                torch.bmm(p.transpose(1, 2), d_out, out=_group(dv_all, image, g))
                # The softmax backward needs rowsum(dP * P), which equals rowsum(dO * O): a sum
                # over the head width (64) instead of over all tokens (257).
                row = (_wide(d_out) * _wide(o)).sum(-1, keepdim=True)
                ds = (d_out @ v.transpose(1, 2)).sub_(row).mul_(p)  # dS = P * (dP - rowsum)
                torch.bmm(ds, k, out=_group(dq_all[:queries], image, g))
                torch.bmm(ds.transpose(1, 2), q, out=_group(dk_all, image, g))
        return grad_qkv, None, None, None


def _heads(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """(tokens, batch, 3 x width) -> a (tokens, batch, 3, heads, head width) view."""
    return qkv.unflatten(-1, (3, heads, -1))


def _head_groups(batch: int, heads: int, group: int) -> list[tuple[int, slice]]:
    """(image, heads slice) for each group of at most `group` heads of one image, evenly sized."""
    size = math.ceil(heads / math.ceil(heads / group))
    return [(image, slice(start, start + size)) for image in range(batch) for start in range(0, heads, size)]


def _group(t: torch.Tensor, image: int, heads: slice) -> torch.Tensor:
    """(tokens, batch, heads, head width) -> (group heads, tokens, head width) for one image, a view."""
    return t[:, image, heads].transpose(0, 1)


# torch.compile runs this as it is, between compiled graphs. Traced, it broke the graph at every
# bmm into a strided view until dynamo's recompile limit; with those writes made traceable, the
# per-image, per-group loop unrolled into a graph that took 348 s to compile for ViT-L/14 (25 s
# with this decorator) and ran no faster.
@torch.compiler.disable
def blocked_attention(qkv: torch.Tensor, heads: int, queries: int | None = None, group: int = 0) -> torch.Tensor:
    """Multi-head attention over an in-projection's output (tokens, batch, 3 x width): the first
    `queries` tokens' outputs (all by default), (queries, batch, width). The queries must already
    carry the 1/sqrt(head width). `group`: heads computed together (0: as many as keep their
    scores within SCORE_BYTES_PER_GROUP)."""
    tokens = qkv.shape[0]
    queries = tokens if queries is None else queries
    group = group or max(1, SCORE_BYTES_PER_GROUP // (queries * tokens * 4))
    return _BlockedAttention.apply(qkv.contiguous(), heads, queries, group)


def sdpa_attention(qkv: torch.Tensor, heads: int, queries: int | None = None) -> torch.Tensor:
    """The same as blocked_attention through torch's scaled_dot_product_attention: one of the CPU
    routes (cpu_routes.py), and what a GPU runs."""
    tokens, batch, width3 = qkv.shape
    queries = tokens if queries is None else queries
    q, k, v = qkv.view(tokens, batch, 3, heads, -1).permute(2, 1, 3, 0, 4)  # (batch, heads, tokens, head width)
    out = F.scaled_dot_product_attention(q[:, :, :queries], k, v, scale=1.0)
    return out.permute(2, 0, 1, 3).reshape(queries, batch, width3 // 3)


def attention_by_route(qkv: torch.Tensor, heads: int, queries: int | None, route) -> torch.Tensor:
    """The attention of a CPU step, the way `route` (a cpu_routes.CpuRoute; None: blocked, in
    groups sized by cache) says."""
    if route is None:
        return blocked_attention(qkv, heads, queries)
    if route.attention == "sdpa":
        return sdpa_attention(qkv, heads, queries)
    return blocked_attention(qkv, heads, queries, route.heads)


# The number of rows oneDNN is told to expect when it packs a weight (its blocking hint): one
# ViT-L/14 step feeds 257 tokens x 8 copies = 2056. Packed for 2048, the same weight ran at
# 0.97-0.99 TFLOP/s from 257 to 4112 rows and 0.67 at 8 (the class token alone), against 0.22-0.83
# unpacked.
PACKING_ROWS_HINT = 2048


@functools.cache
def packing_available(dtype: torch.dtype) -> bool:
    """Whether this torch and CPU can run oneDNN linears on prepacked weights of `dtype`."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(16, 16, dtype=dtype), 2)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 16, dtype=dtype), packed, None, "none", [], "")
    except RuntimeError:
        return False
    return bool((y == 16).all())


@dataclass(frozen=True)
class PackedWeight:
    """A frozen weight W in oneDNN's blocked layout: `forward` for x W^T + b, and `backward`, W^T
    packed, for the input gradient g W (the weights never need a gradient)."""

    forward: torch.Tensor
    backward: torch.Tensor
    bias: torch.Tensor
    dtype: torch.dtype


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class _PackedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight: PackedWeight):
        ctx.weight = weight
        return _onednn_linear(x.to(weight.dtype).contiguous(), weight.forward, weight.bias)

    @staticmethod
    def backward(ctx, grad):
        weight = ctx.weight
        return _onednn_linear(grad.to(weight.dtype).contiguous(), weight.backward, None), None


class FrozenLinear(nn.Module):
    """x W^T + b with a frozen W and b: one of an encoder block's four matrix products.

    `pack` makes it run on the CPU through oneDNN with the weight prepacked into oneDNN's blocked
    layout: unpacked, oneDNN reorders the weight on every call. On this 2-core EPYC the packed
    products ran at 0.92-0.99 TFLOP/s in bf16 against 0.77-0.86 unpacked (aten's mm and oneDNN
    alike), and at ~0.45-0.50 TFLOP/s in float32 against ~0.20 for aten's float32 mm, which goes
    through MKL. The results are the same bits as the unpacked bf16 linear under autocast (tested),
    and float32 results differ only by summation order. The bias is added inside the gemm, which
    also saves the copy of the broadcast bias that CPU addmm makes. torch.compile runs the packed
    product as it is, between compiled graphs; unpacked, or on another device, it is F.linear.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        # An existing frozen parameter (a weight nothing was folded into) is shared, not copied.
        self.weight = weight if isinstance(weight, nn.Parameter) else _frozen_parameter(weight)
        self.bias = bias if isinstance(bias, nn.Parameter) else _frozen_parameter(bias)
        self.packed: PackedWeight | None = None

    def pack(self, dtype: torch.dtype) -> None:
        weight = self.weight.detach().to(dtype)
        self.packed = PackedWeight(
            forward=torch.ops.mkldnn._reorder_linear_weight(weight, PACKING_ROWS_HINT),
            backward=torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), PACKING_ROWS_HINT),
            bias=self.bias.detach().to(dtype),
            dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and x.device.type == "cpu":
            return packed_linear(x, self.packed)
        return F.linear(x, self.weight, self.bias)


# torch.compile runs it as it is, between compiled graphs, as it does blocked_attention.
@torch.compiler.disable
def packed_linear(x: torch.Tensor, weight: PackedWeight) -> torch.Tensor:
    return _PackedLinear.apply(x, weight)


def layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """CLIP's LayerNorm without its two casts around a half-precision input.

    CLIP's LayerNorm casts a bf16 input to float32, normalises, and casts back: two copies of the
    residual stream per norm, and two more in the backward. torch's CPU layer_norm takes a bf16
    input with float32 weights directly and computes in float32 inside, so the result has the
    same accuracy (it differs from CLIP's in the rounding of ~1 element in 40,000). On CUDA
    autocast runs layer_norm in float32 itself, as CLIP does; float32 inputs are unchanged.
    """
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _frozen_parameter(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=False)


class EncoderBlock(nn.Module):
    """One of CLIP's vision ResidualAttentionBlocks, same function, built from its weights.

    Tokens are laid out (tokens, batch, width) as in CLIP's transformer. With `class_token_only`
    the block returns the class token alone: after the last block CLIP reads nothing else, so
    the other 256 tokens' queries, attention rows and MLP (5/6 of that block's matmuls) are
    skipped with no change to the result.
    """

    def __init__(self, block: nn.Module, *, class_token_only: bool = False, gelu: bool = False):
        """`gelu`: the MLP's activation is GELU (open_clip's LAION models) rather than CLIP's
        QuickGELU, which is folded into a SiLU."""
        super().__init__()
        attn = block.attn
        width, self.heads = attn.embed_dim, attn.num_heads
        self.class_token_only, self.gelu = class_token_only, gelu
        self.ln_1, self.ln_2 = block.ln_1, block.ln_2
        self.route = None  # how the attention runs on the CPU: None blocked, sized by cache (with_cpu_route sets a copy's)
        query_scale = attn.in_proj_weight.new_ones(3 * width, 1)
        query_scale[:width] = (width // self.heads) ** -0.5  # a power of two for 64-wide heads: exact
        self.in_proj = FrozenLinear(attn.in_proj_weight * query_scale, attn.in_proj_bias * query_scale[:, 0])
        self.out_proj = FrozenLinear(attn.out_proj.weight, attn.out_proj.bias)
        fc, proj = block.mlp.c_fc, block.mlp.c_proj
        slope = 1.0 if gelu else QUICK_GELU_SLOPE
        self.fc = FrozenLinear(fc.weight * slope, fc.bias * slope)
        self.proj = FrozenLinear(proj.weight / slope, proj.bias)

    def _split_heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(tokens, batch, n * width) -> (n, batch, heads, tokens, head width), contiguous."""
        tokens, batch, _ = t.shape
        return t.view(tokens, batch, n, self.heads, -1).permute(2, 1, 3, 0, 4).contiguous()

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        """Attention over the normalised tokens h; for the class token alone if class_token_only."""
        tokens, batch, width = h.shape
        queries = 1 if self.class_token_only else tokens
        if h.device.type == "cpu":
            # In class_token_only the other tokens' queries are computed too (~0.3% of a step), so
            # that the attention reads every head from one projection output, without copies.
            out = attention_by_route(self.in_proj(h), self.heads, queries, self.route)
        else:
            w, b = self.in_proj.weight, self.in_proj.bias
            if self.class_token_only:
                (q,) = self._split_heads(F.linear(h[:1], w[:width], b[:width]), 1)
                k, v = self._split_heads(F.linear(h, w[width:], b[width:]), 2)
            else:
                q, k, v = self._split_heads(self.in_proj(h), 3)  # one matmul for all three
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (batch, heads, queries, head width)
            out = out.permute(2, 0, 1, 3).reshape(queries, batch, width)
        return self.out_proj(out)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)) if self.gelu else F.silu(self.fc(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CLIP hands the blocks its tokens as a (batch, tokens)-ordered tensor permuted to
        # (tokens, batch): every LayerNorm then copied it to contiguous, forward and backward.
        # One copy here, in the first block, and the residual stream stays contiguous after it.
        x = x.contiguous()
        x = (x[:1] if self.class_token_only else x) + self.attention(layer_norm(self.ln_1, x))
        return x + self.mlp(layer_norm(self.ln_2, x))


def speed_up_image_encoder(visual: nn.Module) -> None:
    """Swap a loaded CLIP VisionTransformer's patch conv and blocks for the faster equivalents."""
    conv = visual.conv1
    if conv.kernel_size == conv.stride and conv.padding == (0, 0) and conv.bias is None and conv.groups == 1:
        visual.conv1 = PatchEmbedding(conv)
    blocks = visual.transformer.resblocks
    for i, block in enumerate(blocks):
        if block.attn_mask is None and block.attn.in_proj_weight is not None:  # vision blocks never mask
            # VisionTransformer.forward reads only token 0 of the last block's output.
            blocks[i] = EncoderBlock(block, class_token_only=i == len(blocks) - 1)


def speed_up_open_clip_encoder(visual: nn.Module) -> bool:
    """The same for an open_clip VisionTransformer whose blocks are CLIP's (plain attention, no
    layer scale, GELU or QuickGELU); False, leaving it untouched, for any other architecture.

    open_clip keeps tokens (batch, tokens, width) where CLIP keeps (tokens, batch, width): its
    transformer is replaced by the blocks between two transposes. The last block computes the
    class token alone only where the pooling reads nothing else (pool_type 'tok', no attention
    pooling, no token output)."""
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None or type(visual).__name__ != "VisionTransformer" or getattr(transformer, "grad_checkpointing", False):
        return False
    activations = []
    for block in blocks:
        act = getattr(getattr(block, "mlp", None), "gelu", None)
        plain = (type(block).__name__ == "ResidualAttentionBlock" and not hasattr(block, "ln_1_kv")
                 and isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)
                 and isinstance(block.attn, nn.MultiheadAttention) and block.attn.in_proj_weight is not None
                 and block.attn.in_proj_bias is not None and block.attn.bias_k is None)
        if not plain or not (type(act).__name__ == "QuickGELU" or (isinstance(act, nn.GELU) and act.approximate == "none")):
            return False
        activations.append(isinstance(act, nn.GELU))
    token_only = (getattr(visual, "pool_type", None) == "tok" and getattr(visual, "attn_pool", None) is None
                  and not getattr(visual, "output_tokens", False))
    conv = visual.conv1
    if conv.kernel_size == conv.stride and conv.padding == (0, 0) and conv.bias is None and conv.groups == 1:
        visual.conv1 = PatchEmbedding(conv)
    fast = nn.ModuleList(EncoderBlock(b, class_token_only=token_only and i == len(blocks) - 1, gelu=gelu)
                         for i, (b, gelu) in enumerate(zip(blocks, activations)))
    visual.transformer = TokensFirst(fast, batch_first=getattr(transformer, "batch_first", True))
    return True


class TokensFirst(nn.Module):
    """open_clip's transformer as EncoderBlocks: (batch, tokens, width) in and out, (tokens, batch,
    width) inside, as the blocks keep it."""

    def __init__(self, blocks: nn.ModuleList, *, batch_first: bool = True):
        super().__init__()
        self.resblocks, self.batch_first = blocks, batch_first

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(0, 1) if self.batch_first else x
        for block in self.resblocks:
            x = block(x)
        return x.transpose(0, 1) if self.batch_first else x


def _linears(visual: nn.Module) -> list[FrozenLinear]:
    return [m for m in visual.modules() if isinstance(m, FrozenLinear)]


def with_matmul_weights_in(visual: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of a sped-up image encoder whose blocks' matmul weights are stored in `dtype`.

    Under autocast every forward would otherwise cast all ~300M ViT-L/14 weights again (frozen
    weights are not in autocast's cast cache): 0.6 GB written per step, and ~100 extra kernels
    on a GPU. Autocast casts the same way, so the results are identical. The matmuls' biases are
    converted too; every other tensor (norms, embeddings) is shared with `visual`, not copied.
    """
    memo = {}
    for linear in _linears(visual):
        for tensor in (linear.weight, linear.bias):
            if tensor.dtype != dtype:
                memo[id(tensor)] = _frozen_parameter(tensor.to(dtype))
    return _copy_sharing(visual, memo)


def with_packed_matmul_weights(visual: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of a sped-up image encoder whose matmuls run on weights prepacked for oneDNN in
    `dtype` (see FrozenLinear), for runs on the CPU. Every tensor of `visual` is shared; the packed
    weights are new: twice the matmul weights in `dtype` (one packing for the forward, one for
    the input gradient), 1.2 GB for ViT-L/14 in bf16.
    """
    packed = _copy_sharing(visual, {})
    for linear in _linears(packed):
        linear.pack(dtype)
    return packed


def with_cpu_route(visual: nn.Module, route, dtype: torch.dtype) -> nn.Module:
    """A copy of a sped-up image encoder for CPU steps in `dtype` that run by `route` (a
    cpu_routes.CpuRoute): its linears on prepacked oneDNN weights or through aten (in `dtype`,
    stored once), its attention blocked or through scaled_dot_product_attention."""
    if route.linear == "packed" and packing_available(dtype):
        routed = with_packed_matmul_weights(visual, dtype)
    elif dtype != torch.float32:
        routed = with_matmul_weights_in(visual, dtype)
    else:
        routed = _copy_sharing(visual, {})
    for block in routed.modules():
        if isinstance(block, EncoderBlock):
            block.route = route
    return routed


def _copy_sharing(visual: nn.Module, memo: dict) -> nn.Module:
    """A copy of the module structure of `visual` that shares its tensors (except those in memo)."""
    for tensor in (*visual.parameters(), *visual.buffers()):
        memo.setdefault(id(tensor), tensor)
    return copy.deepcopy(visual, memo)
