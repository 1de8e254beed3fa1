"""training/train_latent.py under FSDP2 and on two "machines": the real `accelerate launch` code paths on CPU (gloo),
compared with a single-node two-process DDP run of the same seed.

accelerate only enables FSDP on GPU-like devices, so the FSDP runs go through `python -m diffit_hf.training.cpu_fsdp`
(accelerate's own FSDP2 prepare/save_state/load_state, marked usable on CPU); the multi-node runs are plain
`accelerate launch --num_machines 2` processes on loopback.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffit_hf.training.checkpoints import latest_checkpoint

from ..tiny import weights
from .conftest import DISTRIBUTED_STEPS as STEPS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "training/train_latent.py"
PARTS = ("checkpoints/checkpoint-0000004/transformer", "checkpoints/checkpoint-0000004/transformer_ema",
         "checkpoints/checkpoint-0000008/transformer", "checkpoints/checkpoint-0000008/transformer_ema",
         "transformer")  # the last: the exported pipeline's (EMA) weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **popen) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    log = proc.communicate(timeout=timeout)[0].decode()
    assert proc.returncode == 0, log[-4000:]
    return log


def accelerate_fsdp(args: list[str], reshard_after_forward: bool = True, **popen) -> subprocess.Popen:
    """`accelerate launch --use_fsdp --fsdp_version 2` with two processes, as on a GPU node."""
    return run([sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
                "--fsdp_reshard_after_forward", str(reshard_after_forward).lower(), "--num_processes", "2",
                "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
                "--dynamo_backend", "no", "-m", "diffit_hf.training.cpu_fsdp", SCRIPT, *args], **popen)


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    for part in PARTS:
        wa, wb = weights(a / part), weights(b / part)
        assert wa.keys() == wb.keys(), part
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=atol, msg=f"{part} {key}")


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and every process under it (torchrun's workers run in sessions of their own)."""
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.communicate(timeout=60)
    psutil.wait_procs(procs, timeout=30)


def test_fsdp_matches_ddp_and_resumes_exactly_after_a_kill(ddp_run, cli, cache, tmp_path):
    # SHARD_GRAD_OP (parameters stay gathered from forward to backward), SIGKILLed after its first checkpoint
    out = tmp_path / "fsdp"
    killed = accelerate_fsdp(cli(cache, out, **STEPS), reshard_after_forward=False)
    deadline = time.time() + 240
    while latest_checkpoint(out / "checkpoints") is None and killed.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    kill_tree(killed)
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None and ckpt.name == "checkpoint-0000004", killed.stdout
    assert not (out / "transformer").exists()  # it did not finish
    assert sorted(p.name for p in (ckpt / "pytorch_model_fsdp_0").glob("*.distcp")) == ["__0_0.distcp",
                                                                                      "__1_0.distcp"]
    assert (ckpt / "optimizer_0" / ".metadata").is_file()  # accelerate's sharded state, one file per rank
    assert not (ckpt / "model.safetensors").exists()  # the full weights are the save_pretrained folders only

    # resumed with FULL_SHARD (parameters resharded after forward) and gradient checkpointing from the sharded state
    log = finish(accelerate_fsdp(cli(cache, out, resume_from_checkpoint="latest", gradient_checkpointing=True,
                                     **STEPS)))
    assert "resumed from" in log and "checkpoint-0000004" in log
    result = json.loads((out / "train_results.json").read_text())
    assert result["num_processes"] == 2 and len(set(result["rank_weight_checksums"])) == 1
    # Same seed and data as the DDP run: FSDP's reduce-scatter and DDP's all-reduce average the same two
    # gradients (a + b and the halving are exact in any order on two ranks), so the weights and the EMA before
    # the kill and after the resume are bit-identical. An inexact resume (optimiser moments, EMA, step counter,
    # RNG, data position) moves them by ~lr = 1e-3.
    assert_same_weights(out, ddp_run)


def test_two_machines_on_loopback_match_one_node(ddp_run, cli, cache, tmp_path):
    out, port = tmp_path / "nodes", free_port()
    machines = [run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
                     "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                     "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", SCRIPT,
                     *cli(cache, out, **STEPS)]) for rank in (0, 1)]
    logs = [finish(proc) for proc in machines]
    # machine 1 ran its own rank (its local main process shows progress) in lockstep with machine 0
    assert "8/8" in logs[1] and "saved the pipeline" not in logs[1] and "saved the pipeline" in logs[0]
    result = json.loads((out / "train_results.json").read_text())
    assert result["num_processes"] == 2 and len(set(result["rank_weight_checksums"])) == 1
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-0000008").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    assert_same_weights(out, ddp_run)  # the same ranks, data shards and all-reduce as one node: bit-identical
