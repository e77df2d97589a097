"""Studies over many runs or models: `hftl compare` (strategies x models), baselines, `hftl probe`, `hftl search`,
`hftl demo`, and their reports.

The Python faces are `hftl.compare`, `hftl.probe` and `hftl.search`; this package re-exports nothing, so
its modules never shadow them.
"""
