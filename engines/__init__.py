"""Runtime engines (backends, bundles, restorer, router inference, adaptation, engine cache), the
degradation catalogue (degrade.py) and, in ``training/``, everything that trains (torch)."""
