"""The export form of a route: the same function as :class:`~tir.engines.training.continual.RouteModule`,
restructured so ONNX Runtime's CPU graph is dominated by convolutions.

Why (issue 11 item 7, profile of the shipped ``noise`` route at 640×512 on ONNX Runtime 1.32,
2 threads): convolutions took only 48–57 % of kernel time. The rest was layout work around the
blocked (NCHWc) convolution layout: the branch's PixelUnshuffle(2) as Reshape/Transpose, the
PixelShuffle(2) as DepthToSpace, the stem's full-resolution unshuffle, ReorderInput/Output
between blocked and plain tensors, and the field head's ×32 bilinear Resize of a 1-channel
frame (the blocked layout pads its one channel to a full block).

Every rewrite here is exact algebra (outputs match the reference within float rounding,
≤ 1e-4 is tested in tests/test_fast_route.py):

* **One unshuffle, one shuffle.** The frame is unshuffled ×r once (u = unshuffle(x), r² channels
  at H/r); the tone head's affine is element-wise, so it is applied to u; the image-level skip
  adds on the unshuffled grid (z = t_u + recon(Δ), since shuffle is a permutation), and the
  frame is shuffled back once at the end.
* **Average pools as strided convolutions on the unshuffled grid.** ``avg_pool(x, k)`` at full
  resolution equals a k/r × k/r stride-k/r convolution of u with all weights 1/k² (r² channels
  in, one out): the tone head's 8×8 pool and the field head's 32×32 pool.
* **Branch down-sampling** PixelUnshuffle(2) + 1×1 conv (4c → c') is a 2×2 stride-2 conv with
  weight ``W[o, c, i, j] = W1x1[o, 4c + 2i + j]`` (PyTorch's unshuffle channel order).
* **Branch up-sampling** 1×1 conv (c' → 4c) + PixelShuffle(2) is a 2×2 stride-2 ConvTranspose
  with weight ``Wt[o, c, i, j] = W1x1[4c + 2i + j, o]``; the bias varies with the sub-pixel
  (i, j), so it rides on an extra all-ones input channel (weights ``b[4c + 2i + j]``).
* **The input unshuffle** is exported as ONNX SpaceToDepth (same channel order for the
  1-channel frame) instead of PyTorch's Reshape/Transpose/Reshape.
* **Field head upsample** ×P bilinear of the 1-channel field stays a Resize, but on a plain
  (NCHW) tensor: a Reshape between the field head's last conv and the Resize keeps ONNX
  Runtime from moving the Resize into the blocked layout (which pads the one channel to a
  whole block), and the upsampled field is added after the final shuffle.

Routes whose geometry does not allow these (a tone or field pool not a multiple of r) are
refused with :class:`ValueError` naming the reason (:func:`export_route` then exports the
plain route and records why).
"""
from __future__ import annotations

import datetime as _dt

import torch
import torch.nn.functional as F
from torch import nn

from .continual import OpenWorldModel
from .models.ecmrnet import EdgeBranch, FieldHead, ToneHead, tone_stats


def _mean_pool_weight(channels: int, k: int) -> torch.Tensor:
    """Weight of a k×k stride-k conv (``channels`` → 1) averaging over channels and window."""
    return torch.full((1, channels, k, k), 1.0 / (channels * k * k))


