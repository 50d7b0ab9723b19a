"""The sped-up image encoder computes what CLIP's own encoder computes, forward and backward."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

from das_ag import encoder
from das_ag.clip_package import clip_module
from das_ag.cpu_routes import LEGACY_ROUTE
from das_ag.encoder import EncoderBlock, PatchEmbedding, blocked_attention, speed_up_image_encoder, with_matmul_weights_in
from das_ag.engine import synthesize
from das_ag.models import load_models

from .conftest import small_config


def small_vision_clip(width: int = 128, layers: int = 2):
    """A random CLIP with width // 64 heads: the tiny test CLIP has a single head."""
    torch.manual_seed(0)
    model = clip_module().model.CLIP(
        embed_dim=768, image_resolution=224, vision_layers=layers, vision_width=width, vision_patch_size=32,
        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1,
    ).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def encode_with_input_grad(visual, x, dtype=torch.float32):
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        e = visual(x).float()
    (e * torch.linspace(-1, 1, e.shape[-1], device=e.device)).sum().backward()
    return e.detach(), x.grad


def test_patch_matmul_is_the_patch_convolution():
    conv = torch.nn.Conv2d(3, 64, kernel_size=14, stride=14, bias=False)
    x = torch.randn(2, 3, 224, 224, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    expected = conv(x)
    got = PatchEmbedding(conv)(y)
    assert torch.allclose(got, expected, atol=1e-5)
    (expected * expected.detach()).sum().backward()
    (got * expected.detach()).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-5)


def multi_head_attention(qkv, heads, queries):
    """The textbook computation, from a (tokens, batch, 3 x width) projection."""
    tokens, batch, _ = qkv.shape
    q, k, v = qkv.unflatten(-1, (3, heads, -1)).permute(2, 1, 3, 0, 4)  # (batch, heads, tokens, width)
    out = torch.softmax(q[:, :, :queries] @ k.transpose(-1, -2), dim=-1) @ v
    return out.permute(2, 0, 1, 3).reshape(queries, batch, -1)


@pytest.mark.parametrize("queries", [7, 1])  # every token, and the class token alone
def test_blocked_attention_has_the_exact_gradient(monkeypatch, queries):
    # A tiny score budget splits each image's 5 heads into groups of 3 and 2, so the grouping and
    # the strided reads and writes are exercised.
    monkeypatch.setattr(encoder, "SCORE_BYTES_PER_GROUP", 4 * queries * 7 * 4)
    qkv = torch.randn(7, 2, 3 * 5 * 4, dtype=torch.float64, requires_grad=True)  # 7 tokens, 2 images
    assert torch.autograd.gradcheck(lambda t: blocked_attention(t, 5, queries), (qkv,))
    assert torch.allclose(blocked_attention(qkv, 5, queries), multi_head_attention(qkv, 5, queries), atol=1e-12)


def test_blocked_attention_in_bfloat16_is_as_accurate_as_flash_attention():
    # Logits of size ~9: rounding the scores to bf16 would double the error (measured 0.0145);
    # float32 scores keep it at FlashAttention's level (0.0078 for both).
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 16, 257, 64, dtype=torch.float64) * 3 for _ in range(3))
    q = q / 8
    exact = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    qkv = torch.stack([q, k, v], dim=2).permute(3, 0, 2, 1, 4).reshape(257, 2, 3 * 16 * 64)
    got = blocked_attention(qkv.bfloat16(), 16).double().unflatten(-1, (16, 64)).permute(1, 2, 0, 3)
    flash = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), scale=1.0).double()
    error, flash_error = ((x - exact).norm() / exact.norm() for x in (got, flash))
    assert error < 0.01 and error < 1.2 * flash_error


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_sped_up_encoder_computes_what_clip_computes(device):
    # On the CPU attention is blocked_attention; on CUDA it is scaled_dot_product_attention.
    model = small_vision_clip().to(device)
    stock = copy.deepcopy(model.visual)
    speed_up_image_encoder(model.visual)
    blocks = model.visual.transformer.resblocks
    assert all(isinstance(b, EncoderBlock) for b in blocks)
    assert [b.class_token_only for b in blocks] == [False, True]  # CLIP reads token 0 of the last
    assert isinstance(model.visual.conv1, PatchEmbedding)
    x = torch.randn(3, 3, 224, 224, device=device)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # stock conv1 in true fp32
        e_stock, g_stock = encode_with_input_grad(stock, x)
    e_fast, g_fast = encode_with_input_grad(model.visual, x)
    assert torch.allclose(e_fast, e_stock, rtol=1e-4, atol=1e-5)
    assert torch.allclose(g_fast, g_stock, rtol=1e-4, atol=1e-6)


