"""Conformance checks: load the catalogue's plugin (harness fixture, forensics, matrix)."""


def pytest_configure(config):
    config.pluginmanager.import_plugin("proxysuite.conformance.plugin")
