"""Analysis of a load-test run folder: load → stats → compare → charts → report.

Reads a run folder (see `loadtest.records` for the data contract) and knows nothing of
Locust. The one percentile function of the project is `analysis.stats.percentiles`.
"""
