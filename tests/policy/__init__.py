"""Tests of the Rego policies, the policy engines and the governance gate."""
