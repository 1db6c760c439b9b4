"""Multi-device training (``Config.GPU_COUNT > 1``): a ``tf.distribute.MirroredStrategy`` over GPU_COUNT devices.

matterport's ParallelModel split each batch over the GPUs and averaged the per-GPU losses. Here the training
model is built and compiled inside a MirroredStrategy scope; every step splits the global batch
(``IMAGES_PER_GPU x GPU_COUNT`` images, ``Config.BATCH_SIZE``) into one slice of IMAGES_PER_GPU images per
replica and runs ``TrainingModel``'s step on each slice.

Exact losses. Each loss is a mean over the elements that take part in it (positive anchors, positive ROIs...),
whose number differs between the slices. A replica therefore divides its own sum by the count summed over
all replicas (``global_count``); the replicas' partial losses then add up to the single-device loss of the
whole batch, and the optimizer's cross-replica gradient SUM is exactly the single-device gradient. The L2
term is split evenly (``1 / num_replicas`` per replica).

BatchNorm stays frozen (TRAIN_BN False: moving statistics, nothing to synchronise). With TRAIN_BN True each
replica normalises its own slice, as under matterport's ParallelModel.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf

logger = logging.getLogger(__name__)


def _devices_for(count: int) -> list[str]:
    """The first ``count`` GPUs, else ``count`` logical CPU devices (tests), else a ValueError that says why."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= count:
        return [device.name for device in gpus[:count]]
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) >= count:
        return [device.name for device in cpus[:count]]
    raise ValueError(
        f"GPU_COUNT={count} but this machine shows {len(gpus)} GPU(s) and {len(cpus)} logical CPU device(s); "
        f"set GPU_COUNT to at most {max(len(gpus), 1)} (CPU tests: tf.config.set_logical_device_configuration "
        f"before TensorFlow starts)")


def make_strategy(config: Any) -> tf.distribute.Strategy | None:
    """A MirroredStrategy over GPU_COUNT devices when GPU_COUNT > 1, else None (the default, one device)."""
    count = int(config.GPU_COUNT)
    if count <= 1:
        return None
    devices = _devices_for(count)
    if any("CPU" in name.upper() for name in devices):
        # NCCL needs GPUs; on logical CPU devices the reduction goes through one device.
        strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    else:
        strategy = tf.distribute.MirroredStrategy(devices)
    if config.TRAIN_BN:
        logger.warning("TRAIN_BN=True with GPU_COUNT=%d: each replica normalises its own %d image(s)",
                       count, config.IMAGES_PER_GPU)
    logger.info("training on %d replicas: %s (global batch %d)", count, ", ".join(devices), config.BATCH_SIZE)
    return strategy


def num_replicas() -> int:
    """Replicas taking part in the current step (1 outside a multi-device step)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """``value`` summed over the replicas of the current step (``value`` itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_count(count: tf.Tensor) -> tf.Tensor:
    """A count of participating elements over the whole global batch (no gradient flows through counts)."""
    return tf.stop_gradient(global_sum(count))


def split_batch(strategy: tf.distribute.Strategy, arrays: tuple, per_replica: int) -> Any:
    """The global batch ``arrays`` (each [B, ...]) as per-replica slices of ``per_replica`` images each."""
    expected = per_replica * strategy.num_replicas_in_sync
    for array in arrays:
        if len(array) != expected:
            raise ValueError(f"a global batch of {expected} images is needed "
                             f"({per_replica} x {strategy.num_replicas_in_sync} replicas), got {len(array)}")

    def slice_for(context: tf.distribute.ValueContext) -> tuple:
        start = context.replica_id_in_sync_group * per_replica
        return tuple(tf.convert_to_tensor(array[start:start + per_replica]) for array in arrays)

    return strategy.experimental_distribute_values_from_function(slice_for)


def first_replica(strategy: tf.distribute.Strategy, values: Any) -> Any:
    """Per-replica results that are equal on every replica (already all-reduced) -> one copy."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], values)