class _SpaceToDepth(torch.autograd.Function):
    """PixelUnshuffle(r) of a 1-channel tensor, exported as ONNX SpaceToDepth.

    ONNX SpaceToDepth orders output channels (row offset, column offset, channel); PyTorch's
    unshuffle (channel, row offset, column offset): the same order for one input channel.
    PyTorch exports unshuffle as Reshape/Transpose/Reshape, a generic 6-D transpose that ONNX
    Runtime runs several times slower than its SpaceToDepth kernel.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, r: int) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"SpaceToDepth stands for pixel_unshuffle only on 1 channel, got {x.shape[1]}")
        return F.pixel_unshuffle(x, r)

    @staticmethod
    def symbolic(g, x, r: int):
        return g.op("SpaceToDepth", x, blocksize_i=r)


def _fold_resampling(module: nn.Module, down: nn.Conv2d, up: nn.Conv2d) -> None:
    """Register on ``module`` the folded weights of a body's resampling pair: ``down_w``/``down_b``
    (PixelUnshuffle(2) + the 1×1 ``down`` conv as one 2×2 stride-2 conv) and ``up_w`` (the 1×1
    ``up`` conv + PixelShuffle(2) as one 2×2 stride-2 ConvTranspose over [low, ones], the ones
    channel carrying the sub-pixel bias); see the module docstring for the index algebra."""
    lc, c4 = down.weight.shape[:2]
    c = c4 // 4
    module.register_buffer("down_w", down.weight.detach().reshape(lc, c, 2, 2).clone())
    module.register_buffer("down_b", down.bias.detach().clone())
    w = up.weight.detach()[:, :, 0, 0]                             # 4c × lc
    module.register_buffer("up_w", torch.cat([w.t().reshape(lc, c, 2, 2),
                                              up.bias.detach().reshape(1, c, 2, 2)]).contiguous())


def _folded_up(module: nn.Module, low: torch.Tensor) -> torch.Tensor:
    """The folded 1×1 + PixelShuffle(2) of :func:`_fold_resampling` applied to ``low``."""
    return F.conv_transpose2d(torch.cat([low, torch.ones_like(low[:, :1])], dim=1), module.up_w, None, stride=2)


class FastBranch(nn.Module):
    """:class:`EdgeBranch` with the down/up pixel (un)shuffles folded into (transposed) convs."""

    def __init__(self, branch: EdgeBranch):
        super().__init__()
        self.branch = branch
        _fold_resampling(self, branch.down[1], branch.up[0])

    def body(self, s: torch.Tensor) -> torch.Tensor:
        """The branch without its output projection: (N, C, h, w) float32 stem features in, same shape out."""
        b = self.branch
        h = b.high_in(s)
        low = b.stats(b.low(F.conv2d(h, self.down_w, self.down_b, stride=2)))
        return b.high_out(h + _folded_up(self, low))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """The branch (equal to ``EdgeBranch.forward`` up to float rounding): (N, C, h, w) float32
        stem features in, the same shape out.
        """
        return self.branch.out(self.body(s))


class FastRoute(nn.Module):
    """One route of ``model`` for export: ``forward(x)``, x N×1×H×W float32 (H, W multiples
    of ``model.cfg.multiple``) → restored N×1×H×W, equal to ``RouteModule(model, task)(x)``
    up to float rounding. Raises ValueError for a geometry the rewrites do not cover."""

    def __init__(self, model: OpenWorldModel, task: str):
        super().__init__()
        if task not in model.tasks:
            raise KeyError(f"no route {task!r}; routes: {', '.join(model.tasks) or 'none'}")
        cfg = model.cfg
        self.r = r = cfg.unshuffle
        self.model, self.task = model, task
        self.parts = tuple(model.parts.get(task, ()))
        self.branch = FastBranch(model.branches[task])
        self.part_branches = nn.ModuleList(FastBranch(model.branches[p]) for p in self.parts)
        self.tone: ToneHead = model.tones[task] if task in model.tones else None
        if self.tone is not None:
            if self.tone.pool % r:
                raise ValueError(f"route {task!r}: tone pool {self.tone.pool} is not a multiple of the "
                                 f"unshuffle factor {r}; export it with RouteModule")
            k = self.tone.pool // r
            self.register_buffer("tone_w", _mean_pool_weight(r * r, k))
            self.tone_k = k
        self.field: FieldHead = model.fields[task] if task in model.fields else None
        if self.field is not None:
            pool = self.field.pool
            if pool % r:
                raise ValueError(f"route {task!r}: field pool {pool} is not a multiple of the unshuffle "
                                 f"factor {r}; export it with RouteModule")
            self.field_s = pool // r
            self.register_buffer("field_pool_w", _mean_pool_weight(r * r, self.field_s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x``: (N, 1, H, W) float32 in [0, 1], H and W multiples of ``model.cfg.multiple``,
        to restored (N, 1, H, W) float32.

        Raises:
            ValueError: ``x`` has more than one channel (the SpaceToDepth rewrite covers 1 channel).
        """
        m = self.model
        u = _SpaceToDepth.apply(x, self.r)
        if self.tone is not None:
            p = F.conv2d(u, self.tone_w, None, stride=self.tone_k)       # = avg_pool2d(x, pool)
            f = tone_stats(p, 1)
            gain, shift = self.tone.fc2(F.relu(self.tone.fc1(f))).chunk(2, dim=1)
            lo = f[:, 1:2]
            u = lo + shift + torch.exp(gain) * (u - lo)
        s = m.stem.conv(u)
        s = F.relu(s)
        feats = s + self.branch(s)
        if self.parts:
            part_feats = [s + b(s) for b in self.part_branches]
            feats = m.miners[self.task](feats, part_feats)
        z = u + F.conv2d(feats - s, m.recon.conv.weight, None, padding=1)
        if self.field is not None:
            t = F.conv2d(z, self.field_pool_w, None, stride=self.field_s)   # = avg_pool2d(y, pool)
            for conv in self.field.convs:
                t = F.relu(conv(t))
            fld = self.field.out(t)
            fld = fld.reshape(-1, 1, fld.shape[2], fld.shape[3])   # keeps the Resize out of NCHWc
            up = F.interpolate(fld, scale_factor=float(self.field.pool), mode="bilinear", align_corners=False)
            return F.pixel_shuffle(z, self.r) + up
        return F.pixel_shuffle(z, self.r)


