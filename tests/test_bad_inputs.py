"""Bad inputs for every public function (the table in tests/bad_inputs.py): each raises a
ValueError or TypeError at trace time whose message names the argument, the expectation and
the received value; docs/errors.md renders the table and must be current. Also the labels checks
found by the property battery: negative class ids, a mask where labels are required."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from bad_inputs import ERRORS_MD, all_cases, covered_functions, render
from registry import PENDING, public_functions

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.fn}:{c.what}" for c in CASES])
def test_bad_input_raises_a_clear_error(case):
    with pytest.raises(case.exc) as info:
        case.call()
    msg = str(info.value)
    assert re.search(case.pattern, msg), f"{case.fn} with {case.what}: message does not match {case.pattern!r}:\n{msg}"
    # "fn: `arg` must be ...; got ..." -- the function, the argument, the expectation, what came
    assert re.match(r"^[\w.\[\]]+: .*`[^`]+`", msg), f"{case.fn}: message must start with the function and name the argument: {msg}"
    assert "got" in msg or "given" in msg, f"{case.fn}: message must say what was received: {msg}"


def test_every_public_function_has_bad_input_cases():
    missing = sorted(set(public_functions()) - PENDING - covered_functions())
    assert not missing, f"public functions without a bad-input case in tests/bad_inputs.py: {missing}"


def test_errors_page_is_current():
    expected = render()
    current = ERRORS_MD.read_text() if ERRORS_MD.exists() else ""
    assert current == expected, "docs/errors.md is out of date: run `python tests/bad_inputs.py`"


# ----------------------------------------------------------------------------- labels checks found by the battery
# Regression tests for library fixes found by the property battery (tests/test_battery.py).
X = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32).at[2].set(0.0)
Y = jnp.array([0, 0, 1, 1, 2, 2])


def test_negative_class_ids_are_rejected():
    with pytest.raises(ValueError, match="`labels` must be non-negative class ids.*-1"):
        jm.contrastive_loss(X, Y.at[0].set(-1))
    jm.contrastive_loss(X, Y.astype(bool))  # bool class ids stay valid
    jax.jit(jm.contrastive_loss)(X, Y.at[0].set(-1))  # traced: shapes only


def test_labels_slot_rejects_a_mask_where_labels_are_required():
    with pytest.raises(TypeError, match="takes labels, not a mask"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, X, jm.pair_mask(Y), jm.init_cross_batch_memory(8, 4))
