"""Model cache: one load under concurrency, LRU eviction under a budget, release, leases; bytes and
budgets per device (host, each GPU, disk)."""

import threading
from collections import OrderedDict

import pytest
import torch
from torch import nn

from neurotrace.lab.errors import NotFound, OverBudget
from neurotrace.lab.model.weights import cache as cache_module
from neurotrace.lab.model.weights.cache import ModelCache, parse_bytes, parse_device_bytes
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.model.weights.placement import compact, device_bytes, layer_placement, plan_admission
from neurotrace.testing.errors import raises_lab_error


def test_concurrent_requests_for_the_same_model_load_it_once(tiny_gpt2):
    cache = ModelCache()
    ref = ModelRef(model=str(tiny_gpt2))
    barrier = threading.Barrier(6)
    got = []

    def worker():
        barrier.wait()
        got.append(cache.get(ref))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in got}) == 1
    assert list(cache.load_count.values()) == [1]


def test_least_recently_used_model_is_evicted_under_the_budget(tiny_gpt2, tiny_llama, tiny_bert):
    probe = ModelCache()
    sizes = [probe.get(ModelRef(model=str(p))).nbytes for p in (tiny_gpt2, tiny_llama, tiny_bert)]
    cache = ModelCache(budget_bytes=sizes[0] + sizes[1] + 1)
    a, b, c = (ModelRef(model=str(p)) for p in (tiny_gpt2, tiny_llama, tiny_bert))
    cache.get(a)
    cache.get(b)
    cache.get(a)  # a is now most recent
    cache.get(c)
    loaded = {m["model"] for m in cache.listing()}
    assert str(tiny_gpt2) in loaded and str(tiny_llama) not in loaded
    assert cache.used_bytes() <= cache.budget_bytes


def test_a_model_larger_than_the_budget_is_refused(tiny_gpt2):
    cache = ModelCache(budget_bytes=1000)
    with pytest.raises(OverBudget) as err:
        cache.get(ModelRef(model=str(tiny_gpt2)))
    assert err.value.field == "model" and "budget" in err.value.fix
    assert cache.listing() == []


def test_leased_models_are_not_evicted(tiny_gpt2, tiny_llama):
    probe = ModelCache()
    sizes = [probe.get(ModelRef(model=str(p))).nbytes for p in (tiny_gpt2, tiny_llama)]
    cache = ModelCache(budget_bytes=max(sizes) + 10)
    assert sum(sizes) > cache.budget_bytes
    with cache.lease(ModelRef(model=str(tiny_gpt2))):
        with pytest.raises(OverBudget):
            cache.get(ModelRef(model=str(tiny_llama)))
    cache.get(ModelRef(model=str(tiny_llama)))  # after the lease, eviction makes room


def test_release_unloads_and_unknown_release_is_not_found(tiny_gpt2):
    cache = ModelCache()
    cache.get(ModelRef(model=str(tiny_gpt2)))
    assert cache.release(str(tiny_gpt2))
    assert cache.listing() == []
    with raises_lab_error(NotFound):
        cache.release("never-loaded")


def test_budget_strings_parse():
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("") is None and parse_bytes(None) is None


# -- per-device accounting (fake device maps: no GPU needed) --------------------------------------------


class _Mapped(nn.Module):
    """A model shaped like a device-mapped LM: embed, blocks.{0,1,2}, head, with an hf_device_map."""

    def __init__(self, device_map: dict[str, int | str]) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4, bias=False)                          # 64 bytes
        self.blocks = nn.ModuleList([nn.Linear(4, 8, bias=False) for _ in range(3)])  # 128 bytes each
        self.head = nn.Linear(4, 2, bias=False)                           # 32 bytes
        self.blocks[2].to("meta")                                         # offloaded weights hold no memory
        self.hf_device_map = device_map


def test_bytes_per_device_follow_the_device_map_and_offloaded_weights_count_on_disk():
    model = _Mapped({"embed": 0, "blocks.0": 0, "blocks.1": "cpu", "blocks.2": "disk", "head": 1})
    assert device_bytes(model) == {"cuda:0": 64 + 128, "cpu": 128, "disk": 128, "cuda:1": 32}
    assert layer_placement(model, "blocks", 3) == {"cuda:0": "0", "cpu": "1", "disk": "2"}
    whole = _Mapped({"": "cpu"})
    whole.blocks[2].to_empty(device="cpu")
    assert device_bytes(whole) == {"cpu": 64 + 3 * 128 + 32}


