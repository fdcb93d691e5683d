"""Benchmark: the graph tool on gemma-3-270m with 18 random transcoders of width 8 x d_model (5,120 features
per layer, thresholds set so that ``--l0`` features fire per layer and position), one 10-20 token prompt.

Prints the wall and CPU time of the whole job (forward, backward rows, pruning, intervention checks, writing
the run), the load average before and after, the peak resident memory it added, and the job estimate the
budget check used (the bound it must stay under). ``--threads`` reaches the Lab (its own default is every
core), so ``--threads 1`` is one thread. On the quiet 2-core machine, the bar's run:

    python bench/graph.py --threads 2 --max-feature-nodes 7500 [--stages]
"""

import argparse
import os
import resource
import tempfile
import time
from collections import Counter

import torch

from neurotrace.lab.graph import GraphRequest, attribute, run, run_graph
from neurotrace.lab.jobs import job_estimate
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef

PROMPT = "The Eiffel Tower is located in the city of Paris, which is the capital of"


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_stages() -> Counter:
    """Wrap the job's stages so each one's CPU seconds add up in the returned counter (``--stages``)."""
    spent: Counter = Counter()
    for module, name in [(attribute, "backward_rows"), (attribute, "partial_influence"), (run, "real_forward"),
                         (run, "transcoder_set"), (run, "calibrate"), (run, "build_graph"), (run, "prune"),
                         (run, "scores"), (run, "predicted"), (run, "actual"), (run, "write_report")]:
        def timed(*args, _f=getattr(module, name), _name=name, **kwargs):
            start = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_name] += time.process_time() - start
        setattr(module, name, timed)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--max-feature-nodes", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", action="store_true", help="print each stage's CPU seconds")
    args = parser.parse_args()
    spent = time_stages() if args.stages else Counter()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSettings(runs_dir=f"{tmp}/runs", threads=args.threads))
        with lab.cache.lease(ModelRef(model=args.model)):       # load (and convert) outside the timing
            pass
        request = GraphRequest(model=args.model, prompt=PROMPT, max_feature_nodes=args.max_feature_nodes,
                               batch_size=args.batch_size, transcoders={"kind": "random", "l0": args.l0})
        estimate = job_estimate(request, lab)
        before, load = rss_bytes(), os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        result = run_graph(request, lab=lab)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        added = rss_bytes() - before
    print(result.summary)
    print(f"graph {args.model}: {seconds:.1f} s wall ({cpu:.1f} s CPU), peak RSS added {added / 2**20:.0f} MiB, job estimate "
          f"{estimate.bytes / 2**20:.0f} MiB ({'within' if added <= estimate.bytes else 'OVER'}), "
          f"max_feature_nodes {args.max_feature_nodes}, batch {args.batch_size}, l0 {args.l0}, "
          f"threads {args.threads}, load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    if spent:
        print("CPU seconds by stage (build_graph includes the rows and the influence, write_report the checks):")
    for name, seconds in spent.items():
        print(f"  {name:18s} {seconds:7.2f}")


if __name__ == "__main__":
    main()
