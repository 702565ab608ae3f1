"""Marking: the lecturer's public unit tests (the fast lane) pass against the group's library."""

import xml.etree.ElementTree as ET

from coursework.marking.fixtures import require_step


def test_public_unit_tests_pass(steps, artifacts):
    """The ``public_tests`` step ran the lecturer's ``tests/`` (not the fork's) and nothing failed."""
    require_step(steps, "public_tests")
    junit = artifacts / "public_tests.xml"
    assert junit.is_file(), f"the test run wrote no JUnit report ({steps['public_tests'].get('junit')})"
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    assert counts["tests"] > 0, "the lecturer's public tests ran no test"
    assert counts["failures"] == counts["errors"] == 0, (
        f"{counts['failures']} failed and {counts['errors']} errors among {counts['tests']} public tests")
