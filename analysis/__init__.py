"""Analysis of a load-test run folder: load → stats → compare → charts → report.

Reads a run folder (the data contract is `analysis.records`) and knows nothing of Locust.

    analysis.percentiles.percentiles(values, qs)  THE percentile function of the project (numpy only;
                                                  re-exported by analysis.stats)
    analysis.percentiles.PERCENTILES              (50, 75, 90, 95, 99, 99.9)
    analysis.load.load_run(run_dir, warmup_s=0)   → Run (DataFrames + run.json + slo.json)
    analysis.stats.compute_stats(run)             → RunStats (tables per region × variant × endpoint …)
    analysis.compare.compare_groups / compare_baseline / compare_runs   differences, each with its
                                                  95% interval and its own verdict
    analysis.compare.against_baseline(stats, base_stats, thresholds) → table + the gate's checks
    analysis.regression.parse_thresholds / gate   the regression gate ("p95:+10%", CI-supported)
    analysis.report.build_report(run_dir, baseline=None, warmup_s=0.0, output=None) → Path
    analysis.report.format_summary_table(run_dir) → str
"""
