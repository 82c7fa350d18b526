import json

import pytest

from offramp.costs.calculator import CostInputs, compute_costs, estimate_tokens, load_prices
from offramp.errors import DataError, UsageError


def test_bundled_table_has_sources_and_dates():
    prices = load_prices()
    for name in (
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "claude-haiku-4.5",
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
    ):
        row = prices["models"][name]
        assert row["source"] and row["checked"] and row["input"] >= 0 and row["output"] >= 0


def test_against_hand_computed_figures():
    prices = {"models": {"m": {"input": 0.15, "output": 0.60}}}
    inputs = CostInputs(
        messages_per_month=3_000_000,
        tokens_in=200,
        tokens_out=5,
        gpu_usd_per_hour=1.0,
        gpu_tokens_per_s=2050,
        gpu_watts=300,
        cpu_usd_per_hour=0.072,
        cpu_watts=20,
        throughput_per_s=20_000,
    )
    r = compute_costs(inputs, prices)
    api, gpu, local = r.row("m"), r.row("self-hosted LLM (GPU)"), r.row("small model (local CPU)")
    # API: 200 * 0.15/1e6 + 5 * 0.60/1e6 = 3.0e-5 + 3.0e-6 = 3.3e-5 $ per message
    assert api.usd_per_million == pytest.approx(33.0)
    assert api.usd_per_month == pytest.approx(99.0)
    # GPU: 205 tokens / 2050 tok/s = 0.1 s per message; $1/h -> 0.1/3600 $ per message = $27.78 per 1M
    assert gpu.usd_per_million == pytest.approx(1e6 * 0.1 / 3600)
    # always-on GPU: at least 730 h * $1
    assert gpu.usd_per_month == pytest.approx(730.0)
    # energy: 300 W * 0.1 s * 1e6 / 3600 = 8333.3 Wh per 1M
    assert gpu.wh_per_million == pytest.approx(8333.333, rel=1e-6)
    # local: $0.072/h / 20,000 msg/s = 1e-9 $ per message = $0.001 per 1M
    assert local.usd_per_million == pytest.approx(0.001)
    assert local.usd_per_month == pytest.approx(0.072 * 730)
    # local energy: 20 W * (1/20000) s * 1e6 / 3600 = 0.2778 Wh per 1M
    assert local.wh_per_million == pytest.approx(20 / 20000 * 1e6 / 3600)
    # GPU and CPU both billed always-on, CPU cheaper per month and per message: cheaper at any volume
    assert gpu.breakeven_messages_per_month == 0
    # break-even: 52.56 $/month / (3.3e-5 - 1e-9) $/message
    assert api.breakeven_messages_per_month == pytest.approx(52.56 / (3.3e-5 - 1e-9))


def test_token_estimate():
    assert estimate_tokens(["a" * 40, "b" * 80], prompt_tokens=100) == pytest.approx(100 + 60 / 4)
    with pytest.raises(DataError):
        estimate_tokens([])


def test_bad_inputs():
    prices = load_prices()
    with pytest.raises(UsageError, match="throughput-per-s must be greater than zero"):
        compute_costs(CostInputs(messages_per_month=1, tokens_in=1, throughput_per_s=0), prices)
    with pytest.raises(UsageError, match="unknown model"):
        compute_costs(CostInputs(messages_per_month=1, tokens_in=1), prices, ["gpt-99"])
    with pytest.raises(UsageError, match="non-negative"):
        compute_costs(CostInputs(messages_per_month=float("nan"), tokens_in=1), prices)


def test_user_price_table(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"models": {"mine": {"input": 1, "output": 2}}}))
    t = load_prices(p)
    assert "mine" in t["models"] and "local_model" in t
    p.write_text(json.dumps({"models": {"mine": {"input": -1, "output": 2}}}))
    with pytest.raises(DataError, match="non-negative number for 'input'"):
        load_prices(p)
    p.write_text("{oops")
    with pytest.raises(DataError, match="not valid JSON"):
        load_prices(p)
