"""Run by tests/test_contract.py in a process of its own with 8 CPU devices
(the suite's processes have 4): every family trains on 8 devices as two
groups of four that split the state (mesh.fsdp=4), as it does on one device.
Exits non-zero with the first difference. What is checked is the split of the
state and the batch, not the network: a family on the U-Net takes its
transformer here (the 4-device test trains the U-Net split in two)."""
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # test_contract imports conftest, which imports tests.flags
from flags import ONE_DEVICE  # pylint: disable=g-import-not-at-top,wrong-import-position

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8 ' + ONE_DEVICE
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from test_contract import FAMILIES, assert_same_training, build, run_steps  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  devices = jax.devices('cpu')
  assert len(devices) == 8, devices
  for name in sys.argv[1:] or FAMILIES:
    _, data, family = build(name, no_dropout=True, transformer=True)
    _, one, m1, _ = run_steps(family, data, devices[:1])
    _, split, m8, _ = run_steps(family, data, devices, fsdp=4)
    assert_same_training(m1, one, m8, split)
    print(f'{name}: 8 devices as 2 groups of 4 train as 1', flush=True)


if __name__ == '__main__':
  main()
