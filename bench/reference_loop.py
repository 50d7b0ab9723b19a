"""The straightforward step of the DAS-AG reference app, rebuilt from reference-algorithm.md.

It is the baseline the engine is measured against, so it keeps the reference's habits: float32
with no autocast, a CLIP whose weights still require gradients (so backward also computes weight
gradients nobody uses), text features re-encoded every step, each pyramid level upsampled with
F.interpolate, and a Python loop that rolls, colours, noises, crops and resizes one copy at a time.
It is a benchmark fixture, not a feature: das-ag never runs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


class ReferenceLoop:
    def __init__(self, clip_model, head, tokens, *, canvas=256, resolution=224, copies=8, lr=0.1, device="cpu"):
        self.clip, self.head, self.tokens = clip_model, head, tokens.to(device)
        for p in self.clip.parameters():
            p.requires_grad_(True)  # the reference never froze CLIP
        self.canvas, self.margin, self.copies = canvas, (canvas - resolution) // 2, copies
        sizes, s = [], 1
        while s <= canvas:
            sizes.append(s)
            s *= 2
        g = torch.Generator().manual_seed(0)
        self.levels = [(torch.randn(1, 3, s, s, generator=g) / s).to(device).requires_grad_() for s in sizes]
        self.opt = torch.optim.Adam(self.levels, lr=lr, betas=(0.5, 0.99))
        self.device = device

    def step(self, noise=0.3, colour=0.1):
        text = self.clip.encode_text(self.tokens)  # every step, as the reference does
        text = text / text.norm(dim=-1, keepdim=True)
        raw = sum(F.interpolate(p, size=(self.canvas, self.canvas), mode="bilinear", align_corners=False)
                  for p in self.levels) / len(self.levels)
        image = (torch.tanh(raw) + 1) / 2
        views = []
        for _ in range(self.copies):  # one copy at a time
            dy, dx = (int(v) for v in torch.randint(-self.margin, self.margin + 1, (2,)))
            x = torch.roll(image, shifts=(dy, dx), dims=(2, 3))
            x = (x - MEAN.to(self.device)) / STD.to(self.device)
            x = x * torch.exp((torch.rand(1, 3, 1, 1, device=self.device) * 2 - 1) * colour)
            x = x + (torch.rand(1, 3, 1, 1, device=self.device) * 2 - 1) * colour
            x = x + noise * torch.randn_like(x)
            m = self.margin
            x = x[:, :, m : self.canvas - m, m : self.canvas - m]
            views.append(F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False))
        batch = torch.cat(views)
        e = self.clip.encode_image(batch)
        e = e / e.norm(dim=-1, keepdim=True)
        loss = -5.0 * (e @ text.t()).mean() - 3.0 * self.head(e).mean() / 10
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())
