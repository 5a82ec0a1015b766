"""Every private PyTorch API behind detr.torch_private, exercised: a torch upgrade that breaks one fails here."""

from __future__ import annotations

import torch

from detr import torch_private as tp


def test_foreach_helpers_match_their_plain_equivalents():
    a = [torch.tensor([3.0, 4.0]), torch.ones(2, 2)]
    b = [torch.tensor([1.0, 1.0]), torch.zeros(2, 2)]
    torch.testing.assert_close(tp.foreach_norm(a), torch.tensor([5.0, 2.0]))
    torch.testing.assert_close(tp.foreach_sub(a, b)[0], torch.tensor([2.0, 3.0]))
    copies = [t.clone() for t in a]
    tp.foreach_mul_(copies, torch.tensor(0.5))
    torch.testing.assert_close(copies[0], torch.tensor([1.5, 2.0]))
    tp.foreach_lerp_(copies, b, 1.0)
    torch.testing.assert_close(copies[1], b[1])


def test_scaler_scale_reads_the_scale_without_a_host_copy():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # the same class the trainer uses on a GPU
    scaler.scale(torch.ones(()))
    scale = tp.scaler_scale(scaler)
    assert torch.is_tensor(scale) and scale.item() == 1024.0


def test_fake_tensors_and_dispatch_modes_still_work_as_memprofile_uses_them():
    with tp.FakeTensorMode():
        x = torch.empty(4, 8)
        y = x @ x.T
        assert y.shape == (4, 4)
    seen = []

    class Recorder(tp.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    with Recorder():
        torch.ones(2) + 1
    assert torch.ops.aten.add.Tensor in seen
    assert issubclass(tp.DataDependentOutputException, Exception)
    assert tp.tree_leaves({"a": [1, (2, 3)]}) == [1, 2, 3]


def test_storage_key_and_node_order():
    x = torch.ones(4, requires_grad=True)
    assert tp.storage_key(x) == tp.storage_key(x.view(2, 2))
    first = (x * 2).grad_fn
    second = (x * 3).grad_fn
    assert tp.node_sequence_nr(second) > tp.node_sequence_nr(first)


def test_memory_history_helpers_exist():
    # Recording needs a GPU; without one the helpers must still be the callables torch provides.
    assert callable(torch.cuda.memory._record_memory_history) and callable(torch.cuda.memory._dump_snapshot)
    if torch.cuda.is_available():
        tp.record_memory_history(100)
        tp.record_memory_history(None)


def test_efficient_attention_kernel_is_registered():
    # The CUDA kernel itself runs in memprofile's estimate tests (fake CUDA tensors); here: it still exists.
    assert hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention")


def test_shutdown_loader_workers_ends_the_worker_processes():
    import multiprocessing

    from torch.utils.data import DataLoader

    iterator = iter(DataLoader(list(range(8)), batch_size=2, num_workers=1))
    next(iterator)
    assert multiprocessing.active_children()
    tp.shutdown_loader_workers(iterator)
    assert not multiprocessing.active_children()
    tp.shutdown_loader_workers(iter(DataLoader(list(range(8)), batch_size=2)))  # no workers: nothing to end
