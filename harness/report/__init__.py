"""``python -m harness report``: tables (Markdown, LaTeX, CSV) and figures from run directories alone.

- :mod:`harness.report.runs`: read and check run directories (and ``--fit`` folders), label rows
- :mod:`harness.report.align`: per-(row, column) cells over the SAME samples as the full-cache row
- :mod:`harness.report.tables`: per-suite, per-length and summary tables with their footnotes
- :mod:`harness.report.overall`: a table's overall columns (All tasks, Test tasks, cache sizes) and footnotes
- :mod:`harness.report.paper`: the paper's layouts (task ids, categories, suite order, conventions)
- :mod:`harness.report.render`: Markdown, LaTeX and CSV text of a table
- :mod:`harness.report.figures`: matplotlib figures (Agg canvas, PNG + PDF)
- :mod:`harness.report.command`: command-line arguments and the report folder
"""