#: recorded per route in the manifest (``export.form``) so a bundle says which graph it ships
EXPORT_FORM = "fast-route v1 (engines/fast_route.py)"


def export_route(model: OpenWorldModel, task: str, path, metadata=None, tolerance: float = 1e-4,
                 check_shape=(1, 1, 256, 320)) -> dict:
    """Export ``task``'s :class:`FastRoute` (the plain :class:`~tir.engines.training.continual.RouteModule`
    when its geometry is not covered, named in ``form``) to ONNX at ``path`` and check it against the reference
    :class:`~tir.engines.training.continual.RouteModule` in torch (max abs difference over ``check_shape``
    and twice its size, random frames in [0, 1]). Returns ``{"form", "max_abs_diff_vs_torch"}``.
    Raises :class:`~tir.engines.training.export.ExportError` above ``tolerance`` (the file is kept for
    inspection) or when the TensorRT audit refuses a node."""
    from .continual import RouteModule
    from .export import ExportError, export_onnx, parity_error

    m = model.cfg.multiple
    model.eval()
    try:
        module, form = FastRoute(model, task), EXPORT_FORM
    except ValueError as exc:   # a geometry the rewrites do not cover: the plain graph, said so
        module, form = RouteModule(model, task), f"reference RouteModule ({exc})"
    export_onnx(module, path, input_shape=(1, 1, 8 * m, 8 * m), metadata=metadata, tolerance=tolerance)
    n, c, h, w = check_shape
    err = parity_error(RouteModule(model, task), str(path), [tuple(check_shape), (n, c, 2 * h, 2 * w)])
    if not err <= tolerance:
        raise ExportError(f"{path}: the exported route {task!r} differs from the reference route by "
                          f"{err:.3g} (> {tolerance:g})")
    return {"form": form, "max_abs_diff_vs_torch": float(err)}


