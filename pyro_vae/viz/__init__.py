"""Figures: matplotlib plots (``plots``) and the standard set a run writes (``figures``).
The math never imports this wing.

May import: ``estimate`` and every wing below it.
"""
