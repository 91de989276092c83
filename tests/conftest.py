"""Test-session setup: simulation invariants (llmsim/invariants.py) are checked after every
``llmsim.simulate`` call in the tests, unless the caller already set LLMSIM_CHECK_INVARIANTS
(``LLMSIM_CHECK_INVARIANTS=0 pytest`` turns them off, e.g. to time a run)."""
import os

os.environ.setdefault("LLMSIM_CHECK_INVARIANTS", "1")


def pytest_report_header(config):
    import llmsim
    return f"llmsim build: {llmsim.BUILD} (see llmsim/_compiled.py)"
