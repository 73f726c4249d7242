"""perf.options: `perf run` flags and the suite's --perf-* pytest options come from one dataclass."""

import argparse

import pytest
from _pytest.config.argparsing import Parser

from proxysuite.perf import options, run
from proxysuite.perf.options import PerfOptions


def test_cli_defaults_are_the_dataclass_defaults():
    assert options.from_values(vars(run.build_parser().parse_args([]))) == PerfOptions()


def test_cli_flags_map_to_fields():
    a = run.build_parser().parse_args(["--scales", "100,1k", "--endpoints", "3", "--no-restart", "--no-teardown",
                                       "--load-rps", "0", "--load-keep-alive", "--npl-changes", "4"])
    o = options.from_values(vars(a))
    assert (o.scales, o.endpoints_per_service, o.restart_proxy, o.teardown, o.load_rps, o.load_new_connection,
            o.npl_changes) == ((100, 1000), 3, False, False, None, False, 4)


def _pytest_parse(args):
    p = Parser(_ispytest=True)  # the parser pytest itself hands to pytest_addoption
    options.add_pytest_options(p.getgroup("proxysuite-perf"))
    return options.from_values(vars(p.parse(args)))


def test_pytest_options_are_the_same_set_with_a_prefix(monkeypatch):
    monkeypatch.delenv(options.SCALES_ENV, raising=False)
    assert _pytest_parse([]) == PerfOptions()
    o = _pytest_parse(["--perf-scales", "100,5k", "--perf-first-packet-rounds", "10", "--perf-no-restart"])
    assert (o.scales, o.first_packet_rounds, o.restart_proxy) == ((100, 5000), 10, False)
    monkeypatch.setenv(options.SCALES_ENV, "20,40")
    assert _pytest_parse([]).scales == (20, 40)


def test_every_field_is_an_option_with_help():
    names = {o.field for o in options.options()}
    assert names == {f for f in PerfOptions.__dataclass_fields__}
    assert all(o.help and "default" in o.help or o.negate for o in options.options())


@pytest.mark.parametrize("bad", ["", "100,50", "3", "10,x"])
def test_bad_scales_say_how(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="increasing Service counts"):
        options.parse_scales(bad)
