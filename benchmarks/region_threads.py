"""Region networks on a CPU: one process on every core against several processes of one
thread each, training at the same time, as the table's region step could run them.

    cd benchmarks && python region_threads.py --regions A B C --steps 60

Each worker trains a RegionNet of the preset's width (``--preset``, default rsna100: filters,
dense units, crop size of each region, batch size) with ``model.fit`` on random crops for
``--steps`` steps after ``--warmup`` steps (tracing); the workers of a mode start their timed
steps together. Modes: ``1x`` one process with TensorFlow's default threads; ``Nx1`` N processes at
once, each with one intra-op and one inter-op thread. Printed per region: crops/s of the mode
(all its processes' crops over the wall time from their common start to the last one's end),
CPU s / wall s (all processes of the mode), and the speed-up of ``Nx1`` over ``1x``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from common import machine, table


def _train(region, preset, steps, warmup, threads, queue, barrier):
    """One worker: (crops, CPU seconds, start, end) of ``steps`` training steps, started
    with the other workers of its mode (``barrier``)."""
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from tf_boneage.models import RegionNet
    from tf_boneage.training import config as config_lib

    spec = config_lib.read_preset(preset)
    size = tuple(spec["regions"][region])
    section = spec["region"]
    batch = int(section.get("batch_size", 32))
    model = RegionNet(
        (*size, 1),
        head="regression",
        pool_padding="same",
        filters=tuple(section["filters"]),
        dense_units=int(section["dense_units"]),
    )
    model.compile(keras.optimizers.Adam(3e-4), "mae", jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((batch * 8, *size, 1), dtype=np.float32)
    y = rng.uniform(0, 228, (batch * 8, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(2)
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
    barrier.wait()
    cpu0, start = time.process_time(), time.time()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    queue.put((steps * batch, time.process_time() - cpu0, start, time.time()))


def _mode(region, preset, steps, warmup, workers, threads) -> dict:
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_train, args=(region, preset, steps, warmup, threads, queue, barrier))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    answers = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(a[3] for a in answers) - min(a[2] for a in answers)
    return {
        "crops/s": sum(a[0] for a in answers) / wall,
        "cpu/wall": sum(a[1] for a in answers) / wall,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="rsna100")
    parser.add_argument("--regions", nargs="+", default=["A", "B", "C"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    rows = []
    for region in args.regions:
        one = _mode(region, args.preset, args.steps, args.warmup, 1, None)
        many = _mode(region, args.preset, args.steps, args.warmup, args.workers, 1)
        rows.append(
            {
                "region": region,
                "1x crops/s": one["crops/s"],
                "1x cpu/wall": one["cpu/wall"],
                f"{args.workers}x1 crops/s": many["crops/s"],
                f"{args.workers}x1 cpu/wall": many["cpu/wall"],
                "speed-up": many["crops/s"] / one["crops/s"],
            }
        )
    print(f"machine: {machine()}; preset {args.preset}; {args.steps} steps per worker")
    print(table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
