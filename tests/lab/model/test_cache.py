"""Model cache: one load under concurrency, LRU eviction under a budget, release, leases."""

import threading

import pytest

from neurotrace.lab.errors import NotFound, OverBudget
from neurotrace.lab.model.cache import ModelCache, parse_bytes
from neurotrace.lab.model.loading import ModelRef
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
