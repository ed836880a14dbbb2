"""Runs a package's unittest suite as its own runner does and writes every test's outcome, for
scripts/realworld to compare an untraced and a traced run test by test.

Usage: unittest_outcomes.py OUTCOMES.json MODULE [START]

Discovers the tests of MODULE's directory (START, default MODULE) the way `python -m MODULE` does
for llvmlite (unittest's loader over the package), runs them with unittest's text runner and exits
0 when the run was successful, 1 when not. OUTCOMES.json maps each test id to passed, failed,
error, skipped, xfailed or xpassed.
"""
import importlib
import json
import sys
import unittest

out, module = sys.argv[1], sys.argv[2]
start = sys.argv[3] if len(sys.argv) > 3 else module
importlib.import_module(module)  # the package's own set-up (llvmlite.tests enables faulthandler)
outcomes = {}


class Recording(unittest.TextTestResult):
    def addSuccess(self, test):
        super().addSuccess(test)
        outcomes.setdefault(test.id(), "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        outcomes[test.id()] = "failed"

    def addError(self, test, err):
        super().addError(test, err)
        outcomes[test.id()] = "error"

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        outcomes[test.id()] = "skipped"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        outcomes[test.id()] = "xfailed"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        outcomes[test.id()] = "xpassed"

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            outcomes[subtest.id()] = "failed" if failed else "error"


suite = unittest.TestLoader().discover(start)
result = unittest.TextTestRunner(resultclass=Recording, verbosity=1).run(suite)
with open(out, "w") as f:
    json.dump(outcomes, f, indent=0, sort_keys=True)
sys.exit(0 if result.wasSuccessful() else 1)
