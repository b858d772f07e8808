"""The networks of the stylegan2 family (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", config F; conditioning as in StyleGAN2-ADA). Written here, not taken from NVlabs' repositories
(their custom CUDA ops and licence do not fit), and kept to plain PyTorch ops so that CPU, bf16 autocast,
channels_last and ``torch.compile`` work alike.

- Mapping network: ``z`` and a learned class embedding, each normalised to unit second moment,
  concatenated and mapped by ``mapping_layers`` fully connected layers (learning rate x 0.01) to ``w``.
  The generator tracks each class's mean ``w`` (a buffer): truncation pulls ``w`` toward it.
- Synthesis network ("skip" generator): a learned 4x4 (5-7 px for resolutions such as 28 or 224)
  constant, then per resolution two 3x3 *modulated* convolutions (the styles scale the input
  channels, the output is *demodulated* to unit expected variance), per-pixel noise inputs with a
  learned strength, and a 1x1 toRGB (modulated, not demodulated) summed into the upsampled image.
- Discriminator ("resnet"): fromRGB at full resolution, residual blocks (3x3, 3x3, average-pool
  downsampling, 1x1 skip, sum x 1/sqrt 2), then minibatch standard deviation, a 3x3 conv, a dense
  layer and the conditional output of StyleGAN2-ADA: the projection of the features onto an
  embedding of the label (``cmap``), ``<out, cmap> / sqrt(dim)``.
- Equalised learning rate everywhere (N(0, 1) weights scaled at run time).

Simplifications against the paper: bilinear up- and average-pool downsampling instead of the FIR
filters of ``upfirdn2d``, and no fp16 clamping (bf16 autocast on CUDA, as the other families).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthgate.generators.gan import feature_channels, start_resolution

SLOPE = 0.2
GAIN = math.sqrt(2)  # the gain after a leaky ReLU (bias_act's "lrelu")
MAX_CHANNELS = {"tiny": 32, "small": 128, "base": 512}
W_DIM = {"tiny": 32, "small": 256, "base": 512}


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE) * GAIN


class Dense(nn.Module):
    """Fully connected layer with equalised learning rate and a learning-rate multiplier."""

    def __init__(self, cin: int, cout: int, act: bool = True, lr_mult: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mult)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mult))
        self.weight_gain, self.bias_gain, self.act = lr_mult / math.sqrt(cin), lr_mult, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.act else x


class Conv(nn.Module):
    """Convolution with equalised learning rate, "same" padding, optional leaky ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, act: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_gain, self.act, self.padding = 1 / math.sqrt(cin * kernel * kernel), act, kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu(x) if self.act else x


