"""Every public function is in the property battery's registry (tests/registry.py), or is a
documented helper, or is announced by a branch that has not merged yet (PENDING)."""
from registry import HELPERS, HOST_METRICS, LOSS_LIKE_SUFFIXES, PENDING, REGISTRY, known_names, public_functions


def test_every_public_function_is_registered():
    public = public_functions()
    pending_missing = sorted(n for n in PENDING if n not in public or n not in known_names())
    print(f"\nPENDING (allowed to be missing until their branches merge; the merger empties it): {pending_missing}")
    unknown = sorted(n for n in public if n not in known_names() and n not in PENDING)
    assert not unknown, (
        f"public functions missing from tests/registry.py: {unknown}. Add an entry (pair_entry, classifier_entry, "
        "miner_entry, multilabel_entry, metric_entry, ...) so the property battery covers them, or a HELPERS "
        "line saying why it is not a loss, miner or metric"
    )
    stale = sorted(n for n in known_names() if n not in public)
    assert not stale, f"registry names that are not public (renamed or removed?): {stale}"
    merged = sorted(n for n in PENDING if n in known_names())
    assert not merged, f"names both registered and PENDING: remove them from PENDING: {merged}"


def test_loss_like_names_are_not_helpers():
    for name in HELPERS:
        short = name.split(".")[-1]
        assert not short.endswith(LOSS_LIKE_SUFFIXES), f"{name} looks like a loss/miner/regularizer: register it, not as a helper"
    assert not set(REGISTRY) & set(HOST_METRICS)
