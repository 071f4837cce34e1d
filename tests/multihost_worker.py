"""One process of the two-process training test (run by tests/test_training.py).

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR
Prints the per-step losses as JSON on the last line (process 0 only).
"""

import json
import os
import sys

pid, nproc, port, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // nproc}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

from memgpt_jax import run_config  # noqa: E402
from memgpt_jax.training.loop import train  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
config = run_config.load(os.path.join(root, "configs", "listops_tiny.py"), [
    "--config.data.batch_size=16", "--config.train.steps=3", "--config.train.eval_every=0",
    "--config.train.checkpoint_every=100", "--config.train.log_every=1",
])
summary = train(config, workdir, progress=False)
if jax.process_index() == 0:
    losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    print(json.dumps({"losses": losses, "processes": jax.process_count(), "devices": jax.device_count()}))
