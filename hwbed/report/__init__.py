"""The study's views of a result store: tables, plots and one HTML page.

Each view is a function of the cells frame (:func:`hwbed.report.frame.cells`, one row per
cell of :func:`hwbed.store.load`) that returns a DataFrame or a matplotlib figure:
:mod:`~hwbed.report.tables` (on-device vs float, worst case, gradient masking),
:mod:`~hwbed.report.cost`, :mod:`~hwbed.report.study` (the study's table shapes),
:mod:`~hwbed.report.curves` (PGD), :mod:`~hwbed.report.stress` (stress–strain and the
strong/ductile/brittle rule), :mod:`~hwbed.report.boxplots`, :mod:`~hwbed.report.cam`,
:mod:`~hwbed.report.pareto` (robustness vs cost). :mod:`~hwbed.report.page` writes the page,
:mod:`~hwbed.report.run` all of it (``python -m hwbed.report``).
"""