class MappingNetwork(nn.Module):
    """``(z, label) -> w``; with ``z_dim == 0`` the label alone (the discriminator's ``cmap``)."""

    def __init__(self, z_dim: int, n_classes: int, w_dim: int, layers: int, lr_mult: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.n_classes = z_dim, n_classes
        self.embed = Dense(n_classes, w_dim, act=False)
        dims = [z_dim + w_dim] + [w_dim] * layers
        self.layers = nn.Sequential(*(Dense(a, b, lr_mult=lr_mult) for a, b in zip(dims[:-1], dims[1:], strict=True)))

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        y = normalize_2nd_moment(self.embed(F.one_hot(labels, self.n_classes).to(self.embed.weight.dtype)))
        x = y if z is None or self.z_dim == 0 else torch.cat([normalize_2nd_moment(z), y], dim=1)
        return self.layers(x)


class ModConv(nn.Module):
    """Modulated convolution: the style (an affine map of ``w``) scales the input channels; with
    ``demodulate`` the output channels are rescaled to unit expected variance (StyleGAN2's Eq. 3),
    which replaces AdaIN's instance normalisation. Computed as scale -> shared conv -> rescale, the
    same as the grouped convolution of modulated weights."""

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, demodulate: bool = True, up: bool = False) -> None:
        super().__init__()
        self.affine = Dense(w_dim, cin, act=False, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.weight_gain = 1 / math.sqrt(cin * kernel * kernel)
        self.demodulate, self.up, self.padding = demodulate, up, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        weight = self.weight * self.weight_gain
        x = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            d = (weight.float().square()[None] * styles.float().square()[:, None, :, None, None]).sum(dim=(2, 3, 4))
            x = x * (d + 1e-8).rsqrt()[:, :, None, None].to(x.dtype)
        return x


class SynthLayer(nn.Module):
    """Modulated 3x3 conv -> noise input x learned strength -> bias -> leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModConv(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w) + noise.to(x.dtype) * self.noise_strength
        return lrelu(x + self.bias[:, None, None])


class ToRGB(nn.Module):
    def __init__(self, cin: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModConv(cin, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[:, None, None]


class Synthesis(nn.Module):
    """The "skip" synthesis network: ``ws`` (N, num_ws, w_dim) and one noise map per layer -> image."""

    def __init__(self, resolution: int, channels: int, w_dim: int, max_channels: int) -> None:
        super().__init__()
        self.base, n_up = start_resolution(resolution)
        self.res = [self.base * 2**i for i in range(n_up + 1)]
        chans = [feature_channels(r, max_channels) for r in self.res]
        self.const = nn.Parameter(torch.randn(chans[0], self.base, self.base))
        self.layers = nn.ModuleList([SynthLayer(chans[0], chans[0], w_dim)])
        self.to_rgb = nn.ModuleList([ToRGB(chans[0], channels, w_dim)])
        for i in range(n_up):
            self.layers.extend([SynthLayer(chans[i], chans[i + 1], w_dim, up=True),
                                SynthLayer(chans[i + 1], chans[i + 1], w_dim)])
            self.to_rgb.append(ToRGB(chans[i + 1], channels, w_dim))
        #: layer k uses ws[:, k]; the toRGB of a resolution shares the w of the next resolution's first
        #: layer (StyleGAN2's indexing), and the last toRGB has its own
        self.num_ws = len(self.layers) + 1
        self.noise_sides = [self.base] + [r for r in self.res[1:] for _ in range(2)]

    def forward(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = self.layers[0](x, ws[:, 0], noise[0])
        img = self.to_rgb[0](x, ws[:, 1])
        for i, to_rgb in enumerate(self.to_rgb[1:]):
            k = 1 + 2 * i
            x = self.layers[k](x, ws[:, k], noise[k])
            x = self.layers[k + 1](x, ws[:, k + 1], noise[k + 1])
            img = F.interpolate(img, scale_factor=2.0, mode="bilinear", align_corners=False) + to_rgb(x, ws[:, k + 2])
        return img


class StyleGan2Generator(nn.Module):
    """Mapping and synthesis; ``w_avg`` holds each class's running mean ``w`` (the truncation centre)."""

    def __init__(self, resolution: int, channels: int, n_classes: int, z_dim: int, w_dim: int, mapping_layers: int,
                 max_channels: int, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.resolution, self.channels, self.n_classes, self.z_dim = resolution, channels, n_classes, z_dim
        self.w_dim, self.w_avg_beta = w_dim, w_avg_beta
        self.mapping = MappingNetwork(z_dim, n_classes, w_dim, mapping_layers)
        self.synthesis = Synthesis(resolution, channels, w_dim, max_channels)
        self.num_ws = self.synthesis.num_ws
        self.register_buffer("w_avg", torch.zeros(n_classes, w_dim))
        self.register_buffer("w_avg_updates", torch.zeros(n_classes))  # per class: the mean is unbiased early on

    @torch.no_grad()
    def track_w_avg(self, w: torch.Tensor, labels: torch.Tensor) -> None:
        """Each class's mean ``w``: the running average of its batch means, a plain mean for the
        first ``1 / (1 - w_avg_beta)`` updates (no pull toward the zero it starts from)."""
        w = w.float()
        sums = torch.zeros_like(self.w_avg).index_add_(0, labels, w)
        counts = torch.zeros_like(self.w_avg_updates).index_add_(0, labels, torch.ones_like(labels, dtype=w.dtype))
        seen = counts > 0
        rate = torch.maximum(torch.full_like(counts, 1 - self.w_avg_beta), 1 / (self.w_avg_updates + 1))
        rate = torch.where(seen, rate, torch.zeros_like(rate))[:, None]
        self.w_avg.add_((sums / counts.clamp(min=1)[:, None] - self.w_avg) * rate)
        self.w_avg_updates.add_(seen.to(self.w_avg_updates.dtype))

    def noise(self, n: int, gen: torch.Generator | None, device: torch.device) -> list[torch.Tensor]:
        return [torch.randn(n, 1, s, s, generator=gen, device=device) for s in self.synthesis.noise_sides]

    def split_noise(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(N, noise_size) -> one (N, 1, s, s) map per layer (per-image seeded sampling)."""
        sizes = [s * s for s in self.synthesis.noise_sides]
        return [p.reshape(len(flat), 1, s, s) for p, s in
                zip(flat.split(sizes, dim=1), self.synthesis.noise_sides, strict=True)]

    @property
    def noise_size(self) -> int:
        return sum(s * s for s in self.synthesis.noise_sides)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, *, gen: torch.Generator | None = None,
                noise: list[torch.Tensor] | None = None, truncation_psi: float = 1.0, mixing: float = 0.0,
                track: bool = False, return_ws: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) in about [-1, 1]. In training: ``gen`` draws the noise maps and style
        mixing (probability ``mixing``: the ws from layer k on come from a second z), ``track``
        updates the class means of ``w``; ``return_ws`` also returns the ws (path-length penalty)."""
        w = self.mapping(z, labels)
        if track:
            self.track_w_avg(w.detach(), labels)
        if truncation_psi != 1.0:
            centre = self.w_avg[labels].to(w.dtype)
            w = centre + truncation_psi * (w - centre)
        ws = w[:, None, :].repeat(1, self.num_ws, 1)
        if mixing > 0:  # drawn on the device without a host sync: one cutoff for the batch, or none
            cutoff = torch.randint(1, self.num_ws, (), generator=gen, device=z.device)
            mixed = torch.rand((), generator=gen, device=z.device) < mixing
            z2 = torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype)
            second = (torch.arange(self.num_ws, device=z.device) >= cutoff) & mixed
            ws = torch.where(second[None, :, None], self.mapping(z2, labels)[:, None].to(ws.dtype), ws)
        img = self.synthesis(ws, noise if noise is not None else self.noise(len(z), gen, z.device))
        return (img, ws) if return_ws else img


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append the mean standard deviation over groups of ``group`` images (the largest divisor of the
    batch up to ``group``) as one more feature map."""
    n, c, h, w = x.shape
    g = max(k for k in range(1, min(group, n) + 1) if n % k == 0)
    y = x.float().reshape(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n / g,)
    y = y.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DBlock(nn.Module):
    """Residual block: 3x3 conv, average pool, 3x3 conv; 1x1 skip of the pooled input; sum / sqrt 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0, self.conv1 = Conv(cin, cin, 3), Conv(cin, cout, 3)
        self.skip = Conv(cin, cout, 1, act=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.avg_pool2d(self.conv0(x), 2))
        return (self.skip(F.avg_pool2d(x, 2)) + h) / math.sqrt(2)


class StyleGan2Discriminator(nn.Module):
    """The "resnet" discriminator with StyleGAN2-ADA's conditional output."""

    def __init__(self, resolution: int, channels: int, n_classes: int, w_dim: int, mapping_layers: int,
                 max_channels: int) -> None:
        super().__init__()
        base, n_down = start_resolution(resolution)
        chans = [feature_channels(resolution // 2**i, max_channels) for i in range(n_down + 1)]
        self.from_rgb = Conv(channels, chans[0], 1)
        self.blocks = nn.Sequential(*(DBlock(chans[i], chans[i + 1]) for i in range(n_down)))
        c = chans[-1]
        self.conv = Conv(c + 1, c, 3)
        self.dense = Dense(c * base * base, c)
        self.out = Dense(c, w_dim, act=False)
        self.cmap = MappingNetwork(0, n_classes, w_dim, mapping_layers)
        self.cmap_scale = 1 / math.sqrt(w_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.from_rgb(x))
        h = self.dense(self.conv(minibatch_stddev(h)).flatten(1))
        return (self.out(h) * self.cmap(None, labels).to(h.dtype)).sum(dim=1) * self.cmap_scale
