"""Sub-commands of the ``spineseg`` CLI, one module each.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. The CLI discovers them, so adding a command is adding a
module. Heavy imports (torch) go inside ``run`` to keep ``--help`` fast.
"""