def test_stored_bfloat16_weights_give_exactly_what_autocast_gives():
    model = small_vision_clip()
    speed_up_image_encoder(model.visual)
    x = torch.randn(2, 3, 224, 224)
    stored = with_matmul_weights_in(model.visual, torch.bfloat16)
    e_auto, g_auto = encode_with_input_grad(model.visual, x, torch.bfloat16)
    e_stored, g_stored = encode_with_input_grad(stored, x, torch.bfloat16)
    assert torch.equal(e_auto, e_stored) and torch.equal(g_auto, g_stored)
    block, copied = model.visual.transformer.resblocks[0], stored.transformer.resblocks[0]
    assert copied.fc.weight.dtype == torch.bfloat16 and block.fc.weight.dtype == torch.float32
    assert copied.ln_1.weight is block.ln_1.weight  # everything but the matmul weights is shared


def test_sped_up_encoder_in_bfloat16_is_as_accurate_as_clip_under_autocast():
    # The bf16 encoder changes where it rounds (a contiguous bf16 residual stream normalised
    # without casts, the oneDNN linears, float32 attention scores); its error against the float32
    # result must stay at the level of CLIP's own under autocast, forward and input gradient.
    model = small_vision_clip(width=256, layers=3)
    stock = copy.deepcopy(model.visual)
    speed_up_image_encoder(model.visual)
    fast = with_matmul_weights_in(model.visual, torch.bfloat16)
    x = torch.randn(2, 3, 224, 224)
    exact_e, exact_g = encode_with_input_grad(stock, x)
    errors = {}
    for name, visual in (("stock", stock), ("fast", fast)):
        e, g = encode_with_input_grad(visual, x, torch.bfloat16)
        errors[name] = ((e - exact_e).norm() / exact_e.norm(), (g - exact_g).norm() / exact_g.norm())
    (stock_e, stock_g), (fast_e, fast_g) = errors["stock"], errors["fast"]
    assert fast_e < 0.02 and fast_g < 0.05
    assert fast_e < 1.25 * stock_e and fast_g < 1.25 * stock_g


needs_packing = pytest.mark.skipif(
    not (encoder.packing_available(torch.bfloat16) and encoder.packing_available(torch.float32)),
    reason="this torch or CPU has no oneDNN linears on packed bf16 and float32 weights",
)


def sped_up_and_packed(dtype):
    """A sped-up 4-head encoder, its copy with packed weights in `dtype`, and an input batch."""
    model = small_vision_clip(width=256, layers=3)
    speed_up_image_encoder(model.visual)
    return model.visual, encoder.with_packed_matmul_weights(model.visual, dtype), torch.randn(2, 3, 224, 224)


@needs_packing
def test_packed_bfloat16_encoder_gives_exactly_what_autocast_gives():
    # Forward and input gradient through weights prepacked for oneDNN: the same bits as the
    # stored-bf16 encoder under autocast (and so as CLIP's own linears under autocast).
    visual, packed, x = sped_up_and_packed(torch.bfloat16)
    linears = [m for m in packed.modules() if isinstance(m, encoder.FrozenLinear)]
    assert len(linears) == 12 and all(m.packed is not None and m.packed.dtype == torch.bfloat16 for m in linears)
    y = linears[2](torch.randn(7, 3, 256, requires_grad=True))
    assert type(y.grad_fn).__name__ == "_PackedLinearBackward"  # the packed path is the one taken
    e_stored, g_stored = encode_with_input_grad(with_matmul_weights_in(visual, torch.bfloat16), x, torch.bfloat16)
    e_packed, g_packed = encode_with_input_grad(packed, x, torch.bfloat16)
    assert torch.equal(e_packed, e_stored)
    # The input gradient: the same bits under torch 2.15; under 2.11 on an Intel CPU with AMX,
    # oneDNN rounds the packed backward differently (2.1e-3 relative, a quarter of the values
    # one bf16 step apart), so it is held to bf16's precision rather than to its bits.
    assert ((g_packed - g_stored).norm() / g_stored.norm()).item() < 1e-2
    block, copied = visual.transformer.resblocks[0], packed.transformer.resblocks[0]
    assert copied.fc.weight is block.fc.weight and block.fc.packed is None  # shared, and only the copy packed


