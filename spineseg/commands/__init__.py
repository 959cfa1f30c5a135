"""Sub-commands of the ``spineseg`` CLI, one module each.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. The CLI discovers them, so adding a command is adding a
module; a module without ``NAME`` (``training_args``) holds what several share.
The modules only parse arguments, call the library and print. Heavy imports (torch) go inside ``run`` to keep ``--help`` fast.
"""