def test_layer_ranges_are_compact():
    assert compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert compact([3]) == "3" and compact([]) == ""


def test_a_new_model_evicts_the_least_recent_model_holding_bytes_on_the_device_it_needs():
    loaded = OrderedDict([("a", {"cuda:0": 6}), ("b", {"cuda:0": 3, "cpu": 2}), ("c", {"cpu": 5})])
    budgets = {"cpu": 10, "cuda:0": 10, "cuda:1": 10}
    assert plan_admission("new", {"cuda:0": 5}, loaded, set(), budgets) == ["a"]
    assert plan_admission("new", {"cuda:1": 10, "disk": 10**12}, loaded, set(), budgets) == []
    assert plan_admission("new", {"cpu": 8}, loaded, set(), {**budgets, "cpu": None}) == []
    assert plan_admission("new", {"cpu": 6}, loaded, set(), budgets) == ["b", "c"]


def test_a_device_without_room_is_refused_naming_the_device_and_the_fix():
    loaded = OrderedDict([("a", {"cuda:0": 6}), ("b", {"cuda:0": 3})])
    budgets = {"cpu": None, "cuda:0": 10, "cuda:1": 10}
    with raises_lab_error(OverBudget, match="cuda:0") as err:
        plan_admission("big", {"cuda:0": 5}, loaded, {"a"}, budgets)
    assert "release_model" in err.value.fix and "NEUROTRACE_GPU_MEMORY_BUDGET" in err.value.fix
    with raises_lab_error(OverBudget, match="cuda:1") as err:
        plan_admission("huge", {"cuda:1": 11}, loaded, set(), budgets)
    assert "whole memory budget" in str(err.value) and "device='auto'" in err.value.fix


def test_the_cache_evicts_and_refuses_per_device(tiny_gpt2, tiny_llama, tiny_bert, monkeypatch):
    fake = {str(tiny_gpt2): {"cuda:0": 600}, str(tiny_llama): {"cuda:1": 600}, str(tiny_bert): {"cuda:0": 500}}
    monkeypatch.setattr(cache_module, "device_bytes", lambda model: fake[model.name_or_path])
    monkeypatch.setattr(cache_module, "gpu_budgets", lambda configured: {"cuda:0": 1000, "cuda:1": 1000})
    cache = ModelCache()
    a, b, c = (ModelRef(model=str(p)) for p in (tiny_gpt2, tiny_llama, tiny_bert))
    cache.get(a)
    cache.get(b)
    assert cache.used_by_device() == {"cuda:0": 600, "cuda:1": 600}
    cache.get(c)                                 # evicts a (cuda:0), keeps b (cuda:1)
    assert {m["model"] for m in cache.listing()} == {str(tiny_llama), str(tiny_bert)}
    with cache.lease(c):
        with raises_lab_error(OverBudget, match="on cuda:0"):
            cache.get(a)
    assert {m["model"] for m in cache.listing()} == {str(tiny_llama), str(tiny_bert)}


def test_auto_placement_gets_what_each_device_budget_leaves(tiny_gpt2, monkeypatch):
    monkeypatch.setattr(cache_module, "device_bytes", lambda model: {"cuda:0": 300, "cpu": 50})
    monkeypatch.setattr(cache_module, "gpu_budgets", lambda configured: {"cuda:0": 1000})
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (900, 2000))
    cache = ModelCache(budget_bytes=400)
    cache.get(ModelRef(model=str(tiny_gpt2)))
    assert cache.max_memory() == {0: 700, "cpu": 350}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (500, 2000))
    assert cache.max_memory()[0] == 450         # 90% of what is free now, when that is less


def test_gpu_budgets_parse_for_every_gpu_or_per_device():
    assert parse_device_bytes("20GiB") == {"cuda": 20 * 2**30}
    assert parse_device_bytes("cuda:0=1GiB, cuda:1=2GiB") == {"cuda:0": 2**30, "cuda:1": 2 * 2**30}
    assert parse_device_bytes("") is None
