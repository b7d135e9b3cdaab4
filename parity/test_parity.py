"""The parity test: one parametrized function over parity.cases.CASES (the one table)."""

from __future__ import annotations

import pytest

from parity.cases import CASES, Case
from parity.runner import run_case


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parity(case: Case, parity_session) -> None:
    s = parity_session
    record = None
    if s.golden is not None:
        if not s.golden.has(case):
            pytest.fail(f"{case.id}: not in golden file {s.golden.path}; record again", pytrace=False)
        record = s.golden.record(case)
    result = run_case(case, s.ctx, s.device_arg, s.dtype, record)
    s.results.append(result)
    assert result.passed, result.message()
