"""`edgellm doctor` says whether this build can lend and borrow layers over RPC."""

from __future__ import annotations

import json

from tests.rpc.conftest import run_cli


def test_doctor_reports_rpc() -> None:
    as_json = run_cli("doctor", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["rpc"] is True  # set-up builds GGML_RPC=ON
    text = run_cli("doctor").stdout
    assert "RPC             yes: `edgellm worker`" in text and "protocol 7.0.0" in text