@needs_packing
def test_packed_float32_encoder_matches_and_repeats_bit_for_bit():
    visual, packed, x = sped_up_and_packed(torch.float32)
    e_plain, g_plain = encode_with_input_grad(visual, x)
    e_packed, g_packed = encode_with_input_grad(packed, x)
    assert torch.allclose(e_packed, e_plain, rtol=1e-4, atol=1e-5)  # only the summation order differs
    assert torch.allclose(g_packed, g_plain, rtol=1e-4, atol=1e-6)
    again = encode_with_input_grad(packed, x)
    assert torch.equal(again[0], e_packed) and torch.equal(again[1], g_packed)


def test_loaded_clip_runs_the_sped_up_encoder(models):
    visual = models.clip.visual
    assert isinstance(visual.conv1, PatchEmbedding)
    assert all(isinstance(b, EncoderBlock) for b in visual.transformer.resblocks)
    assert models.clip.dtype == torch.float32  # CLIP reads conv1.weight for its dtype
    assert not any(p.requires_grad for p in visual.parameters())
    assert models.encoders[0].image_encoder(torch.float32) is visual
    assert models.encoders[0].image_encoder(torch.bfloat16) is models.encoders[0].image_encoder(torch.bfloat16)  # made once per bundle


@needs_packing
def test_a_run_packs_one_encoder_and_scoring_packs_none(tiny_clip_path, head_path, tmp_path):
    # Packed weights cost 1.2 GB (bf16) or 2.4 GB (float32) for ViT-L/14: only the optimisation
    # loop's encoder may carry them, never the float32 encoder that scores the first and last image.
    own_copy = shutil.copy(tiny_clip_path, tmp_path / "clip.pt")  # a bundle no other test has used
    models = load_models(str(own_copy), str(head_path), "cpu")
    result = synthesize(small_config(steps=3, dtype="bfloat16"), models).run()
    assert result.status == "completed" and result.dtype == "bfloat16"
    # Listed before anything else asks the bundle for an encoder, so only the run can have packed.
    packed = [e for e in models.encoders[0]._encoders.values() if any(getattr(m, "packed", None) for m in e.modules())]
    assert len(packed) == 1
    made = packed[0]
    assert made is models.encoders[0].image_encoder(torch.bfloat16, route=LEGACY_ROUTE) and made is not models.clip.visual
    assert {id(t) for t in made.parameters()} == {id(t) for t in models.clip.visual.parameters()}  # shared
    assert all(m.packed.dtype == torch.bfloat16 for m in made.modules() if isinstance(m, encoder.FrozenLinear))


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clips_vit_runs_on_the_fast_encoder_and_computes_the_same(quick_gelu):
    """open_clip's ViT blocks are CLIP's (GELU in LAION's models): the same fast encoder serves
    them, between two transposes, and computes what open_clip computes, forward and input gradient."""
    import warnings

    import open_clip

    from das_ag.encoder import TokensFirst, speed_up_open_clip_encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32-quickgelu" if quick_gelu else "ViT-B-32").eval()
    visual = model.visual
    for p in visual.parameters():
        p.requires_grad_(False)
    visual.transformer.resblocks = visual.transformer.resblocks[:2]  # two blocks show it, faster
    stock = copy.deepcopy(visual)
    assert speed_up_open_clip_encoder(visual)
    assert isinstance(visual.transformer, TokensFirst) and isinstance(visual.conv1, PatchEmbedding)
    assert [b.gelu for b in visual.transformer.resblocks] == [not quick_gelu] * 2
    assert [b.class_token_only for b in visual.transformer.resblocks] == [False, True]
    x = torch.randn(2, 3, 224, 224)
    e_stock, g_stock = encode_with_input_grad(stock, x)
    e_fast, g_fast = encode_with_input_grad(visual, x)
    assert torch.allclose(e_fast, e_stock, rtol=1e-4, atol=1e-5)
    assert torch.allclose(g_fast, g_stock, rtol=1e-4, atol=1e-6)


def test_an_open_clip_architecture_it_does_not_know_is_left_as_it_is():
    import warnings

    import open_clip

    from das_ag.encoder import speed_up_open_clip_encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("RN50")  # a ResNet tower
    before = type(model.visual.attnpool)
    assert not speed_up_open_clip_encoder(model.visual) and type(model.visual.attnpool) is before
