"""DDP on CPU with gloo: 2 ranks × batch 2 must update the parameters exactly as 1 rank × batch 4."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from detr.engine.callbacks import StepContext


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Four same-size images with two boxes each (equal counts keep the per-rank CE means comparable)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 64, 64, generator=g)
    mask = torch.zeros(4, 64, 64, dtype=torch.bool)
    centers = torch.rand(4, 2, 2, generator=g) * 0.4 + 0.3
    targets = [
        {
            "labels": torch.randint(1, 7, (2,), generator=g),
            "boxes": torch.cat([c, torch.full((2, 2), 0.2)], dim=1),
        }  # cx, cy, w, h
        for c in centers
    ]
    return images, mask, targets


def one_step(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from detr.engine.trainer import Trainer
    from detrdoctor.profiles import load_profile

    if world_size > 1:
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    torch.set_num_threads(1)
    cfg = load_profile("tiny")
    trainer = Trainer(cfg, output_dir=out_dir)
    if world_size == 1:
        torch.save(
            {n: p.detach().clone() for n, p in trainer.model_without_ddp.named_parameters()},
            os.path.join(out_dir, "params_initial.pt"),
        )
    images, mask, targets = fixed_batch()
    share = slice(2 * rank, 2 * rank + 2) if world_size > 1 else slice(0, 4)
    ctx = StepContext(step=1, epoch=0, batch_in_epoch=0, images=images[share], mask=mask[share], targets=targets[share])
    trainer.train_step(ctx)
    if rank == 0:
        torch.save(
            {n: p.detach().clone() for n, p in trainer.model_without_ddp.named_parameters()},
            os.path.join(out_dir, f"params_{world_size}.pt"),
        )
    if world_size > 1:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_rank_with_the_whole_batch(tmp_path):
    from detr.data import dataset_root
    from detrdoctor.profiles import load_profile

    dataset_root(load_profile("tiny").data)  # generate the cached dataset once, before the ranks race for it
    one_step(0, 1, 0, str(tmp_path))
    mp.spawn(one_step, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    single = torch.load(tmp_path / "params_1.pt")
    ddp = torch.load(tmp_path / "params_2.pt")
    initial = torch.load(tmp_path / "params_initial.pt")
    assert not torch.equal(single["class_embed.weight"], initial["class_embed.weight"])  # the step did update
    for name, p in single.items():
        torch.testing.assert_close(ddp[name], p, rtol=1e-5, atol=1e-5, msg=name)
