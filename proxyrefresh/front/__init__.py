"""The front doors: what a person or a script runs, not what the product is.

The command line (``entry`` starts it, ``cli`` wires the commands, ``output``
prints them), the API client behind ``create --wait`` (``client``), the
follow loop of ``watch`` and the live page (``ui``, ``ui.html``). They may
import the core and both planes (lazily, per command); nothing in the core,
the fan-out core or the planes imports them.
"""
