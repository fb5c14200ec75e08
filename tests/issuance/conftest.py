"""Fixtures for the issuance tests: the session stack and API (tests/conftest.py), a sandbox bank
of their own (the wallet tests' fixture, so knob changes here never reach those tests), and a
Redis key prefix per test so streams left by one test never feed another."""

from __future__ import annotations

import uuid

import pytest

from kernel.settings import Settings
from tests.conftest import Stack
from tests.issuance.helpers import bank_settings
from tests.wallet.conftest import RunningBank
from tests.wallet.conftest import admin as admin  # the wallet tests' fixture, reused
from tests.wallet.conftest import bank as bank  # the wallet tests' fixture, reused


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(stack: Stack, bank: RunningBank) -> Settings:
    return bank_settings(stack.settings, bank)
