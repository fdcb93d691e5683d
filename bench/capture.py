"""Corpus-capture speed: neurotrace's ``capture`` (corpus) vs the plain batched HF forward with one hook and vs
TransformerLens' ``run_with_cache`` on the bridge, same token contexts, interleaved rounds in one process.

Contenders, each over the same ``[n, context_size]`` contexts cut from the built-in corpus, ``--batch-size``
contexts per forward, states of one site copied to the CPU:

* ``capture``: the whole tool (``run_capture`` with ``corpus``): tokenization, batched forwards that stop at the
  site's layer, trace lines, states streamed to disk and concatenated into the final ``.npy``;
* ``plain``: ``model(input_ids)`` with one forward hook at the site that copies its output (every layer and the
  LM head run, as a plain loop does);
* ``plain_stop``: the same hook, raising after the copy so nothing past the site runs (the floor of any
  implementation);
* ``tl``: ``bridge.run_with_cache(batch, names_filter=[site])`` (TransformerLens 4's TransformerBridge over the
  same HF model).

Reported: tokens/s per contender (median over rounds), ``capture``'s ratio to each, and the peak resident set
growth while each ran (sampled from /proc/self/statm every 5 ms) plus the process' peak RSS.

    python bench/capture.py --model smollm2-135m-instruct --site blocks.15.hook_resid_post --tokens 8192
    python bench/capture.py --model gemma-3-270m --site blocks.6.hook_resid_post --threads 1
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from neurotrace.lab.capture import CaptureRequest, run_capture  # noqa: E402
from neurotrace.lab.capture.corpus import corpus_texts, token_contexts  # noqa: E402
from neurotrace.lab.lab import Lab, LabSettings, use_threads  # noqa: E402
from neurotrace.lab.model.access.hooks import hooked  # noqa: E402
from neurotrace.lab.model.weights.loading import ModelRef  # noqa: E402
from neurotrace.lab.progress import NULL_REPORTER  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident set size while the block runs, sampled every 5 ms."""

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


class _Stop(Exception):
    pass


@torch.no_grad()
def plain(lm, contexts, site, batch, stop: bool) -> int:
    rows = 0

    def keep(act, site):
        nonlocal rows
        rows += act.detach().to("cpu").reshape(-1, act.shape[-1]).shape[0]
        if stop:
            raise _Stop
        return None

    with hooked(lm.model, lm.adapter, {site: keep}):
        for i in range(0, contexts.shape[0], batch):
            x = contexts[i:i + batch]
            try:
                lm.model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
            except _Stop:
                pass
    return rows


@torch.no_grad()
def tl(bridge, contexts, site, batch) -> int:
    rows = 0
    for i in range(0, contexts.shape[0], batch):
        _, cache = bridge.run_with_cache(contexts[i:i + batch], names_filter=[site])
        rows += cache[site].to("cpu").reshape(-1, cache[site].shape[-1]).shape[0]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--site", default="blocks.15.hook_resid_post")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peers", default="capture,plain,plain_stop,tl")
    args = parser.parse_args()
    use_threads(args.threads)
    peers = args.peers.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSettings(runs_dir=Path(tmp) / "runs", threads=args.threads))
        ref = ModelRef(model=args.model, backend="bridge" if "tl" in peers else "hf")
        with lab.cache.lease(ref) as lm:
            contexts = token_contexts(lm.tokenizer, corpus_texts(lab, "python-docs"), args.context_size,
                                      args.tokens, seed=0)
            bridge = lm.bridge
        n_tokens = contexts.numel()
        request = CaptureRequest(model=args.model, sites=[args.site], corpus="python-docs",
                                 context_size=args.context_size, max_tokens=args.tokens, batch_size=args.batch_size,
                                 backend="hf")

        def run(name):
            if name == "capture":
                return run_capture(request, lab=lab, reporter=NULL_REPORTER).n_rows
            with lab.cache.lease(ref) as lm:
                if name == "tl":
                    return tl(bridge, contexts, args.site, args.batch_size)
                return plain(lm, contexts, args.site, args.batch_size, stop=name == "plain_stop")

        for name in peers:                                   # warm-up: loads, first-call costs
            assert run(name) == n_tokens, name
        times: dict[str, list[float]] = {p: [] for p in peers}
        growth: dict[str, int] = dict.fromkeys(peers, 0)
        for r in range(args.rounds):
            for name in (peers if r % 2 == 0 else peers[::-1]):
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    run(name)
                    times[name].append(time.perf_counter() - t0)
                growth[name] = max(growth[name], mem.growth)
    print(f"model {args.model}, site {args.site}, {n_tokens} tokens ({contexts.shape[0]} contexts x "
          f"{args.context_size}), batch {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    speed = {p: n_tokens / statistics.median(t) for p, t in times.items()}
    for name in peers:
        line = f"  {name:10s} {speed[name]:9.0f} tokens/s  (median {statistics.median(times[name]):.2f} s; " \
               f"peak RSS growth {growth[name] / 2**20:.0f} MiB)"
        if name != "capture" and "capture" in speed:
            line += f"  capture/{name} = {speed['capture'] / speed[name]:.2f}x"
        print(line)
    print(f"  process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
