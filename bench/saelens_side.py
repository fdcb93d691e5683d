"""SAELens' own trainer on neurotrace's captured activations (run by bench/sae.py, in the throwaway venv).

This file runs under the python of the venv scripts/golden/saelens_golden.sh makes (torch 2.13.0 +
sae-lens 6.54, never the project's venv: sae-lens pins transformer-lens < 4). It reads the capture's
state array (``arrays/states/<site>.npy``, memory-mapped) and the training row indices bench/sae.py
chose, and trains ``TopKTrainingSAE`` with ``SAETrainer`` (``normalize_activations =
"expected_average_only_in"``, the same d_sae, k, batch size, steps, learning rate and schedule as ours),
then ``save_inference_model``s it into ``--out`` with ``timing.json`` (fit seconds, rows/s, SAELens'
dead-feature count). The training rows are read into memory as float32 before the clock starts (as
neurotrace's RowSource holds them); batches: a seeded permutation of them per epoch.

    python bench/saelens_side.py --states S.npy --index train.npy --d-sae 4608 --k 32 --batch 4096 \\
        --steps 300 --lr 4e-4 --out DIR
"""

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sae_lens
import torch
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig


def batches(rows: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Seeded shuffled batches of the training rows, already in memory (as neurotrace's RowSource holds them)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(rows))
        for s in range(0, len(perm) - batch + 1, batch):
            yield rows[torch.from_numpy(np.sort(perm[s:s + batch]))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--states", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--d-sae", type=int, required=True)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--lr-warm-up-steps", type=int, default=0)
    p.add_argument("--lr-decay-steps", type=int, default=0)
    p.add_argument("--dead-window", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hook", default="")
    p.add_argument("--sparse-activations", action="store_true",
                   help="SAELens' use_sparse_activations (COO activations, sparse decode); default off, as SAELens'")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    states = np.load(a.states, mmap_mode="r")
    index = np.load(a.index)
    d_in = int(states.shape[1])
    cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=a.d_sae, k=a.k, normalize_activations="expected_average_only_in",
                                use_sparse_activations=a.sparse_activations, metadata=sae_lens.saes.sae.SAEMetadata(hook_name=a.hook))
    sae = TopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(total_training_samples=a.steps * a.batch, train_batch_size_samples=a.batch,
                                   lr=a.lr, lr_end=a.lr, lr_warm_up_steps=a.lr_warm_up_steps,
                                   lr_decay_steps=a.lr_decay_steps, dead_feature_window=a.dead_window,
                                   feature_sampling_window=max(a.steps, 1), n_batches_for_norm_estimate=min(20, a.steps))
    rows = torch.from_numpy(np.asarray(states[np.sort(index)], dtype=np.float32))  # loaded before the clock starts
    trainer = SAETrainer(trainer_cfg, sae, batches(rows, a.batch, a.seed))
    t0 = time.perf_counter()
    trainer.fit()
    secs = time.perf_counter() - t0
    out = Path(a.out)
    sae.save_inference_model(out)
    (out / "timing.json").write_text(json.dumps({
        "seconds": secs, "rows_per_s": a.steps * a.batch / secs, "steps": a.steps, "batch": a.batch,
        "dead_features": int(trainer.dead_neurons.sum()), "d_sae": a.d_sae, "k": a.k, "lr": a.lr,
        "sae_lens": sae_lens.__version__, "torch": torch.__version__, "threads": a.threads,
        "sparse_activations": a.sparse_activations}, indent=1))
    print(json.dumps({"seconds": round(secs, 1), "rows_per_s": round(a.steps * a.batch / secs)}))


if __name__ == "__main__":
    main()
