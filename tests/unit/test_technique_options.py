"""The registry of techniques and their own options: found without an edit elsewhere, cheap to import, each option
checked with one clear error, counted in the config hash only where a technique has options."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from support import RAW_RUN_CONFIG, composed_method

from bench.config import ConfigError, MethodConfig, RunConfig
from bench.techniques import NAMES, TECHNIQUES, report_order, technique

RAW = RAW_RUN_CONFIG
CPU = {"device": "cpu", "weights_dtype": "bf16", "compute_dtype": "bf16"}
FIRST_TEN = ("full", "lora", "qlora", "dora", "rslora", "pissa", "olora", "loftq", "qalora", "longlora")


def test_the_first_ten_keep_their_order_and_new_ones_follow_their_parent() -> None:
    assert NAMES[:10] == FIRST_TEN
    order = report_order()
    for name in NAMES:
        parent = TECHNIQUES[name].parent
        if parent is not None:  # listed after its parent, before the next main technique
            assert order.index(parent) < order.index(name)
    assert sorted(order) == sorted(NAMES)
    with pytest.raises(KeyError, match="valid: full, lora, qlora"):
        technique("adapterx")


def test_the_registry_imports_no_torch_and_no_peft() -> None:
    """The report (which never imports torch) and `bench --help` read it."""
    code = ("import sys, bench.techniques; "
            "print(sorted(m for m in ('torch', 'peft', 'hqq', 'bitsandbytes', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("options", "needles"), [
    ({"lr_ratio": 0}, ("method.options.lr_ratio=0", "> 0")),
    ({"lr_ratio": "big"}, ("method.options.lr_ratio='big' is not valid; it must be a float", "lr_ratio (float")),
    ({"lr_ratio": True}, ("method.options.lr_ratio=True", "float")),
    ({"ratio": 8}, ("method=loraplus has no option method.options.ratio", "lr_ratio (float > 0, default 16)")),
])
def test_a_bad_option_is_one_clear_error(options: dict, needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as error:
        MethodConfig(name="loraplus", options=options)
    message = str(error.value)
    assert "\n" not in message and all(needle in message for needle in needles), message


def test_a_technique_without_options_refuses_any() -> None:
    with pytest.raises(ConfigError, match=r"method=lora has no option method\.options\.lr_ratio; its options: none"):
        MethodConfig(name="lora", options={"lr_ratio": 8})


def test_options_get_their_defaults_and_count_in_the_hash_only_where_declared() -> None:
    assert MethodConfig(name="loraplus").options == {"lr_ratio": 16}
    assert MethodConfig(name="loraplus", options={"lr_ratio": 8}).options == {"lr_ratio": 8}
    lora = RunConfig.from_dict(RAW)
    assert "method.options" not in lora.flat() and "options" not in lora.effective()["method"]
    plus = RunConfig.from_dict({**RAW, "method": {"name": "loraplus"}})
    assert plus.flat()["method.options.lr_ratio"] == 16
    steeper = dataclasses.replace(plus, method=MethodConfig(name="loraplus", options={"lr_ratio": 4}))
    assert steeper.hash(CPU) != plus.hash(CPU)


def test_the_command_line_sets_an_option_without_a_plus() -> None:
    assert composed_method("loraplus", "method.options.lr_ratio=8").options == {"lr_ratio": 8}
    assert composed_method("vera", "method.options.d_initial=0.2").options["d_initial"] == 0.2


def test_a_peft_method_is_checked_against_peft() -> None:
    method = MethodConfig(name="peft", options={"peft_type": "loha", "r": 4, "alpha": 8})
    assert method.options == {"peft_type": "LOHA", "r": 4, "alpha": 8} and method.title == "peft-loha"
    assert method.rank is None  # its rank is an option, not method.r
    cases = [({}, "method=peft needs method.options.peft_type"),
             ({"peft_type": "LORAX"}, "method.options.peft_type='LORAX' is not a peft method; choose one of:"),
             ({"peft_type": "IA3", "r": 4}, "method.options.r is not an option of peft's IA3Config; valid:"),
             ({"peft_type": "LOHA", "target_modules": ["query"]}, "method.options.target_modules is set by bench"),
             ({"peft_type": "LOHA", "r": "four"}, "method.options.r='four' is not valid for peft's LoHaConfig: it "
                                                  "must be an int"),
             ({"peft_type": "BOFT", "boft_block_size": 3, "boft_block_num": 2},
              "method.options for peft's BOFTConfig are not valid:")]
    for options, needle in cases:
        with pytest.raises(ConfigError) as error:
            MethodConfig(name="peft", options=options)
        assert needle in str(error.value) and "\n" not in str(error.value), str(error.value)
