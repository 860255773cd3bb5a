"""Test-wide setup: 8 simulated CPU devices (set before JAX is imported) so that 1-device vs
8-device parity runs in one process; tests that want one device build a 1-device mesh."""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
