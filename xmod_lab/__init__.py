"""xmod-lab: a research framework for X-MOD (Pfeiffer et al., NAACL 2022)."""

__version__ = "0.1.0"
