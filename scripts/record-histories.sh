#!/usr/bin/env bash
# Re-record the workflow histories replayed by tests/integration/test_replay.py.
# Run after a deliberate, versioned change to workflows/ (use workflow.patched for
# changes that running workflows must survive), then commit tests/data/histories/.
set -euo pipefail
cd "$(dirname "$0")/.."
CLARION_RECORD_HISTORIES=1 .venv/bin/python -m pytest -q -p no:randomly \
  tests/integration/test_replay.py::test_record_histories \
  "tests/integration/test_crisis.py::test_tiers_go_in_order_and_consent_is_respected" \
  tests/integration/test_example_journeys.py \
  tests/integration/test_compliance_timers.py::test_marketing_text_in_quiet_hours_waits_for_the_morning_there \
  tests/integration/test_erasure.py::test_erasure_mid_journey \
  tests/integration/test_alerts.py::test_flapping_alert_sends_nothing \
  tests/integration/test_alerts.py::test_sustained_alert_one_proposal_then_launch_and_resolution \
  tests/integration/test_webhooks.py::test_a_failed_sms_falls_back_to_the_next_channel
ls -l tests/data/histories/
