"""Ablation of the Alternator's supervised decoding on the paper's Lorenz-spikes task (issue 15).

One instance (``seed``), one training mode of ``fit(model, x, z_train=z, supervised=MODE)``
(``auto``, ``free-running`` or ``teacher-forcing``), optional Alternator settings; prints the
held-out R^2 per coordinate of the mean of 20 ``infer_latents`` draws (also from step 30 on,
without the cold start), 90% coverage, and the training seconds.

    python -m benchmarks.decoding_ablation SEED MODE ["{'model': {'alpha': 0.9}, 'epochs': 300}"]
    python -m benchmarks.decoding_ablation 0 teacher-forcing "{'method': 'smc'}"  # needs SMC
"""

from __future__ import annotations

import ast
import sys
import time

import numpy as np
import torch

from alternators_ppl.data.paper_spikes import paper_spikes_task
from alternators_ppl.inference import fit
from alternators_ppl.models import Alternator


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    seed, mode = int(argv[0]), argv[1]
    options = ast.literal_eval(argv[2]) if len(argv) > 2 else {}
    task = paper_spikes_task(seed)
    torch.manual_seed(seed)
    model = Alternator(task.obs_dim, 3, **options.pop("model", {}))
    method = options.pop("method", None)  # "smc": infer_latents(method="smc") (main's SMC)
    infer = {} if method is None else {"method": method, "num_particles": 256}
    tic = time.perf_counter()
    history = fit(model, task.x_train, z_train=task.z_train, seed=seed, progress=False,
                  supervised=mode, **options)  # fmt: skip
    seconds = time.perf_counter() - tic
    draws = model.infer_latents(task.x_test, num_samples=20, **infer)[:, 0, 1:].numpy()
    truth, mean = task.z_test[0], draws.mean(0)

    def r2(a, b):
        return 1 - ((a - b) ** 2).sum(0) / ((b - b.mean(0)) ** 2).sum(0)

    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    print(seed, mode, argv[2:], "R2", np.round(r2(mean, truth), 3),
          "R2(t>=30)", np.round(r2(mean[30:], truth[30:]), 3),
          "cov90", np.round(((truth >= lo) & (truth <= hi)).mean(0), 2),
          "alpha", getattr(history, "alpha", model.alpha_values[0]),
          "best", history.best_epoch, "s", round(seconds, 1), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
