"""Train the toy VAE: mostly on 32x32 crops (5x faster), then on full images; set the latent scale.

Loss MSE + 0.5 L1 + 1e-7 KL (summed over the latent), Adam with warm-up. The scaling factor is
1 / std of the latents of held-out images, as SD's 0.18215 is.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from toytrain.common import ResumableLoop, TrainLog, checkpoint_dir, lr_at, seed_everything
from toytrain.data import render_set, to_unit
from toyworld.models import build_vae, save_weights, weights_path


def _step(vae, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
    posterior = vae.encode(batch).latent_dist
    recon = vae.decode(posterior.sample()).sample
    kl = posterior.kl().mean()
    loss = F.mse_loss(recon, batch) + 0.5 * F.l1_loss(recon, batch) + 1e-7 * kl
    return loss, F.mse_loss(recon.detach(), batch).item()


def _psnr(vae, images: torch.Tensor) -> float:
    with torch.no_grad():
        recon = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    mse = F.mse_loss((recon + 1) / 2, (images + 1) / 2)
    return float(10 * torch.log10(1 / mse))


def train_vae(out_dir, *, seed: int = 0, images: int = 20000, crop_steps: int = 1500, full_steps: int = 500,
              log: TrainLog, checkpoints: Path | None = None, save_every: int = 100) -> None:
    """Train and write ``vae.safetensors`` (scaling factor in its metadata). Resumable
    (:class:`toytrain.common.ResumableLoop`): the state is saved to ``checkpoints`` every ``save_every`` steps."""
    seed_everything(seed)
    pixels, _ = render_set(images, seed=seed)
    held_out = to_unit(render_set(256, seed=seed + 10_000)[0])
    vae = build_vae()
    opt = torch.optim.Adam(vae.parameters(), lr=5e-4)
    gen = torch.Generator().manual_seed(seed)
    total = crop_steps + full_steps
    loop = ResumableLoop("vae", checkpoints or checkpoint_dir(f"vae-{total}-seed{seed}"), log, gen,
                         parts={"vae": vae, "optimizer": opt}, every=save_every)
    for step in range(loop.resume(), total):
        cropping = step < crop_steps
        batch_size = 32 if cropping else 16
        peak = 5e-4 if cropping else 1.5e-4
        for group in opt.param_groups:
            group["lr"] = lr_at(step if cropping else step - crop_steps, crop_steps if cropping else full_steps,
                                peak, warmup=100 if cropping else 20)
        idx = torch.randint(len(pixels), (batch_size,), generator=gen)
        batch = to_unit(pixels[idx])
        if cropping:
            x, y = torch.randint(0, 33, (2,), generator=gen).tolist()
            batch = batch[:, :, y : y + 32, x : x + 32]
        loss, mse = _step(vae, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == total - 1:
            log.event("vae", step=step, loss=loss.item(), mse=mse, seconds=round(loop.seconds(), 1))
        loop.after_step(step + 1, total)
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(held_out[i : i + 64]).latent_dist.mode() for i in range(0, 256, 64)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    psnr = _psnr(vae, held_out)
    log.event("vae-done", psnr_db=round(psnr, 2), scaling_factor=round(scaling, 4), seconds=round(loop.seconds(), 1))
    save_weights(vae, weights_path("vae", out_dir), {"scaling_factor": repr(scaling), "psnr_db": f"{psnr:.2f}"})
    loop.finish()
