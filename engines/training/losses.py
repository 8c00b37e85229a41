"""Training loss of ECMRNet (ecmrnet.md §1.2 ``MainLosses``): L1 + 0.5·(1 − MS-SSIM) + 0.1·grad.

The gradient term is 0.5·(|∇x| + |∇y|) L1 with Sobel kernels divided by 8. MS-SSIM uses the
standard Gaussian window (11, σ 1.5) and scale weights (Wang et al. 2003: 0.0448, 0.2856,
0.3001, 0.2363, 0.1333); with 5 scales it needs inputs above ~160 px (ecmrnet.md §1.2), so
:func:`scales_for` picks as many scales as the crop allows (≥ 1; one scale is plain SSIM) and
renormalises the first weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA = 11, 1.5
C1, C2 = 0.01 ** 2, 0.03 ** 2


def scales_for(size: int, max_scales: int = 5) -> int:
    """How many MS-SSIM scales fit a crop of ``size`` px (the coarsest must hold the window)."""
    scales = 1
    while scales < max_scales and size // (2 ** scales) >= WINDOW:
        scales += 1
    return scales


def _window(device, dtype) -> torch.Tensor:
    """The 1-D Gaussian taps (the 2-D window is separable: applied as 1×11 then 11×1)."""
    coords = torch.arange(WINDOW, dtype=dtype, device=device) - (WINDOW - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


def _blur(maps: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Valid separable Gaussian filter of every channel of an N×K×H×W tensor."""
    k = maps.shape[1]
    maps = F.conv2d(maps, taps.reshape(1, 1, 1, WINDOW).expand(k, 1, 1, WINDOW), groups=k)
    return F.conv2d(maps, taps.reshape(1, 1, WINDOW, 1).expand(k, 1, WINDOW, 1), groups=k)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor):
    mu_x, mu_y, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), win).unbind(dim=1)
    sxx = xx - mu_x ** 2
    syy = yy - mu_y ** 2
    sxy = xy - mu_x * mu_y
    cs = (2 * sxy + C2) / (sxx + syy + C2)
    lum = (2 * mu_x * mu_y + C1) / (mu_x ** 2 + mu_y ** 2 + C1)
    return (lum * cs).mean(dim=(1, 2)), cs.mean(dim=(1, 2))


def ms_ssim(x: torch.Tensor, y: torch.Tensor, scales: int) -> torch.Tensor:
    """Mean MS-SSIM of N×1×H×W batches in [0,1] over ``scales`` scales (1 = SSIM)."""
    win = _window(x.device, x.dtype)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    values = []
    for i in range(scales):
        ssim, cs = _ssim_terms(x, y, win)
        if i < scales - 1:
            values.append(torch.relu(cs))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            values.append(torch.relu(ssim))
    stacked = torch.stack(values, dim=0)                            # scales × N
    return torch.prod(stacked ** weights[:, None], dim=0).mean()


def sobel_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0.5·(L1 of x-gradients + L1 of y-gradients), Sobel kernels / 8.

    Args:
        x: (N, 1, H, W) float32 prediction.
        y: (N, 1, H, W) float32 target.

    Returns:
        scalar float32 tensor.
    """
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype,
                      device=x.device) / 8.0
    k = torch.stack([kx, kx.t()]).unsqueeze(1)                     # 2×1×3×3
    gx, gy = F.conv2d(x, k), F.conv2d(y, k)
    return 0.5 * (gx - gy).abs().mean(dim=(0, 2, 3)).sum()


class RestorationLoss(nn.Module):
    """L1 + 0.5·(1 − MS-SSIM) + 0.1·Sobel-gradient L1 (ecmrnet.md §1.2)."""

    def __init__(self, crop: int, w_l1: float = 1.0, w_ssim: float = 0.5, w_grad: float = 0.1):
        super().__init__()
        self.scales = scales_for(crop)
        self.w_l1, self.w_ssim, self.w_grad = w_l1, w_ssim, w_grad

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of a batch: w_l1·L1 + w_ssim·(1 − MS-SSIM) + w_grad·Sobel L1 (ecmrnet.md §1.2).

        Args:
            pred: (N, 1, H, W) float32 prediction (clamped to [0, 1] for MS-SSIM only).
            target: (N, 1, H, W) float32 clean frames in [0, 1].

        Returns:
            scalar float32 tensor.
        """
        loss = self.w_l1 * (pred - target).abs().mean()
        loss = loss + self.w_ssim * (1.0 - ms_ssim(pred.clamp(0, 1), target, self.scales))
        return loss + self.w_grad * sobel_l1(pred, target)
