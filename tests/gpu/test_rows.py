"""A batch's GPU-decoded rows written into its slot (streamer.gpu.rows.RowBatch; GPU host, marker ``gpu``):
one launch gathers them into the slot's device input beside the host rows of a mixed batch, a host slot gets
them copied down, and each row is let go with the batch's event once the slot was submitted."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

H, W, DEPTH = 8, 12, 8


@pytest.fixture(scope="module")
def ctx() -> Iterator[object]:
    from streamer.cuda_env import no_gpu_reason, pycuda_reason

    reason = no_gpu_reason() or pycuda_reason()
    if reason:
        pytest.skip(reason)
    from streamer.gpu.context import PrimaryContext

    context = PrimaryContext.get(0)
    with context.active():
        yield context


def store_with_frames(ctx: object, frames: int) -> tuple[object, list[np.ndarray]]:
    """A row store whose rows of frames 0..frames-1 hold distinct random rows (claimed, as a decoder does)."""
    import pycuda.driver as cuda

    from streamer.gpu.rows import RowStore

    store = RowStore(ctx, (H, W), DEPTH)  # type: ignore[arg-type]
    rng = np.random.default_rng(frames)
    rows = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(frames)]
    for i, row in enumerate(rows):
        assert store.claim(i, lambda: False)
        cuda.memcpy_htod(store.ptr(i), row)
    return store, rows


def cuda_slot(batch: int) -> object:
    import pycuda.driver as cuda
    import pycuda.gpuarray as gpuarray

    from streamer.executors.contract import CudaSlot

    return CudaSlot(0, cuda.pagelocked_zeros((batch, H, W, 3), np.uint8), np.zeros((batch, 2), np.float32),
                    device_input=gpuarray.zeros((batch, H, W, 3), np.uint8),
                    device_output=gpuarray.zeros((batch, 2), np.float32), stream=cuda.Stream(),
                    event=cuda.Event())


def test_a_mixed_batch_gathers_its_gpu_rows_and_uploads_its_host_rows(ctx: object) -> None:
    from streamer.gpu.rows import DeviceRow

    store, rows = store_with_frames(ctx, 4)
    slot = cuda_slot(6)
    frames = [DeviceRow(store, i, (1080, 1920, 3)) for i in range(4)]  # type: ignore[arg-type]
    host = {0: np.full((H, W, 3), 7, np.uint8), 2: np.full((H, W, 3), 9, np.uint8)}
    writer = frames[0].row_writer(slot)
    placed = {1: 2, 3: 0, 4: 3, 5: 1}  # slot row → frame
    for row, frame in placed.items():
        writer.add(frames[frame], row)
    for row, image in host.items():
        slot.host_input[row] = image  # type: ignore[attr-defined]
    writer.finish(sorted(host))
    assert slot.input_on_device  # type: ignore[attr-defined]
    slot.event.record(slot.stream)  # type: ignore[attr-defined]  # as the executor's submit does
    writer.submitted()
    got = slot.device_input.get()  # type: ignore[attr-defined]
    for row, frame in placed.items():
        assert np.array_equal(got[row], rows[frame]), f"slot row {row} is not frame {frame}'s row"
    for row, image in host.items():
        assert np.array_equal(got[row], image), f"host row {row} did not go up"
    # submitted: every row is free for the frame DEPTH later (its claim waits on the batch's event)
    for i in range(4):
        assert store.claim(i + DEPTH, lambda: False)


def test_a_host_slot_gets_each_row_copied_down_at_once(ctx: object) -> None:
    from streamer.executors.contract import Slot
    from streamer.gpu.rows import DeviceRow

    store, rows = store_with_frames(ctx, 2)
    slot = Slot(0, np.zeros((2, H, W, 3), np.uint8), np.zeros((2, 2), np.float32))
    writer = DeviceRow(store, 0, (1080, 1920, 3)).row_writer(slot)  # type: ignore[arg-type]
    for i in (1, 0):
        writer.add(DeviceRow(store, i, (1080, 1920, 3)), 1 - i)  # type: ignore[arg-type]
    assert np.array_equal(slot.host_input[0], rows[1]) and np.array_equal(slot.host_input[1], rows[0])
    writer.finish([])
    writer.submitted()
    for i in range(2):
        assert store.claim(i + DEPTH, lambda: False)  # let go at once: nothing on the device reads them


def test_rows_of_another_size_than_the_batch_are_refused_without_a_picture(ctx: object) -> None:
    from streamer.gpu.rows import DeviceRow, RowStore

    store = RowStore(ctx, (H + 1, W), DEPTH)  # type: ignore[arg-type]
    assert store.claim(0, lambda: False)
    writer = DeviceRow(store, 0, (1080, 1920, 3)).row_writer(cuda_slot(1))
    with pytest.raises(ValueError, match="configure the rows for the model"):
        writer.add(DeviceRow(store, 0, (1080, 1920, 3)), 0)