def reexport_bundle(src, out_dir, size=(640, 512), tolerance: float = 1e-4, progress=print):
    """Re-export every route of bundle ``src`` from its checkpoint (model.pt) with :class:`FastRoute`
    into a new bundle folder ``out_dir``; ``src`` is not touched.

    Per route: the new ONNX is checked against the reference route in torch and against the
    bundle's current ONNX on ONNX Runtime (one random frame and one smooth synthetic frame at
    ``size`` (w, h)); both must agree within ``tolerance``. The router is copied and put into its
    fast form (:func:`tir.engines.training.fast_router.rewrite_bundle_router`, checked against
    the old router within 1e-5; kept as it is where that form does not apply). The manifest keeps everything else
    (router, its adaptation statistics, metrics, specs, checkpoint) and gets fresh sha256
    values, ``gmac_640x512`` from :func:`tir.engines.training.macs.count_macs` and per route an
    ``export`` entry with the two differences. Returns the new bundle's folder.
    Raises BundleError (no checkpoint, same folder, an existing non-empty ``out_dir`` or a
    file there, a tampered file, or ``out_dir`` that cannot be written: a full disk, its partial
    files removed), ValueError (a
    checkpoint that is not weights-only) or ExportError (a difference above ``tolerance``).
    """
    import io
    import json
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from ..bundle import BundleError, copy_listed_files, load_bundle, read_verified, write_bundle
    from ..engine import MULTIPLE_KEY
    from ..backends.onnxruntime import ort_session
    from .export import ExportError
    from .train import route_costs

    bundle = load_bundle(src)
    out = Path(out_dir)
    if out.exists() and out.resolve() == bundle.path.resolve():
        raise BundleError("write the re-exported bundle to another folder; the original is kept")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} already exists and is not an empty folder; the re-export writes a new "
                          "bundle and never overwrites one: remove it or choose another --out")
    info = bundle.manifest.get("checkpoint")
    if not info:
        raise BundleError(f"bundle {bundle.path} lists no checkpoint (model.pt) in its manifest.json; "
                          "only bundles written by `tir train` / `tir learn` can be re-exported")
    data = read_verified(bundle, info["file"])
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{bundle.path / info['file']}: not a weights-only checkpoint ({exc})") from None
    model = OpenWorldModel.from_checkpoint(ckpt).eval()
    missing = [t for t in bundle.tasks if t not in model.tasks]
    if missing:
        raise BundleError(f"bundle {bundle.path}: routes {missing} are not in its checkpoint")
    w, h = size
    mult = model.cfg.multiple
    h, w = -(-h // mult) * mult, -(-w // mult) * mult
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = [rng.random((1, 1, h, w), dtype=np.float32),
              (0.5 + 0.3 * np.sin(xx / 37.0) * np.cos(yy / 23.0))[None, None].astype(np.float32)]
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest.pop("files", None)
    entries = {t["name"]: t for t in manifest["tasks"]}
    routes = {}
    tmp = Path(tempfile.mkdtemp(prefix="tir-reexport-"))
    try:
        for task in bundle.tasks:
            path = tmp / f"{task}.onnx"
            meta = {"task": task, "preset": model.cfg.name, MULTIPLE_KEY: mult}
            record = export_route(model, task, path, metadata=meta, tolerance=tolerance)
            old, new = ort_session(bundle.route_path(task), 2), ort_session(path, 2)
            diff = max(float(np.max(np.abs(old.run(None, {"input": x})[0] - new.run(None, {"input": x})[0])))
                       for x in frames)
            if not diff <= tolerance:
                raise ExportError(f"route {task!r}: the re-exported ONNX differs from {bundle.route_path(task)} "
                                  f"by {diff:.3g} at {w}x{h} (> {tolerance:g})")
            record["max_abs_diff_vs_previous"] = diff
            cost = route_costs(model, task)
            entries[task].update({"gmac_640x512": round(cost["gmac"], 4),
                                  "branch_gmac_640x512": round(cost["branch_gmac"], 4), "export": record})
            routes[task] = path
            if progress:
                progress(f"{task}: {cost['gmac']:.3f} GMAC, vs torch {record['max_abs_diff_vs_torch']:.2g}, "
                         f"vs previous ONNX {diff:.2g}")
        manifest.setdefault("training", {})["reexport"] = {
            "from": str(bundle.path), "form": EXPORT_FORM, "tolerance": tolerance,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        manifest["tasks"] = [entries[t] for t in bundle.tasks]
        existed = out.exists()  # an empty folder (checked above): kept, emptied again on failure
        try:
            # the checkpoint and the student (re-exported by tir distill, not here) travel as they are
            copy_listed_files(bundle.path, manifest, out)
            write_bundle(out, routes, bundle.router_path, manifest)
        except OSError as exc:
            # a full disk or a folder that turned unwritable: no half bundle is left behind
            # (it was a traceback, and a folder holding a partial model.pt.tmp)
            if existed:
                for child in out.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            else:
                shutil.rmtree(out, ignore_errors=True)
            raise BundleError(f"cannot write the re-exported bundle to {out}: {exc.strerror or exc}; free space "
                              "or choose another --out (nothing was left there)") from exc
        if bundle.router_path is not None:   # the router's fixed features in their fast form too
            from .fast_router import rewrite_bundle_router

            try:
                rec = rewrite_bundle_router(out)
                if progress:
                    progress(f"router: {rec['form']}, vs previous ONNX {rec.get('max_abs_diff_vs_previous', 0.0):.2g}"
                             + ("" if rec.get("changed", True) else " (already in that form)"))
            except ValueError as exc:       # not the reference features or an uncovered size: kept as it was
                if progress:
                    progress(f"router: kept as it is ({exc})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


#: recorded in the student's export report (``form``)
STUDENT_EXPORT_FORM = "fast-student v1 (engines/training/fast_route.py)"


class FastStudent(nn.Module):
    """The distilled student (:class:`~tir.engines.training.models.student.StudentNet`) for export,
    with the same exact rewrites as :class:`FastRoute`: one SpaceToDepth in and one shuffle out
    (the tone affine and the image skip on the unshuffled grid), the tone and field average pools
    as strided convs on that grid, the body's PixelUnshuffle(2)+1×1 and 1×1+PixelShuffle(2) as a
    2×2 stride-2 conv and ConvTranspose, the field's ×P Resize on a plain tensor.
    ``forward(x, w)``: x N×1×H×W float32 (H, W multiples of ``net.cfg.multiple``), w N×K float32
    prompt mixing weights → restored N×1×H×W, equal to ``net(x, w)`` up to float rounding.

    Raises:
        ValueError: a tone or field pool that is not a multiple of the unshuffle factor.
    """

    def __init__(self, net):
        super().__init__()
        cfg = net.cfg
        self.net, self.r = net, cfg.unshuffle
        r = self.r
        if net.tone.pool % r:
            raise ValueError(f"student tone pool {net.tone.pool} is not a multiple of the unshuffle factor {r}")
        self.tone_k = net.tone.pool // r
        self.register_buffer("tone_w", _mean_pool_weight(r * r, self.tone_k))
        _fold_resampling(self, net.down[1], net.up[0])
        if net.field is not None:
            if net.field.pool % r:
                raise ValueError(f"student field pool {net.field.pool} is not a multiple of the unshuffle factor {r}")
            self.field_s = net.field.pool // r
            self.register_buffer("field_pool_w", _mean_pool_weight(r * r, self.field_s))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` (N, 1, H, W) float32 under prompt mixing ``weights`` (N, K) float32 to
        (N, 1, H, W) float32."""
        net = self.net
        p = net.prompt_vector(weights)
        u = _SpaceToDepth.apply(x, self.r)
        pooled = F.conv2d(u, self.tone_w, None, stride=self.tone_k)          # = avg_pool2d(x, pool)
        f = tone_stats(pooled, 1)
        u = net.tone.tone(u, f, torch.cat([f, p], dim=1))                    # element-wise affine
        s = F.relu(net.stem(u))
        h = s
        for block in net.high_in:
            h = block(h, p)
        low = F.conv2d(h, self.down_w, self.down_b, stride=2)
        for block in net.low:
            low = block(low, p)
        stats = torch.cat([low.mean(dim=(2, 3), keepdim=True), p], dim=1)
        scale, shift = net.stats_fc2(F.relu(net.stats_fc1(stats))).chunk(2, dim=1)
        low = low * (1.0 + scale) + shift
        h = h + _folded_up(self, low)
        for block in net.high_out:
            h = block(h, p)
        z = u + net.recon(net.out(h))
        if net.field is None:
            return F.pixel_shuffle(z, self.r)
        fh = net.field
        t = F.conv2d(z, self.field_pool_w, None, stride=self.field_s)     # = avg_pool2d(y, pool)
        fld = fh.field(t, p)
        fld = fld.reshape(-1, 1, fld.shape[2], fld.shape[3])   # keeps the Resize out of NCHWc
        return F.pixel_shuffle(z, self.r) + F.interpolate(fld, scale_factor=float(fh.pool), mode="bilinear",
                                                          align_corners=False)
