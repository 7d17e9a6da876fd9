"""`make bench`: fluxion measured side by side with its plain alternatives.

Every figure comes from this run, each one paired with its alternative
measured in the same run (a bare Redis lock, exclusive DuckDB ingest with
nobody around, PostgreSQL on the same data) and reported as a ratio. The
entry point is `python -m bench.run [--quick]`; results go to
`bench/results/` (report.md, results.json, PNG plots).
"""
