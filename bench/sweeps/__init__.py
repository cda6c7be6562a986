"""Sweeps: a grid of attack and utility runs, each a *cell* with a stable id, run resumably.

``config`` reads and validates sweep files, ``plan`` expands them into cells, ``cells`` runs one cell
into its own directory and marks it done atomically, ``runner`` schedules cells on local processes or
on a Ray cluster, and ``layout`` names the files a sweep directory holds (read by the reports).
"""
